"""Shared test helpers: paths, the RFC 8392 Appendix A keys, subprocess runners."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from keybound.core.keys import Key

ROOT = Path(__file__).resolve().parent.parent
#: Set to 1 (CI does) to make a missing part (MicroPython, mpy-cross, PostgreSQL, libcoap) fail
#: the tests that need it instead of skipping them.
REQUIRE_ALL_VARIABLE = "KEYBOUND_REQUIRE_ALL"
VECTORS = ROOT / "tests" / "vectors"
BIN = Path(sys.executable).parent


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS / name).read_text())


def rfc8392_keys() -> dict[str, Key]:
    """The keys of RFC 8392 Appendix A.2, by section title."""
    keys: dict[str, Key] = {}
    for title, spec in load_vectors("rfc8392_appendix_a.json")["keys"].items():
        kid = spec["kid"].encode()
        if "k" in spec:
            keys[title] = Key.symmetric(bytes.fromhex(spec["k"]), kid=kid)
        else:
            keys[title] = Key.from_cose_key(
                {
                    1: 2,
                    2: kid,
                    -1: 1,
                    -2: bytes.fromhex(spec["x"]),
                    -3: bytes.fromhex(spec["y"]),
                    -4: bytes.fromhex(spec["d"]),
                }
            )
    return keys


def run_keybound(
    *args: str,
    input_text: str | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
    script: Path = BIN / "keybound",
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``keybound`` console script (or another installation's ``script``)."""
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [str(script), *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )


def require(available: object, missing: str) -> None:
    """Skip unless ``available``; with KEYBOUND_REQUIRE_ALL=1, fail instead.

    Every test that needs a part outside pip's reach, or an optional one,
    asks through here, so a CI run without that part fails loudly rather than
    passing with the tests skipped. Callable at module level (then it fails
    or skips the whole file) and inside a test or fixture.
    """
    if available:
        return
    if os.environ.get(REQUIRE_ALL_VARIABLE) == "1":
        pytest.fail(f"{missing} ({REQUIRE_ALL_VARIABLE}=1 requires it)", pytrace=False)
    pytest.skip(missing, allow_module_level=True)


def provision_device(tmp_path: Path, script: Path = BIN / "keybound") -> tuple[str, Path]:
    """An AS database in ``tmp_path`` with one RS and the device sensor-1, made with the CLI.

    Returns the database URL and the device bundle `as client add` wrote.
    """
    db = f"sqlite:///{tmp_path / 'as.db'}"
    rs_uri = "coap://127.0.0.1:5684"
    for args in (
        ["as", "init", "--db", db, "--issuer", "coap://127.0.0.1:5683"],
        ["as", "rs", "add", "temp-rs", "--db", db, "--audience", rs_uri, "--scope", "temp.read",
         "--out", str(tmp_path / "rs.json")],
        ["as", "client", "add", "sensor-1", "--db", db, "--audience", rs_uri, "--scope",
         "temp.read", "--out", str(tmp_path / "added"), "--rs-uri", rs_uri],
    ):  # fmt: skip
        proc = run_keybound(*args, cwd=tmp_path, script=script)
        assert proc.returncode == 0, proc.stderr
    return db, tmp_path / "added" / "sensor-1.json"


_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux: 32768 unless changed)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 that the OS lets us bind right now, not handed out before.

    It is taken below the kernel's ephemeral range: the client sockets that every test
    opens (aiocoap, httpx, subprocesses) get their ports from that range, so one of them
    can never take a server's port between this call and the server's bind. Two servers
    of one test asking in a row never get the same port either.
    """
    import random

    high = _ephemeral_low()
    low = max(1024, high - 16384)
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def free_udp_port() -> int:
    """A free UDP port on 127.0.0.1 (see :func:`free_port`)."""
    return free_port(socket.SOCK_DGRAM)


def wait_for_log(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until a server process writes ``text`` to its log; fail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return
        if proc.poll() is not None:
            raise AssertionError(f"process exited early: {log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not seen in {log}: {log.read_text()}")


READY_PREFIX = b"keybound: ready "


def _drain(stream: Any) -> None:
    with open(os.devnull, "wb") as sink:
        shutil.copyfileobj(stream, sink)


def wait_ready(proc: subprocess.Popen[bytes], timeout: float = 30) -> list[str]:
    """Wait for a server's ready line on its stdout pipe; return the URLs it names.

    Fails if the process exits first. Whatever the server writes to stdout later
    is drained in the background, so the pipe never fills.
    """
    assert proc.stdout is not None
    stdout = proc.stdout
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no ready line within {timeout} s: {seen!r}")
            if not selector.select(left):
                continue
            line = stdout.readline()
            if not line:
                raise AssertionError(f"server exited before it was ready: {seen!r}")
            seen += line
            if line.startswith(READY_PREFIX):
                break
    threading.Thread(target=_drain, args=(stdout,), daemon=True).start()
    return line[len(READY_PREFIX) :].decode().split()


def start_server(
    args: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``keybound ARGS`` with its log (stderr) in ``log`` and wait for its ready line."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "keybound"), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=out, env=env
        )
    try:
        wait_ready(proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{' '.join(args)} did not start: {log.read_text()}") from None
    return proc


@pytest.fixture(scope="session")
def a2_keys() -> dict[str, Key]:
    return rfc8392_keys()
