"""The firmware's EDHOC profile against the real servers, on the MicroPython unix port.

``keybound as serve`` and ``keybound rs serve`` (EDHOC and OSCORE profiles, the RS's
EDHOC key made by ``keybound key generate --ccs``) run as processes on 127.0.0.1; the
device makes its own key pair on the board (``keygen.py``), the AS learns only its public
credential (``keybound as client add --credential``), and the device runs the whole flow:
token with ``req_cnf``, ``/authz-info``, EDHOC at ``/.well-known/edhoc``, OSCORE GETs, and
starting over when the RS forgets it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keybound.core.edhoc_credentials import Ccs
from keybound.tools.bench.firmware import (
    FLOOR_OK,
    FLOOR_STEP,
    compile_floor_script,
    heap_floor,
    run_flow,
)
from keybound.tools.bench.firmware import flow_ok as bench_flow_ok
from tests.helpers.firmware import MICROPYTHON, MPY_CROSS
from tests.helpers.firmware_fleet import Device, Fleet, edit_bundle
from tests.helpers.processes import edhoc_rs_toml

pytestmark = pytest.mark.micropython
#: The EDHOC flow's heap, a guard: the flow test below (token, /authz-info, EDHOC, GETs,
#: an RS restart and a second token and handshake, with the mp_device.py driver loaded)
#: was bisected to 56,320 bytes on pip's 64-bit unix port, 7.7 KB above the bench's flow
#: script (the driver's own code and interned names); 60 KB leaves a margin of about
#: 3.7 KB for the floor's moves between runs (random keys and C_I), and a change that
#: needs more fails here.
EDHOC_HEAP = 60 * 1024
#: The goal of issue 15 for the EDHOC flow on the 64-bit unix port.
EDHOC_GOAL = 48 * 1024


class EdhocDevice(Device):
    """mp_device.py as Device runs it, under EDHOC_HEAP unless told; ``ready`` is its
    first line (READY, or the error that ended it at boot)."""

    def __init__(self, board: Path, bundle: Path, cwd: Path, heap: int = EDHOC_HEAP) -> None:
        self.proc = subprocess.Popen(
            [str(MICROPYTHON), "-X", f"heapsize={heap}", "-m", "mp_device", str(bundle)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=cwd, env=dict(os.environ, MICROPYPATH=str(board)),
        )  # fmt: skip
        self.lines: list[str] = []
        self.ready = self.read_line(30)


def on_board(deployed: Path, board: Path, code: str) -> subprocess.CompletedProcess[str]:
    """``micropython -c CODE`` with the deployed firmware, in the board's filesystem."""
    board.mkdir(exist_ok=True)
    return subprocess.run(
        [str(MICROPYTHON), "-X", f"heapsize={EDHOC_HEAP}", "-c", code],
        capture_output=True, text=True, timeout=60, cwd=board, check=False,
        env=dict(os.environ, MICROPYPATH=str(deployed)),
    )  # fmt: skip


def board_keygen(deployed: Path, board: Path, subject: str) -> bytes:
    proc = on_board(deployed, board, f"import keygen; keygen.main('state', None, {subject!r})")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = proc.stdout.split()
    assert line[0] == "CCS", proc.stdout
    return bytes.fromhex(line[1])


class EdhocFleet(Fleet):
    """An RS of both profiles with its EDHOC credential, and the AS."""

    def provision(self) -> None:
        self.keybound("as", "init", "--db", self.db, "--issuer", self.as_base)
        self.keybound("key", "generate", "rs.key", "--ccs", "--kid", "2", "--subject", "rs")
        self.keybound(
            "as", "rs", "add", "temp-rs", "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--scope", "led.write", "--out", "rs-bundle.json",
            "--as-base", self.as_base, "--profile", "edhoc", "--profile", "oscore",
            "--credential", "rs.key.ccs",
        )  # fmt: skip
        (self.root / "rs.toml").write_text(edhoc_rs_toml(self.rs_port))

    def edhoc_device(self, name: str, ccs: bytes) -> Path:
        (self.root / f"{name}.ccs").write_bytes(ccs)
        self.keybound(
            "as", "client", "add", name, "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--out", ".", "--rs-uri", self.rs_uri,
            "--as-base", self.as_base, "--credential", f"{name}.ccs",
        )  # fmt: skip
        bundle = self.root / f"{name}.json"
        return edit_bundle(
            bundle, bundle, profile="edhoc", state_dir=str(self.root / name / "state")
        )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[EdhocFleet]:
    fleet = EdhocFleet(tmp_path)
    fleet.provision()
    try:
        yield fleet
    finally:
        fleet.stop()


