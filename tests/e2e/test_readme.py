"""The README's usage examples run as written (blocks marked ``<!-- readme-test: NAME -->``).

Each block runs as its own step, in order, in one temporary directory with the installed
``keybound`` on PATH: the working directory, the files and the exported variables of one
block are there for the next, and a failing block is named. A command ending in ``&``
starts a server: the step sends its output to a log, waits for its ready line, and
leaves it running for the later blocks; the test stops every server at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.paths import BIN, ROOT
from tests.helpers.ports import free_port, free_udp_port
from tests.helpers.processes import run_keybound, wait_for_log

SH_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
MARK = re.compile(r"<!-- readme-test: ([\w-]+) -->\s*```sh\n(.*?)```", re.DOTALL)

#: The start of every step: strict mode, the state the previous step left, ``ready``.
PRELUDE = """set -euo pipefail
if [ -f .readme-env ]; then source .readme-env; fi
cd "$(cat .readme-cwd 2>/dev/null || pwd)"
ready() {  # ready LOG: wait for the server's ready line in LOG
  for _ in $(seq 1 300); do
    grep -q '^keybound: ready ' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start: $(cat "$1")" >&2
  return 1
}
"""
#: The end of every step: what the next one starts from (exported variables, directory).
POSTLUDE = """
here="$(pwd)"
cd "$READMEDIR"
export -p > .readme-env
echo "$here" > .readme-cwd
"""
#: The process ids of the servers the steps started, one a line.
SERVERS = ".readme-servers"


#: The ports the README's examples name: UDP for CoAP, TCP for HTTP. The tests run the
#: examples on ports the OS hands out instead, so a busy machine cannot break them.
README_PORTS = {5683: socket.SOCK_DGRAM, 5685: socket.SOCK_DGRAM, 5686: socket.SOCK_DGRAM,
                8080: socket.SOCK_STREAM}  # fmt: skip


def on_free_ports(text: str, ports: dict[int, int]) -> str:
    """``text`` with every port number of ``ports`` (``host:PORT`` or ``("host", PORT)``)
    replaced by its free substitute."""
    return re.sub(
        r"(?<=[:\s])(\d{4,5})\b",
        lambda match: str(ports.get(int(match.group(1)), match.group(1))),
        text,
    )


def free_readme_ports() -> dict[int, int]:
    return {port: free_port(kind) for port, kind in README_PORTS.items()}


def readme_blocks() -> list[tuple[str, str]]:
    return MARK.findall((ROOT / "README.md").read_text())


def to_steps(blocks: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One shell script per block: (block name, script); servers go to ``server-N.log``."""
    steps = []
    servers = 0
    for name, body in blocks:
        lines = [PRELUDE]
        for line in body.splitlines():
            if line.rstrip().endswith(" &"):
                servers += 1
                log = f"server-{servers}.log"
                lines.append(
                    f'{line.rstrip()[:-1]} > "$READMEDIR/{log}" 2>&1 < /dev/null & '
                    f'echo $! >> "$READMEDIR/{SERVERS}"; ready "$READMEDIR/{log}"'
                )
            else:
                lines.append(line)
        lines.append(POSTLUDE)
        steps.append((name, "\n".join(lines) + "\n"))
    return steps


