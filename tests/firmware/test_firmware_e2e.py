"""The firmware against the real servers: ``keybound as serve`` and ``keybound rs serve``.

The device is the MicroPython unix port under a 64 KiB heap running the
firmware as ``keybound device flash`` deploys it (``.mpy`` modules from
:func:`keybound.tools.device.flash.compile_firmware`), driven line by line by
``tests/firmware/mp_device.py``. Everything listens on 127.0.0.1; every
process and every wait has a time limit.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.firmware import MICROPYTHON, MPY_CROSS
from tests.helpers.firmware_fleet import HEAP_BYTES, Device, Fleet, edit_bundle, run_board
from tests.helpers.ports import free_udp_port
from tests.helpers.require import require

pytestmark = pytest.mark.micropython
require(MICROPYTHON.exists(), f"the MicroPython unix port is not installed ({MICROPYTHON})")
require(MPY_CROSS.exists(), f"mpy-cross is not installed ({MPY_CROSS})")


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    fleet.provision()
    fleet.start_as()
    fleet.start_rs()
    try:
        yield fleet
    finally:
        fleet.stop()


def _field(line: str, name: str) -> int:
    found = re.search(rf"\b{name}=(\d+)", line)
    assert found, (name, line)
    return int(found.group(1))


# ---- the flow -----------------------------------------------------------------------------------


def test_full_flow_on_a_64k_heap(fleet: Fleet, deployed: Path) -> None:
    """Token, context, a protected read, an RS crash, a refused scope; timing and heap."""
    bundle = fleet.device_bundle("sensor-1")
    plain_port = free_udp_port()
    fleet.start_plain(plain_port)
    device = Device(deployed, bundle, fleet.root)
    try:
        got = device.cmd("get /temp")
        assert got.startswith("RESP 2.05 "), got
        float(bytes.fromhex(got.split()[2]))  # a temperature reading
        assert "tokens=1 posts=1" in got

        refused = device.cmd("get /led")
        assert refused.startswith("RESP 4.03 "), refused
        assert b"insufficient_scope" in bytes.fromhex(refused.split()[2])

        # The RS dies without a chance to save anything and comes back.
        fleet.kill("rs")
        fleet.start_rs()
        again = device.cmd("get /temp", timeout=60)
        assert again.startswith("RESP 2.05 "), again
        print(f"\nafter the RS restart: {again}")
        restart_log = (fleet.root / "rs.log").read_text()

        oscore = device.cmd("bench 20 /temp", timeout=60)
        plain = device.cmd(f"plain 20 127.0.0.1 {plain_port} /temp", timeout=60)
        heap = device.cmd("heap")
    finally:
        device.quit()
    assert oscore.startswith("BENCH oscore 20 "), oscore
    assert plain.startswith("BENCH plain 20 "), plain
    oscore_ms = int(oscore.split()[3]) / 20 / 1000
    plain_ms = int(plain.split()[3]) / 20 / 1000
    peak = _field(heap, "peak")
    total = _field(heap, "total")
    code = sum(p.stat().st_size for p in deployed.glob("*.mpy") if p.name != "mp_device.mpy")
    print(
        f"heap: {device.ready}; {heap} (cap {HEAP_BYTES})\n"
        f"firmware .mpy total: {code} bytes\n"
        f"OSCORE GET {oscore_ms:.2f} ms, plain GET {plain_ms:.2f} ms (mean of 20)\n"
        f"RS log after restart:\n{restart_log}"
    )
    assert total <= HEAP_BYTES
    assert peak < 44_000, f"peak live heap {peak} bytes (measured about 41,300)"


def test_rs_restart_makes_the_device_start_over(fleet: Fleet, deployed: Path) -> None:
    bundle = fleet.device_bundle("sensor-2")
    device = Device(deployed, bundle, fleet.root)
    try:
        first = device.cmd("get /temp")
        assert first.startswith("RESP 2.05 "), first
        fleet.kill("rs")
        (fleet.root / "rs-state.db").unlink()  # a replaced RS: nothing survives
        fleet.start_rs()
        again = device.cmd("get /temp", timeout=60)
    finally:
        device.quit()
    assert again.startswith("RESP 2.05 "), again
    # The RS answered 4.01 without OSCORE: new token, new /authz-info.
    assert "tokens=2 posts=2" in again, again


class OscoreRelay:
    """A UDP relay between the device and the AS that records each request's Partial IV."""

    def __init__(self, target: int) -> None:
        self.target = ("127.0.0.1", target)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.bind(("127.0.0.1", 0))
        self.upstream.settimeout(0.2)
        self.client: tuple[str, int] | None = None
        self.sources: list[tuple[str, int]] = []  # of every request, in order
        self.pivs: list[bytes] = []
        self.running = True
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._up, self._down)]
        for thread in self.threads:
            thread.start()

    def _up(self) -> None:
        from aiocoap import Message

        while self.running:
            try:
                data, self.client = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.sources.append(self.client)
            option = Message.decode(data).opt.oscore
            if option:  # flags, then a Partial IV of (flags & 7) bytes (RFC 8613 §6.1)
                self.pivs.append(bytes(option[1 : 1 + (option[0] & 7)]))
            self.upstream.sendto(data, self.target)

    def _down(self) -> None:
        while self.running:
            try:
                data, _ = self.upstream.recvfrom(2048)
            except TimeoutError:
                continue
            if self.client is not None:
                self.sock.sendto(data, self.client)

    def close(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(timeout=5)
        self.sock.close()
        self.upstream.close()


def test_partial_ivs_to_the_as_never_repeat_across_sigkill(fleet: Fleet, deployed: Path) -> None:
    """RFC 8613 Appendix B.1.1 on the device: kill -9 mid-run, restart, no Partial IV twice."""
    relay = OscoreRelay(fleet.as_port)
    try:
        bundle = fleet.device_bundle("sensor-3", as_base=f"coap://127.0.0.1:{relay.port}")
        answers: list[str] = []
        for run in range(4):
            device = Device(deployed, bundle, fleet.root)
            try:
                device.send("tokens 50")
                for _ in range(5 + 7 * run):  # killed part-way through, at a different point
                    answers.append(device.read_line(30))
            finally:
                device.kill()
        device = Device(deployed, bundle, fleet.root)
        try:
            answers.append(device.cmd("token"))
            answers.append(device.cmd("get /temp"))
        finally:
            device.quit()
    finally:
        relay.close()
    assert all(a.startswith("TOKEN ") for a in answers[:-1]), answers
    assert answers[-1].startswith("RESP 2.05 "), answers[-1]
    seqs = [int.from_bytes(piv, "big") for piv in relay.pivs]
    print(f"\nPartial IVs seen by the relay ({len(seqs)}): {seqs}")
    assert len(seqs) >= sum(5 + 7 * run for run in range(4)) + 1  # + the last token request
    assert len(set(relay.pivs)) == len(relay.pivs), "a Partial IV was used twice"
    # After each kill the device resumes above everything it may have used.
    assert seqs == sorted(seqs)


# ---- a board that keeps running on its own ------------------------------------------------------


def _lines(proc: subprocess.CompletedProcess[str], prefix: str) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith(prefix)]