def test_the_board_makes_a_ccs_the_cpython_side_reads(deployed: Path, tmp_path: Path) -> None:
    """keygen.py's CCS is what core.edhoc_credentials.Ccs.make writes for the same key."""
    ccs = board_keygen(deployed, tmp_path / "b", "sensor-k")
    read = Ccs.decode(ccs)
    d = bytes.fromhex((tmp_path / "b" / "state" / "edhoc.key").read_text())
    from keybound.core.edhoc_credentials import key_from_private_d

    again = Ccs.make(key_from_private_d(d, kid=read.kid), subject="sensor-k")
    assert again.encoded == ccs
    assert read.subject == "sensor-k"
    assert len(read.kid) == 4


def test_keygen_never_replaces_a_key(deployed: Path, tmp_path: Path) -> None:
    first = board_keygen(deployed, tmp_path / "b", "s")
    key = (tmp_path / "b" / "state" / "edhoc.key").read_text()
    proc = on_board(deployed, tmp_path / "b", "import keygen; keygen.main('state', None, 's')")
    assert proc.stdout.split() == ["CCS", first.hex(), "existing"]
    assert (tmp_path / "b" / "state" / "edhoc.key").read_text() == key


def edhoc_flow(fleet: EdhocFleet, deployed: Path, bundle: Path, heap: int) -> list[str]:
    """The device's answers to the whole flow under ``heap``: two GETs, a refused scope,
    and a GET after the RS forgot everything (a second token and handshake), then its
    heap line; fewer when it ended early (its boot line first then)."""
    device = EdhocDevice(deployed, bundle, bundle.parent / bundle.stem, heap)
    try:
        if not device.ready.startswith("READY"):
            return [device.ready]
        got = [device.cmd("get /temp", timeout=60), device.cmd("get /temp")]
        got.append(device.cmd("get /led"))
        fleet.kill("rs")
        (fleet.root / "rs-state.db").unlink(missing_ok=True)
        fleet.start_rs()
        got.append(device.cmd("get /temp", timeout=60))
        got.append(device.cmd("heap"))
        return got
    finally:
        device.quit()


def flow_ok(got: list[str]) -> bool:
    """The answers edhoc_flow gives when the whole flow ran."""
    return (
        len(got) == 5
        and got[0].startswith("RESP 2.05 ")
        and got[1].startswith("RESP 2.05 ")
        and got[2].startswith("RESP 4.03 ")
        and got[3].startswith("RESP 2.05 ")
        and "tokens=2 posts=2" in got[3]
    )


def started(fleet: EdhocFleet, deployed: Path, name: str) -> Path:
    """The AS and RS running, and the bundle of a device NAME whose key the board made."""
    ccs = board_keygen(deployed, fleet.root / name, name)
    bundle = fleet.edhoc_device(name, ccs)
    fleet.start_as()
    fleet.start_rs()
    return bundle


def test_the_edhoc_flow_against_the_real_servers(fleet: EdhocFleet, deployed: Path) -> None:
    """Token (req_cnf kccs), /authz-info, EDHOC, OSCORE GETs; a refused scope; an RS that
    forgot everything makes the device start over with a new token and handshake."""
    bundle = started(fleet, deployed, "sensor-e")
    got = edhoc_flow(fleet, deployed, bundle, EDHOC_HEAP)
    assert len(got) == 5, got
    first, second, refused, again, heap = got
    assert first.startswith("RESP 2.05 "), got
    float(bytes.fromhex(first.split()[2]))
    assert "tokens=1 posts=1" in first
    assert second.startswith("RESP 2.05 "), second
    assert "tokens=1 posts=1" in second, second
    assert refused.startswith("RESP 4.03 "), refused
    assert again.startswith("RESP 2.05 "), again
    assert "tokens=2 posts=2" in again, again
    assert flow_ok(got)
    rs_log = (fleet.root / "rs.log").read_text()
    assert "EDHOC session completed" in rs_log, rs_log[-2000:]
    print(f"\n{heap}")


