"""The firmware against the real servers, as plain code: :class:`Device` (the MicroPython
unix port running the firmware as ``keybound device flash`` deploys it, driven line by line
by ``tests/firmware/mp_device.py``), :class:`Fleet` (``keybound as serve`` and ``keybound
rs serve`` as processes on 127.0.0.1, provisioned with the CLI), :func:`run_board` and
:func:`edit_bundle`. The fixtures built on them live in ``tests/firmware/conftest.py``."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.firmware import MICROPYTHON, MP_TESTS
from tests.helpers.paths import BIN
from tests.helpers.ports import free_udp_port
from tests.helpers.processes import run_keybound, wait_for_log

__all__ = ["FAKENET", "HEAP", "HEAP_BYTES", "Device", "Fleet", "edit_bundle", "run_board"]

#: The heap of the OSCORE-profile board, as ``-X heapsize`` takes it, and in bytes.
HEAP = "64K"
HEAP_BYTES = 64 * 1024
FAKENET = MP_TESTS / "fakenet"  # the network module: no radio on the unix port


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

    def restart_as(self) -> None:
        """Stop the AS cleanly and start it again: it reads every client of the store at
        start, so a device added just now is known from its first request on (a running
        AS looks for new clients at most once a second)."""
        proc = self.procs.pop("as")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        self.start_as()

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


def run_board(
    deployed: Path,
    bundle: Path,
    board: Path,
    rounds: int,
    *,
    scene: dict[str, object] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``main.py BUNDLE ROUNDS`` as the board runs it, in ``board`` (its filesystem: the
    state folder), with the fake access point of ``scene`` (fakenet/network.py) if given."""
    board.mkdir(exist_ok=True)
    path = [str(deployed)]
    if scene is not None:
        (board / "fakenet.json").write_text(json.dumps(scene))
        path.insert(0, str(FAKENET))
    return subprocess.run(
        [str(MICROPYTHON), "-X", f"heapsize={HEAP}", str(deployed / "main.py"), str(bundle),
         str(rounds)],
        capture_output=True, text=True, timeout=timeout, cwd=board, check=False,
        env=dict(os.environ, MICROPYPATH=":".join(path)),
    )  # fmt: skip


def edit_bundle(bundle: Path, out: Path, **fields: object) -> Path:
    data = json.loads(bundle.read_text())
    data.update(fields)
    out.write_text(json.dumps(data))
    return out