#: Short back-off for the tests; the firmware's defaults are 2 s doubling up to 300 s.
FAST = {"retry_ms": 5, "max_retry_ms": 20, "period_s": 1}
WIFI = {"ssid": "lab", "password": "pw"}


def test_an_access_point_that_comes_up_late(fleet: Fleet, deployed: Path) -> None:
    """The AP boots slower than the board, whose radio still connects from before a soft
    reset: "Wifi Internal Error" first, then no AP for four attempts, then joined; later
    the link drops and the board joins again."""
    bundle = edit_bundle(
        fleet.device_bundle("late-ap"), fleet.root / "late-ap-wifi.json", wifi=WIFI, **FAST
    )
    fleet.restart_as()
    scene = {**WIFI, "busy": True, "ap_after": 5, "drop_after": 2}
    proc = run_board(deployed, bundle, fleet.root / "board-late", 8, scene=scene)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    errors = _lines(proc, "error:")
    assert len(errors) == 5, out
    assert "Wifi Internal Error" in errors[0], errors
    assert "interface reset" in errors[0], errors
    assert out.index("NET active False") < out.index("NET connect lab 2"), out
    assert all("could not join lab" in e for e in errors[1:]), errors
    assert [f"({n} in a row)" in e for n, e in enumerate(errors, 1)] == [True] * 5
    assert _lines(proc, "wifi: 10.0.0.2") == ["wifi: 10.0.0.2"] * 2, out
    assert out.index("NET link lost") < out.index("NET connect lab 7"), out
    assert len(_lines(proc, "GET /temp -> 2.05")) == 3, out
    # With the default back-off the sixth attempt comes after 2 + 4 + 8 + 16 + 32 s:
    # an AP 60 s late is joined at about the same attempt as here.
    waited = sum(min(2000 << n, 300_000) for n in range(5)) / 1000
    print(f"\ndefault back-off before the sixth attempt: {waited:.0f} s\n{out}")
    assert waited >= 60


def test_forced_exceptions_do_not_stop_the_board(fleet: Fleet, deployed: Path) -> None:
    """A MemoryError (a real one: the driver allocates past the heap) and a ValueError out
    of the Wi-Fi driver, before and after the token: every later round works, one token.
    After the failed round the device talks from a new socket (names resolved again)."""
    relay = OscoreRelay(fleet.rs_port)
    bundle = edit_bundle(
        fleet.device_bundle("faulty"), fleet.root / "faulty-wifi.json", wifi=WIFI, **FAST,
        rs_uri=f"coap://127.0.0.1:{relay.port}",
    )  # fmt: skip
    fleet.restart_as()
    scene = {**WIFI, "raise_at": {"2": "MemoryError", "3": "ValueError", "7": "MemoryError"}}
    try:
        proc = run_board(deployed, bundle, fleet.root / "board-faulty", 6, scene=scene)
    finally:
        relay.close()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    errors = _lines(proc, "error:")
    assert [e.split(":")[1].strip() for e in errors] == [
        "MemoryError", "ValueError", "MemoryError",
    ], out  # fmt: skip
    assert "memory allocation failed" in errors[0], errors
    assert len(_lines(proc, "GET /temp -> 2.05")) == 3, out
    log = (fleet.root / "as.log").read_text()
    assert log.count("to faulty for") == 1, "the session outlived the exceptions"
    # round 3: /authz-info and a GET; round 4 fails; rounds 5 and 6 from a new socket
    ports = [port for _, port in relay.sources]
    assert len(ports) == 4, ports
    assert ports[0] == ports[1] != ports[2] == ports[3], (ports, out)