def stop_servers(where: Path) -> None:
    """SIGTERM every server the steps started, and wait until each has gone."""
    listed = where / SERVERS
    pids = [int(line) for line in listed.read_text().split()] if listed.exists() else []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, reaped by init soon, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def run_steps(steps: list[tuple[str, str]], where: Path, env: dict[str, str]) -> tuple[str, str]:
    """Run each step in ``where``, failing with the name of the first step that fails;
    returns the steps' stdout and stderr, joined."""
    out, err = [], []
    for name, script in steps:
        path = where / f"readme-{name}.sh"
        path.write_text(script)
        proc = subprocess.run(
            ["bash", str(path)], cwd=where, env={**env, "READMEDIR": str(where)},
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        out.append(f"== {name}\n{proc.stdout}")
        err.append(proc.stderr)
        assert proc.returncode == 0, (
            f"README block {name!r} failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
        )
    return "".join(out), "".join(err)


def systemd_step(readme: str) -> tuple[str, str]:
    """The README's systemd block as a step that can run here: the rs.toml it writes
    and its ``rs install-service``, into ``etc-keybound/`` with ``--output``.

    Installing the package, the system user and the files, and every ``systemctl`` and
    ``journalctl`` line are not run: the test has no root and no systemd as PID 1 (CI
    containers run without it), so those lines could only fail or do harm here.
    """
    (block,) = [b for b in SH_BLOCK.findall(readme) if " rs install-service " in b]
    lines = iter(block.splitlines())
    kept = ["mkdir -p etc-keybound", "cp rs-bundle.json etc-keybound/rs-bundle.json"]
    for line in lines:
        if line.startswith("sudo tee /etc/keybound/rs.toml"):
            kept.append(line.replace("sudo tee /etc/keybound/", "tee etc-keybound/"))
            for body in lines:
                kept.append(body)
                if body == "TOML":
                    break
        elif " rs install-service " in line:
            command = line.removeprefix("sudo ").replace("/opt/keybound/bin/keybound", "keybound")
            command = command.replace("/etc/keybound/", "etc-keybound/")
            kept.append(f"{command} --output keybound-rs.service")
    assert len(kept) > 3, block
    return "systemd", "\n".join([PRELUDE, *kept, POSTLUDE]) + "\n"


def test_readme_has_the_tested_sections() -> None:
    assert [name for name, _ in readme_blocks()] == [
        "tokens",
        "provisioning",
        "resource-server",
        "client",
        "http-setup",
    ]


#: How the examples name a port of this machine: ``127.0.0.1:PORT`` or ``("127.0.0.1", PORT)``.
LOCAL_PORT = re.compile(r'127\.0\.0\.1(?::|", )(\d+)')
#: The variables through which the Python examples take their URLs; the tests set both.
URL_VARIABLES = ("KEYBOUND_AS_URL", "API_PUBLIC_URL")


def test_readme_examples_run_on_no_fixed_port() -> None:
    """Every local port the run examples name is swapped for a free one, or is only the
    default of a URL variable the tests set."""
    ports = free_readme_ports()
    steps = "\n".join(script for _, script in to_steps(readme_blocks()))
    for text in (steps, python_examples()["rs-api"]):
        named = {int(port) for port in LOCAL_PORT.findall(text)}
        assert named <= set(README_PORTS), sorted(named - set(README_PORTS))
        assert set(map(int, LOCAL_PORT.findall(on_free_ports(text, ports)))) <= set(ports.values())
    for name in ("client", "api", "api-introspection"):
        for line in python_examples()[name].splitlines():
            if LOCAL_PORT.search(line):
                assert any(f'os.environ.get("{var}", ' in line for var in URL_VARIABLES), line


def test_readme_examples_run(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    steps = [*to_steps(readme_blocks()), systemd_step(readme)]
    ports = free_readme_ports()
    steps = [(name, on_free_ports(script, ports)) for name, script in steps]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    try:
        stdout, stderr = run_steps(steps, tmp_path, env)
    finally:
        stop_servers(tmp_path)
    proc = subprocess.CompletedProcess([], 0, stdout, stderr)
    assert "verified" in proc.stdout  # token inspect --key
    assert '"verified": false' in proc.stdout  # token inspect --json without a key
    assert "2.05 " in proc.stdout  # the GET of /temp
    assert "refused: led.write was not granted" in proc.stdout
    assert "4.03" in proc.stderr
    assert (tmp_path / "rs-bundle.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sensor-1.json").stat().st_mode & 0o777 == 0o600
    secret = tmp_path / "web-1.secret"  # --secret-out
    assert secret.stat().st_mode & 0o777 == 0o600
    web = json.loads((tmp_path / "web-1.json").read_text())
    assert web["http"]["client_secret"] == secret.read_text().strip()
    assert "wifi" not in web  # an HTTP-only client has no device settings
    unit = (tmp_path / "keybound-rs.service").read_text()  # the systemd block's unit
    assert f"--config {tmp_path / 'etc-keybound' / 'rs.toml'}" in unit
    assert "Type=notify" in unit


PYTHON = re.compile(r"<!-- readme-python: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)


def test_readme_python_resource_server_example(tmp_path: Path) -> None:
    """The README's Python RS serves its resource to a client that went through the AS."""
    import asyncio
    import contextlib
    import io

    from keybound.coap.client import CoapAceClient, Endpoints, client_context
    from keybound.core.client_flow import AceClient
    from keybound.tools.authz_server.server import RunningServer
    from keybound.tools.authz_server.storage import SqlAuthzStore
    from keybound.tools.bundles import DeviceBundle
    from keybound.tools.demo import provision

    ports = free_readme_ports()
    rs_port = ports[5686]
    code = on_free_ports(python_examples()["rs-api"], ports)
    as_port = free_udp_port()
    provision(tmp_path, as_port, rs_port)
    printed = io.StringIO()
    namespace: dict[str, object] = {"__name__": "readme_example"}
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md:rs-api", "exec"), namespace)

        async def listening(served: asyncio.Task[None]) -> None:
            """Until the example says it listens (or ends, which is a failure)."""
            while "listening on" not in printed.getvalue():
                assert not served.done(), printed.getvalue()
                await asyncio.sleep(0.01)

        async def scenario() -> bytes:
            import aiocoap

            store = SqlAuthzStore.open(f"sqlite:///{tmp_path / 'as.db'}")
            authz = RunningServer(store, coap=("127.0.0.1", as_port), state_dir=tmp_path / "as")
            await authz.start()
            stop = asyncio.Event()
            with contextlib.redirect_stdout(printed):
                served = asyncio.create_task(namespace["main"](stop))  # type: ignore[operator]
                await asyncio.wait_for(listening(served), 30)
            coap = await aiocoap.Context.create_client_context()
            try:
                device = DeviceBundle.read(tmp_path / "sensor-1.json")
                client = CoapAceClient(
                    coap,
                    AceClient(
                        audience=device.audience, scope=device.scope, random_bytes=os.urandom
                    ),
                    Endpoints(device.as_uri, f"coap://127.0.0.1:{rs_port}"),
                    client_context(device.as_context),
                )
                reply = await client.request("GET", "humidity")
                assert reply.code == (2, 5), reply
                return reply.payload
            finally:
                stop.set()
                await served
                await coap.shutdown()
                await authz.stop()
                store.close()

        assert asyncio.run(asyncio.wait_for(scenario(), 60)) == b"41 %"
    finally:
        os.chdir(cwd)


# ---- every Python example alone, as pasted: its own fresh directory and process ----------------

DPOP = re.compile(r"<!-- dpop-example: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)


def python_examples() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    found = dict(PYTHON.findall(text)) | dict(DPOP.findall(text))
    assert set(found) == {"rs-api", "client", "api", "api-introspection"}, sorted(found)
    return found


def python_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", **extra}


def start(args: list[str], where: Path, name: str, ready: str, env: dict[str, str]) -> Any:
    log = where / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=where, stdout=out, stderr=subprocess.STDOUT, env=env)
    wait_for_log(log, ready, proc)
    return proc


def stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_python_rs_example_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    """The example serves until SIGINT, then reaches site.shutdown() and exits 0."""
    from keybound.tools.demo import provision

    ports = free_readme_ports()
    provision(tmp_path, free_udp_port(), ports[5686])
    (tmp_path / "rs_example.py").write_text(on_free_ports(python_examples()["rs-api"], ports))
    log = tmp_path / "rs.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "rs_example.py"], cwd=tmp_path, stdout=out,
            stderr=subprocess.STDOUT, env=python_env(),
        )  # fmt: skip
    try:
        wait_for_log(log, f"listening on 127.0.0.1:{ports[5686]}", proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, log.read_text()
    finally:
        stop(proc)
    output = log.read_text()
    assert output.rstrip().endswith("stopped"), output
    assert "Traceback" not in output


@pytest.fixture
def http_fleet(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An AS with an HTTP-only client and an API entry, as the README's set-up makes them."""
    as_port = free_port(socket.SOCK_STREAM)
    as_url = f"http://127.0.0.1:{as_port}"
    db = f"sqlite:///{tmp_path / 'as.db'}"
    for args in (
        ("as", "init", "--db", db, "--issuer", as_url),
        ("as", "rs", "add", "api", "--db", db, "--audience", "temp", "--scope", "read",
         "--out", "api-bundle.json"),
        ("as", "client", "add", "web-1", "--db", db, "--audience", "temp", "--scope", "read",
         "--http-secret", "--no-oscore", "--secret-out", "web-1.secret"),
    ):  # fmt: skip
        proc = run_keybound(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    env = python_env(XDG_STATE_HOME=str(tmp_path / "state"))
    server = start(
        [str(BIN / "keybound"), "as", "serve", "--db", db, "--http", f"127.0.0.1:{as_port}"],
        tmp_path, "as", "listening", env,
    )  # fmt: skip
    try:
        yield {"KEYBOUND_AS_URL": as_url, "KEYBOUND_CLIENT_SECRET": (
            tmp_path / "web-1.secret").read_text().strip()}  # fmt: skip
    finally:
        stop(server)


@pytest.mark.parametrize("name", ["api", "api-introspection"])
def test_api_example_runs_alone(name: str, http_fleet: dict[str, str], tmp_path: Path) -> None:
    """Each API example, pasted alone into a file, is an app uvicorn serves to the client
    example (itself run alone): the whole DPoP flow, one fresh process each."""
    examples = python_examples()
    module = name.replace("-", "_")
    app_name = "api" if name == "api" else "api_introspecting"
    (tmp_path / f"{module}.py").write_text(examples[name])
    (tmp_path / "client.py").write_text(examples["client"])
    api_port = free_port(socket.SOCK_STREAM)
    api_url = f"http://127.0.0.1:{api_port}"
    env = python_env(API_PUBLIC_URL=api_url, **http_fleet)
    api = start(
        [sys.executable, "-m", "uvicorn", f"{module}:{app_name}", "--host", "127.0.0.1",
         "--port", str(api_port)],
        tmp_path, module, "Uvicorn running", env,
    )  # fmt: skip
    try:
        client = subprocess.run(
            [sys.executable, "client.py"], cwd=tmp_path, env=env, capture_output=True,
            text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        stop(api)
    assert client.returncode == 0, client.stdout + client.stderr
    assert client.stdout.startswith("200 {'claims': ")
    assert "'sub': 'web-1'" in client.stdout
    assert "'client_id': 'web-1'" in client.stdout
