"""The CLI sits on top: no application package imports ``keybound.tools.cli``."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.paths import ROOT

CLI = "keybound.tools.cli"


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_nothing_outside_the_cli_imports_it() -> None:
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for folder in ("core", "coap", "tools", "firmware")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (ROOT / "tools" / "cli") not in path.parents
        for name in _imports(path)
        if name == CLI or name.startswith(f"{CLI}.")
    ]
    assert found == []