def test_the_edhoc_flow_runs_in_the_goal_heap(fleet: EdhocFleet, deployed: Path) -> None:
    """Issue 15's goal, as ``keybound bench`` measures it (firmware.edhoc_heap_floor_bytes):
    FLOOR_SCRIPT, compiled as main.py's code would be, runs the whole EDHOC flow (a token
    with req_cnf, /authz-info, a handshake, GETs, then a second token and handshake once
    the first token expired) in EDHOC_GOAL bytes, three runs in a row (the ephemeral key
    and C_I are new each run)."""
    bundle = started(fleet, deployed, "sensor-g")
    edit_bundle(bundle, bundle, resource="/temp")  # what FLOOR_SCRIPT requests
    compile_floor_script(MPY_CROSS, deployed)
    for _ in range(3):
        proc = run_flow(MICROPYTHON, deployed, bundle, EDHOC_GOAL)
        assert bench_flow_ok(proc), proc.stdout[-2000:] + proc.stderr[-2000:]


def test_the_edhoc_flow_stays_in_four_pools_of_names(fleet: EdhocFleet, deployed: Path) -> None:
    """The interned names (qstrs) of the EDHOC flow fit in MicroPython's first four pools
    (300 names): a fifth is 3.5 KB on the 64-bit port for the device's life, the step
    that kept the flow above its goal. A short string constant in the firmware is such a
    name (cbor.py, "Error messages"). And the device never loads oscore_ace.py."""
    bundle = started(fleet, deployed, "sensor-q")
    edit_bundle(bundle, bundle, resource="/temp")  # what FLOOR_SCRIPT requests
    compile_floor_script(MPY_CROSS, deployed)
    code = (  # argv[1]: the bundle
        "import floor_device, micropython, sys; micropython.qstr_info(); "
        "print('OSCORE-PROFILE', 'oscore_ace' in sys.modules)"
    )
    proc = subprocess.run(
        [str(MICROPYTHON), "-X", "heapsize=96K", "-c", code, str(bundle)],
        capture_output=True, text=True, timeout=120, cwd=deployed, check=False,
        env=dict(os.environ, MICROPYPATH=""),
    )  # fmt: skip
    assert FLOOR_OK in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    info = next(line for line in proc.stdout.splitlines() if line.startswith("qstr pool:"))
    fields = dict(word.split("=") for word in info.replace(",", "").split()[2:])
    assert int(fields["n_pool"]) <= 4, info
    assert "OSCORE-PROFILE False" in proc.stdout  # the other profile's steps not loaded
    print(f"\n{info}")


def test_the_edhoc_heap_floor_is_bisected_and_binds(fleet: EdhocFleet, deployed: Path) -> None:
    """The EDHOC flow's floor is found by bisection (at most EDHOC_HEAP, the guard); 1 KB
    below it the device runs out of memory. Not one FLOOR_STEP as for the OSCORE flow:
    the ephemeral key and C_I are new each run, and the floor moves by up to about
    512 bytes between runs of the same build."""
    bundle = started(fleet, deployed, "sensor-f")
    floor = heap_floor(
        lambda heap: flow_ok(edhoc_flow(fleet, deployed, bundle, heap)),
        low=EDHOC_GOAL - FLOOR_STEP,
        high=EDHOC_HEAP,
    )
    print(f"\nheap floor of the EDHOC flow: {floor} bytes (goal {EDHOC_GOAL})")
    below = edhoc_flow(fleet, deployed, bundle, floor - 1024)
    assert not flow_ok(below)
    # Out of memory shows as MemoryError or, when not even the traceback's lines can be
    # allocated, as a traceback cut off after its first line.
    cut_off = below[-1:] == ["Traceback (most recent call last):"]
    assert cut_off or any("MemoryError" in line for line in below), below