def test_too_many_failed_rounds_reset_the_board(deployed: Path, tmp_path: Path) -> None:
    """Past max_failures rounds in a row: machine.reset(); the unix port exits with 75."""
    bundle = tmp_path / "reset.json"
    bundle.write_text(json.dumps({
        "client_id": "reset", "as_uri": "coap://127.0.0.1:9", "rs_uri": "coap://127.0.0.1:9",
        "audience": "rs", "scope": "temp.read", "wifi": WIFI, "max_failures": 3, **FAST,
        "watchdog_s": 120,
        "as_context": {"master_secret": "00" * 16, "sender_id": "01", "recipient_id": "00"},
    }))  # fmt: skip
    proc = run_board(deployed, bundle, tmp_path / "board", 10, scene={**WIFI, "ap_after": 99})
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert len(_lines(proc, "error:")) == 3, proc.stdout
    assert _lines(proc, "reset:") == ["reset: 3 failed rounds in a row"], proc.stdout
    assert "watchdog: this port has no machine.WDT" in proc.stdout


def test_post_without_a_sensor_sends_nothing(fleet: Fleet, deployed: Path) -> None:
    """The unix port has no esp32.mcu_temperature: no reading, no request, no made-up value."""
    bundle = edit_bundle(
        fleet.device_bundle("no-sensor"), fleet.root / "no-sensor.json", method="POST", **FAST
    )
    proc = run_board(deployed, bundle, fleet.root / "board-post", 2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _lines(proc, "POST /temp: no reading") == ["POST /temp: no reading (no sensor)"] * 2
    assert not _lines(proc, "POST /temp ->"), proc.stdout
    assert "to no-sensor for" not in (fleet.root / "as.log").read_text()


def test_a_lost_state_folder_is_diagnosed_and_rekeyed(fleet: Fleet, deployed: Path) -> None:
    """Erased flash, same bundle: the Partial IVs restart at 0 and the AS refuses them as
    replays. The device says why and stops using the old keys; the AS logs the reason;
    ``keybound as client rekey`` writes a new bundle with which the same board works."""
    bundle = edit_bundle(fleet.device_bundle("erased"), fleet.root / "erased-1.json", **FAST)
    fleet.restart_as()
    board = fleet.root / "board-erased"
    first = run_board(deployed, bundle, board, 2)
    assert len(_lines(first, "GET /temp -> 2.05")) == 2, first.stdout + first.stderr
    shutil.rmtree(board / "state")  # erase_flash, then the same bundle again

    lost = run_board(deployed, bundle, board, 3)
    assert lost.returncode == 0, lost.stdout + lost.stderr
    said = _lines(lost, "error: StateLost:")
    assert len(said) == 1, lost.stdout
    assert "AS refused seq 0 as a replay (no state at boot: flash erased?)" in said[0]
    assert "keybound as client rekey erased" in said[0]
    assert len(_lines(lost, "stopped: AS refused seq 0")) == 2, lost.stdout
    assert not _lines(lost, "GET"), lost.stdout
    log = (fleet.root / "as.log").read_text()
    replay = [line for line in log.splitlines() if "OSCORE replay" in line]
    assert replay, log
    assert "client erased" in replay[0]
    assert "Partial IV 0 refused" in replay[0]
    assert "keybound as client rekey erased" in replay[0]

    rekeyed = fleet.root / "rekeyed"
    fleet.keybound(
        "as", "client", "rekey", "erased", "--db", fleet.db, "--out", str(rekeyed),
        "--rs-uri", fleet.rs_uri, "--as-base", fleet.as_base,
    )  # fmt: skip
    old, new = json.loads(bundle.read_text()), json.loads((rekeyed / "erased.json").read_text())
    assert (rekeyed / "erased.json").stat().st_mode & 0o777 == 0o600
    for key in ("master_secret", "master_salt", "sender_id"):
        assert new["as_context"][key] != old["as_context"][key], key
    again = run_board(
        deployed, edit_bundle(rekeyed / "erased.json", fleet.root / "erased-2.json", **FAST),
        board, 2,
    )  # fmt: skip
    assert len(_lines(again, "GET /temp -> 2.05")) == 2, again.stdout + again.stderr
    assert not _lines(again, "error:"), again.stdout
