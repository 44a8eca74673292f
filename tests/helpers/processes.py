"""Running keybound in subprocesses: the console script, servers awaited by their ready line."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers.paths import BIN


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


def edhoc_rs_toml(rs_port: int) -> str:
    """An ``rs.toml`` serving ``/temp`` and a ``/led`` switch with the OSCORE and EDHOC
    profiles, its EDHOC key ``rs.key`` (CCS ``rs.key.ccs``) and bundle ``rs-bundle.json``."""
    return (
        f'bundle = "rs-bundle.json"\nlisten = "127.0.0.1:{rs_port}"\n'
        'state = "rs-state.db"\nprofiles = ["oscore", "edhoc"]\n'
        '[edhoc]\nprivate_key = "rs.key"\ncredential = "rs.key.ccs"\n'
        '[resources."/temp"]\nGET = ["temp.read"]\n'
        '[resources."/led"]\nkind = "switch"\nGET = ["led.read"]\nPUT = ["led.write"]\n'
    )


class ServerGroup:
    """An AS and an RS as processes in ``root``: ports, database URL, start and stop."""

    def __init__(self, root: Path) -> None:
        from tests.helpers.ports import free_udp_port

        self.root = root
        self.db = f"sqlite:///{root / 'as.db'}"
        self.as_port = free_udp_port()
        self.rs_port = free_udp_port()
        self.rs_uri = f"coap://127.0.0.1:{self.rs_port}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def keybound(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = run_keybound(*args, cwd=self.root)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc

    def register(self, *rs_options: str) -> None:
        """With the CLI: ``as init``, the RS ``temp-rs`` (scope ``temp.read`` and
        ``rs_options``; bundle ``rs-bundle.json``) and the device ``sensor-1``
        (``sensor-1.json``), all in ``root``."""
        as_base = f"coap://127.0.0.1:{self.as_port}"
        self.keybound("as", "init", "--db", self.db, "--issuer", as_base)
        self.keybound(
            "as", "rs", "add", "temp-rs", "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", *rs_options, "--out", "rs-bundle.json", "--as-base", as_base,
        )  # fmt: skip
        self.keybound(
            "as", "client", "add", "sensor-1", "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--out", ".", "--rs-uri", self.rs_uri, "--as-base", as_base,
        )  # fmt: skip

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = start_server(list(args), self.root / f"{name}.log", cwd=self.root)
        self.procs.append(proc)
        return proc

    def start_servers(self) -> None:
        """The AS (state in ``as-state``) and the RS of ``rs.toml``, both in ``root``."""
        self.start(
            "as", "as", "serve", "--db", self.db, "--coap", f"127.0.0.1:{self.as_port}",
            "--state-dir", "as-state",
        )  # fmt: skip
        self.start("rs", "rs", "serve", "--config", "rs.toml")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class EdhocFleet(ServerGroup):
    """An AS and an RS of both profiles, provisioned with the CLI in ``root``."""

    def provision(self, *key_options: str) -> None:
        """``key_options`` go to both ``key generate --ccs`` (``--signing``: EDHOC method 0)."""
        as_base = f"coap://127.0.0.1:{self.as_port}"
        self.keybound("key", "generate", "rs.key", "--ccs", "--subject", "temp-rs", *key_options)
        self.keybound("key", "generate", "dev.key", "--ccs", "--subject", "dev-1", *key_options)
        self.keybound("as", "init", "--db", self.db, "--issuer", as_base)
        self.keybound(
            "as", "rs", "add", "temp-rs", "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--profile", "edhoc", "--profile", "oscore",
            "--credential", "rs.key.ccs", "--out", "rs-bundle.json", "--as-base", as_base,
        )  # fmt: skip
        self.keybound(
            "as", "client", "add", "dev-1", "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--credential", "dev.key.ccs", "--out", ".",
            "--rs-uri", self.rs_uri, "--as-base", as_base,
        )  # fmt: skip
        (self.root / "rs.toml").write_text(edhoc_rs_toml(self.rs_port))

    def client(self, method: str, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_keybound(
            "client", method, f"{self.rs_uri}{path}", "--bundle", "dev-1.json",
            "--state", "client-state", "--edhoc-key", "dev.key", *extra, cwd=self.root,
        )  # fmt: skip
