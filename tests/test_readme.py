"""The README's usage examples run as written (blocks marked ``<!-- readme-test: NAME -->``).

The blocks are concatenated in order into one shell script and run in a temporary
directory with the installed ``keybound`` on PATH. A command ending in ``&`` starts a
server: the test sends its output to a log, waits for its ready line,
and stops it at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import BIN, ROOT, free_udp_port

MARK = re.compile(r"<!-- readme-test: ([\w-]+) -->\s*```sh\n(.*?)```", re.DOTALL)

PRELUDE = """set -euo pipefail
started=()
cleanup() { for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
ready() {  # ready LOG: wait for the server's ready line in LOG
  for _ in $(seq 1 300); do
    grep -q '^keybound: ready ' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start: $(cat "$1")" >&2
  return 1
}
"""


def readme_blocks() -> list[tuple[str, str]]:
    return MARK.findall((ROOT / "README.md").read_text())


def to_script(blocks: list[tuple[str, str]]) -> str:
    lines = [PRELUDE]
    servers = 0
    for name, body in blocks:
        lines.append(f"echo '== {name}'")
        for line in body.splitlines():
            if line.rstrip().endswith(" &"):
                servers += 1
                log = f"server-{servers}.log"
                lines.append(f"{line.rstrip()[:-1]} > {log} 2>&1 & started+=($!); ready {log}")
            else:
                lines.append(line)
    return "\n".join(lines) + "\n"


def test_readme_has_the_tested_sections() -> None:
    assert [name for name, _ in readme_blocks()] == [
        "tokens",
        "provisioning",
        "resource-server",
        "client",
    ]


def test_readme_examples_run(tmp_path: Path) -> None:
    script = tmp_path / "readme.sh"
    script.write_text(to_script(readme_blocks()))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    proc = subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verified" in proc.stdout  # token inspect --key
    assert '"verified": false' in proc.stdout  # token inspect --json without a key
    assert "2.05 " in proc.stdout  # the GET of /temp
    assert "refused: led.write was not granted" in proc.stdout
    assert "4.03" in proc.stderr
    assert (tmp_path / "rs-bundle.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sensor-1.json").stat().st_mode & 0o777 == 0o600


PYTHON = re.compile(r"<!-- readme-python: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)


def test_readme_python_resource_server_example(tmp_path: Path) -> None:
    """The README's Python RS serves its resource to a client that went through the AS."""
    import asyncio

    from keybound.coap.client import CoapAceClient, Endpoints, client_context
    from keybound.core.client_flow import AceClient
    from keybound.tools.as_server import RunningServer
    from keybound.tools.as_storage import SqlAuthzStore
    from keybound.tools.client_cli import DeviceBundle
    from keybound.tools.demo import provision

    (code,) = [body for name, body in PYTHON.findall((ROOT / "README.md").read_text())]
    as_port = free_udp_port()
    provision(tmp_path, as_port, 5686)  # the example listens on 5686
    namespace: dict[str, object] = {"__name__": "readme_example"}
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md:rs-api", "exec"), namespace)

        async def scenario() -> bytes:
            import aiocoap

            store = SqlAuthzStore.open(f"sqlite:///{tmp_path / 'as.db'}")
            authz = RunningServer(store, coap=("127.0.0.1", as_port), state_dir=tmp_path / "as")
            await authz.start()
            stop = asyncio.Event()
            served = asyncio.create_task(namespace["main"](stop))  # type: ignore[operator]
            coap = await aiocoap.Context.create_client_context()
            try:
                await asyncio.sleep(0.2)
                device = DeviceBundle.read(tmp_path / "sensor-1.json")
                client = CoapAceClient(
                    coap,
                    AceClient(audience=device.audience, scope=device.scope),
                    Endpoints(device.as_uri, "coap://127.0.0.1:5686"),
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
