"""The README's usage examples run as written (blocks marked ``<!-- readme-test: NAME -->``).

The blocks are concatenated in order into one shell script and run in a temporary
directory with the installed ``keybound`` on PATH. A command ending in ``&`` starts a
server: the test sends its output to a log, waits until it says it is listening,
and stops it at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import BIN, ROOT

MARK = re.compile(r"<!-- readme-test: ([\w-]+) -->\s*```sh\n(.*?)```", re.DOTALL)

PRELUDE = """set -euo pipefail
started=()
cleanup() { for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT
ready() {  # ready LOG: wait until the server in LOG listens
  for _ in $(seq 1 300); do
    grep -q listening "$1" 2>/dev/null && return 0
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
    assert [name for name, _ in readme_blocks()] == ["provisioning", "resource-server", "client"]


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
    assert "2.05 " in proc.stdout  # the GET of /temp
    assert "refused: led.write was not granted" in proc.stdout
    assert "4.03" in proc.stderr
    assert (tmp_path / "rs-bundle.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "sensor-1.json").stat().st_mode & 0o777 == 0o600
