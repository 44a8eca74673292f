"""The facade packages' public names: ``__all__`` lists exactly what they hold, and the
README imports only names listed there."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import types

import pytest

from tests.helpers.paths import ROOT

FACADES = ["keybound.tools.http", "keybound.tools.resource_server"]

#: ``from keybound.x import a, b`` or ``from keybound.x import (\n a,\n b,\n)``.
README_IMPORT = re.compile(r"^from (keybound[\w.]*) import (\([^)]*\)|[^\n]+)$", re.MULTILINE)


def public_members(module: types.ModuleType) -> set[str]:
    """The names a module defines or imports, without its submodules and private names."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.mark.parametrize("name", FACADES)
def test_all_lists_every_public_name(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__all__
    assert len(exported) == len(set(exported)), "a name is listed twice"
    assert set(exported) == public_members(module)


@pytest.mark.parametrize("name", FACADES)
def test_facade_names_come_from_their_home_modules(name: str) -> None:
    """A facade re-exports; each name is defined in (and exported by) a module of its own."""
    module = importlib.import_module(name)
    for member in module.__all__:
        value = getattr(module, member)
        home = getattr(value, "__module__", None)
        if not isinstance(home, str) or not home.startswith("keybound."):
            continue  # a constant or a type alias
        assert home != name, f"{name}.{member} is defined in the facade"
        assert member in importlib.import_module(home).__all__, f"{home} does not export {member}"


def readme_imports() -> list[tuple[str, str]]:
    found = []
    for module, names in README_IMPORT.findall((ROOT / "README.md").read_text()):
        for item in names.strip("()").split(","):
            if item.strip():
                found.append((module, item.split(" as ")[0].strip()))
    return found


def test_readme_imports_only_exported_names() -> None:
    imports = readme_imports()
    assert {module for module, _ in imports} >= set(FACADES)
    for module, name in imports:
        exported = getattr(importlib.import_module(module), "__all__", ())
        assert name in exported, f"README.md imports {name} from {module}, not in its __all__"


def test_readme_imports_http_and_rs_names_from_the_facades() -> None:
    """The HTTP and RS examples use the one public address of each name."""
    for module, name in readme_imports():
        if module.startswith(("keybound.tools.http.", "keybound.tools.resource_server.")):
            pytest.fail(f"README.md imports {name} from {module}, not from its facade")


def test_http_facade_is_light() -> None:
    """Importing the HTTP bindings loads neither the CLI nor the CoAP stack."""
    code = "import json, sys; import keybound.tools.http; print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = json.loads(proc.stdout)
    heavy = [
        name
        for name in loaded
        if name.startswith(("keybound.tools.cli", "keybound.coap", "aiocoap", "typer"))
    ]
    assert heavy == []
