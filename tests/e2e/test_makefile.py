"""The Makefile's two commands: ``make demo`` installs the runtime, ``make test`` the dev tools."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers.paths import ROOT
from tests.helpers.require import require

MAKE = shutil.which("make")


def planned(target: str, venv: Path) -> str:
    """What ``make TARGET`` would run (``make -n``), with the virtualenv at ``venv``."""
    require(MAKE, "make is not installed")
    assert MAKE is not None
    proc = subprocess.run(
        [MAKE, "-n", "--no-print-directory", target, f"VENV={venv}"], cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_demo_installs_the_runtime_dependencies_only(tmp_path: Path) -> None:
    plan = planned("demo", tmp_path / "venv")
    assert "pip install -q -e . --config-settings editable_mode=strict" in plan
    assert "[dev]" not in plan
    assert plan.rstrip().endswith(f"{tmp_path / 'venv'}/bin/keybound demo")


def test_test_after_demo_adds_the_dev_extras(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    (venv / ".installed-runtime").touch()  # what `make demo` leaves behind
    plan = planned("test", venv)
    assert "pip install -q -e '.[dev]' --config-settings editable_mode=strict" in plan
    assert "mypy -p keybound.core" in plan
    assert "-m pytest" in plan
