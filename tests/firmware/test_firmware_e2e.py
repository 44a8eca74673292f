"""The firmware against the real servers: ``keybound as serve`` and ``keybound rs serve``.

The device is the MicroPython unix port under a 64 KiB heap running the
firmware as ``keybound device flash`` deploys it (``.mpy`` modules from
:func:`keybound.tools.device.flash.compile_firmware`), driven line by line by
``tests/firmware/mp_device.py``. Everything listens on 127.0.0.1; every
process and every wait has a time limit.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keybound.tools.device.flash import compile_firmware
from tests.helpers.paths import BIN, ROOT
from tests.helpers.ports import free_udp_port
from tests.helpers.processes import run_keybound, wait_for_log
from tests.helpers.require import require

MP_TESTS = ROOT / "tests" / "firmware"
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"
HEAP = "64K"
HEAP_BYTES = 64 * 1024

pytestmark = pytest.mark.micropython
require(MICROPYTHON.exists(), f"the MicroPython unix port is not installed ({MICROPYTHON})")
require(MPY_CROSS.exists(), f"mpy-cross is not installed ({MPY_CROSS})")


# ---- the firmware as deployed -------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The board's filesystem: compiled modules, main.py, and the compiled test driver."""
    out = tmp_path_factory.mktemp("board")
    compile_firmware(out, mpy_cross=str(MPY_CROSS))
    subprocess.run(
        [str(MPY_CROSS), "-o", str(out / "mp_device.mpy"), str(MP_TESTS / "mp_device.py")],
        check=True,
        timeout=60,
    )
    return out


class Device:
    """One MicroPython process running the firmware; commands on stdin, one line back each."""

    def __init__(self, board: Path, bundle: Path, cwd: Path) -> None:
        env = dict(os.environ, MICROPYPATH=str(board))
        self.proc = subprocess.Popen(
            [str(MICROPYTHON), "-X", f"heapsize={HEAP}", "-m", "mp_device", str(bundle)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
        )
        self.lines: list[str] = []
        self.ready = self.read_line(30)
        assert self.ready.startswith("READY"), self.ready

    def read_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f"device said nothing for {timeout}s: {self.lines[-5:]}")
            byte = os.read(self.proc.stdout.fileno(), 1)
            if not byte:
                raise AssertionError(f"device exited: {self.lines[-5:]} {buf!r}")
            buf += byte
        line = buf.decode().strip()
        self.lines.append(line)
        return line

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def cmd(self, command: str, timeout: float = 30) -> str:
        self.send(command)
        return self.read_line(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def quit(self) -> None:
        if self.proc.poll() is None:
            self.send("quit")
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


# ---- the servers --------------------------------------------------------------------------------


class Fleet:
    """An AS and an RS as processes, provisioned with the keybound CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = f"sqlite:///{root / 'as.db'}"
        self.as_port = free_udp_port()
        self.rs_port = free_udp_port()
        self.as_base = f"coap://127.0.0.1:{self.as_port}"
        self.rs_uri = f"coap://127.0.0.1:{self.rs_port}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def keybound(self, *args: str) -> None:
        proc = run_keybound(*args, cwd=self.root)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)

    def provision(self) -> None:
        self.keybound("as", "init", "--db", self.db, "--issuer", self.as_base)
        self.keybound(
            "as", "rs", "add", "temp-rs", "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--scope", "led.write", "--out", "rs-bundle.json",
            "--as-base", self.as_base,
        )  # fmt: skip
        (self.root / "rs.toml").write_text(
            f'bundle = "rs-bundle.json"\nlisten = "127.0.0.1:{self.rs_port}"\n'
            'state = "rs-state.db"\n[resources."/temp"]\nGET = ["temp.read"]\n'
            '[resources."/led"]\nkind = "switch"\nGET = ["led.read"]\nPUT = ["led.write"]\n'
        )

    def device_bundle(self, name: str, as_base: str | None = None) -> Path:
        """Register a device; its bundle is written by ``keybound as client add``."""
        self.keybound(
            "as", "client", "add", name, "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--out", ".", "--rs-uri", self.rs_uri,
            "--as-base", as_base or self.as_base,
        )  # fmt: skip
        return self.root / f"{name}.json"

    def start(self, name: str, *args: str, ready: str = "listening") -> None:
        self.run(name, [str(BIN / "keybound"), *args], ready)

    def run(self, name: str, argv: list[str], ready: str = "listening") -> None:
        log = self.root / f"{name}.log"
        log.unlink(missing_ok=True)
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, cwd=self.root, stdout=out, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        wait_for_log(log, ready, proc)

    def start_as(self) -> None:
        self.start(
            "as", "as", "serve", "--db", self.db, "--coap", f"127.0.0.1:{self.as_port}",
            "--state-dir", "as-state",
        )  # fmt: skip

    def start_rs(self) -> None:
        self.start("rs", "rs", "serve", "--config", "rs.toml")

    def start_plain(self, port: int) -> None:
        """A plain (unprotected) CoAP server with /temp, for the baseline: the RS has none."""
        code = (
            "import asyncio, aiocoap, aiocoap.resource as r\n"
            "class T(r.Resource):\n"
            "    async def render_get(self, request):\n"
            "        return aiocoap.Message(payload=b'21.00', content_format=0)\n"
            "async def main():\n"
            "    site = r.Site(); site.add_resource(['temp'], T())\n"
            f"    await aiocoap.Context.create_server_context(site, bind=('127.0.0.1', {port}))\n"
            "    print('listening', flush=True)\n"
            "    await asyncio.get_running_loop().create_future()\n"
            "asyncio.run(main())\n"
        )
        self.run("plain", [sys.executable, "-c", code])

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


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
    assert peak < 44_000, f"peak live heap {peak} bytes (measured about 41,200)"


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