def test_a_credential_the_as_does_not_know_is_refused(fleet: EdhocFleet, deployed: Path) -> None:
    """A board whose key is not the registered one: the AS refuses the req_cnf."""
    ccs = board_keygen(deployed, fleet.root / "sensor-x", "sensor-x")
    bundle = fleet.edhoc_device("sensor-x", ccs)
    # Another key on the board than the one the AS knows.
    (fleet.root / "sensor-x" / "state" / "edhoc.key").unlink()
    (fleet.root / "sensor-x" / "state" / "edhoc.ccs").unlink()
    board_keygen(deployed, fleet.root / "sensor-x", "sensor-x")
    fleet.start_as()
    fleet.start_rs()
    device = EdhocDevice(deployed, bundle, fleet.root / "sensor-x")
    try:
        got = device.cmd("get /temp", timeout=60)
    finally:
        device.quit()
    assert got.startswith("ERR ACEError token: 4.00"), got


def test_a_bundle_of_the_edhoc_profile_needs_the_key(fleet: EdhocFleet, deployed: Path) -> None:
    ccs = board_keygen(deployed, fleet.root / "other", "sensor-n")
    bundle = fleet.edhoc_device("sensor-n", ccs)  # its state folder has no key
    board = fleet.root / "sensor-n"
    board.mkdir(exist_ok=True)
    proc = on_board(deployed, board, f"import app; app.build_session(app.boot({str(bundle)!r}))")
    assert "no EDHOC key" in proc.stdout + proc.stderr
    assert "keybound device keygen" in proc.stdout + proc.stderr
    assert json.loads(bundle.read_text())["profile"] == "edhoc"


def board_as_mpremote(tmp_path: Path, deployed: Path, board: Path) -> Path:
    """An mpremote stand-in whose ``exec CODE`` runs CODE on the unix port in ``board``:
    the serial line is the one part that is not real."""
    board.mkdir(exist_ok=True)
    fake = tmp_path / "mpremote"
    fake.write_text(
        f"#!{sys.executable}\nimport os, subprocess, sys\n"
        "assert sys.argv[1:2] == ['connect'] and sys.argv[3] == 'exec', sys.argv\n"
        f"env = dict(os.environ, MICROPYPATH={str(deployed)!r})\n"
        f"sys.exit(subprocess.run([{str(MICROPYTHON)!r}, '-c', sys.argv[4]], "
        f"cwd={str(board)!r}, env=env).returncode)\n"
    )
    fake.chmod(0o700)
    return fake


def test_device_keygen_fetches_the_ccs_for_as_client_add(
    fleet: EdhocFleet, deployed: Path, tmp_path: Path
) -> None:
    board = tmp_path / "board-k"
    fake = board_as_mpremote(tmp_path, deployed, board)
    out = fleet.root / "k.ccs"
    args = ["device", "keygen", "--port", "/dev/ttyUSB0", "--out", str(out), "--kid", "0a0b",
            "--subject", "sensor-k", "--mpremote", str(fake)]  # fmt: skip
    fleet.keybound(*args)
    ccs = Ccs.decode(out.read_bytes())
    assert ccs.kid == b"\x0a\x0b"
    assert ccs.subject == "sensor-k"
    assert (board / "state" / "edhoc.key").exists()
    assert (board / "state" / "edhoc.ccs").read_bytes() == ccs.encoded
    key = (board / "state" / "edhoc.key").read_text()
    fleet.keybound(*args)  # again: the same key, not a new one
    assert (board / "state" / "edhoc.key").read_text() == key
    assert out.read_bytes() == ccs.encoded
    fleet.keybound(
        "as", "client", "add", "sensor-k", "--db", fleet.db, "--audience", fleet.rs_uri,
        "--scope", "temp.read", "--out", ".", "--rs-uri", fleet.rs_uri,
        "--as-base", fleet.as_base, "--credential", str(out),
    )  # fmt: skip
