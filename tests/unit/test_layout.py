"""Layout guards, read from the source with :mod:`ast`: imports point down (tools -> coap ->
core), keybound.core does no I/O, and ``__all__`` says exactly what is public.

Each guard has an explicit list of the current exceptions, with the reason; an entry
that no longer applies fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT

#: The import packages and their folders, bottom layer first.
LAYERS = {"keybound.core": "core", "keybound.coap": "coap", "keybound.tools": "tools"}


@dataclass(frozen=True)
class Module:
    name: str  # keybound.core.cose
    path: Path
    tree: ast.Module

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


@cache
def modules(package: str) -> tuple[Module, ...]:
    folder = ROOT / LAYERS[package]
    found = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(folder).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join([package, *parts])
        found.append(Module(name, path, ast.parse(path.read_text(), str(path))))
    return tuple(found)


def all_modules() -> list[Module]:
    return [module for package in LAYERS for module in modules(package)]


def imports(module: Module) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import, at any depth; relative ones resolved.

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule).
    """
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.package.split(".")
                base = base[: len(base) - (node.level - 1)]
                parent = ".".join([*base, *([node.module] if node.module else [])])
            else:
                parent = node.module or ""
            if parent != "__future__":
                yield node.lineno, parent
                for alias in node.names:
                    yield node.lineno, f"{parent}.{alias.name}"


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# ---- (a) imports point down ------------------------------------------------------------------

ABOVE = {
    "keybound.core": ("keybound.coap", "keybound.tools", "tests"),
    "keybound.coap": ("keybound.tools", "tests"),
    "keybound.tools": ("tests",),
}


@pytest.mark.parametrize("package", list(LAYERS))
def test_imports_point_down(package: str) -> None:
    """tools -> coap -> core (tools may import core directly); nothing imports the tests."""
    wrong = sorted(
        f"{module.path.relative_to(ROOT)}:{line} imports {name}"
        for module in modules(package)
        for line, name in imports(module)
        if any(within(name, above) for above in ABOVE[package])
    )
    assert not wrong, "\n".join(wrong)


def test_the_import_reader_resolves_relative_imports() -> None:
    """A check of the guard itself: ``from ..x import y`` inside core/numbers/ is core.x."""
    tree = ast.parse("from ..errors import DecodeError\nfrom . import cose_keys\nimport os\n")
    module = Module("keybound.core.numbers", ROOT / "core" / "numbers" / "__init__.py", tree)
    assert {name for _, name in imports(module)} == {
        "keybound.core.errors",
        "keybound.core.errors.DecodeError",
        "keybound.core.numbers",
        "keybound.core.numbers.cose_keys",
        "os",
    }


# ---- (b) keybound.core does no I/O ------------------------------------------------------------

#: Modules (and submodules) that do I/O, reach the environment, or draw time or randomness.
IO_MODULES = (
    "aiocoap", "asyncio", "concurrent", "glob", "http.client", "http.server", "httpx", "io",
    "logging", "multiprocessing", "os", "pathlib", "random", "secrets", "select", "selectors",
    "shutil", "signal", "socket", "socketserver", "sqlalchemy", "sqlite3", "ssl", "starlette",
    "subprocess", "sys", "tempfile", "threading", "time", "urllib.request", "uvicorn",
)  # fmt: skip
#: Builtins that do I/O.
IO_BUILTINS = ("breakpoint", "input", "open", "print")

#: Where keybound.core does I/O today: (module, finding) -> why. Short on purpose; an entry
#: that no longer applies fails the test (delete it).
CORE_IO_EXCEPTIONS = {}


class _CoreIo(ast.NodeVisitor):
    """I/O findings of one module: imports, builtin calls, defaults that reach I/O modules."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.found: set[str] = set()
        self.scope: list[str] = []
        self.bound: dict[str, str] = {}  # local name -> dotted name it was imported as
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    self.bound[alias.asname or alias.name.split(".")[0]] = (
                        alias.name if alias.asname else alias.name.split(".")[0]
                    )
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                for alias in node.names:
                    self.bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def dotted(self, node: ast.expr) -> str | None:
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            parent = self.dotted(node.value)
            return None if parent is None else f"{parent}.{node.attr}"
        return None

    def reaches_io(self, node: ast.expr) -> bool:
        for part in ast.walk(node):
            if isinstance(part, ast.Name | ast.Attribute):
                name = self.dotted(part)
                if name is not None and any(within(name, io) for io in IO_MODULES):
                    return True
        return False

    def check_defaults(self, where: str, arguments: ast.arguments) -> None:
        positional = [*arguments.posonlyargs, *arguments.args]
        with_default = positional[len(positional) - len(arguments.defaults) :]
        pairs = [
            *zip(with_default, arguments.defaults, strict=True),
            *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True),
        ]
        for arg, default in pairs:
            if default is not None and self.reaches_io(default):
                self.found.add(f"default {where}({arg.arg}={ast.unparse(default)})")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.check_defaults(".".join([*self.scope, node.name]), node.args)
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef  # noqa: N815 - the name ast.NodeVisitor calls

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.check_defaults(".".join([*self.scope, "<lambda>"]), node.args)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in IO_BUILTINS:
            self.found.add(f"call {node.func.id}()")
        if isinstance(node.func, ast.Name) and node.func.id == "field":  # dataclass fields
            for keyword in node.keywords:
                if keyword.arg in ("default", "default_factory") and self.reaches_io(keyword.value):
                    where = ".".join(self.scope)
                    self.found.add(
                        f"default {where} field({keyword.arg}={ast.unparse(keyword.value)})"
                    )
        self.generic_visit(node)


def core_io_findings() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for module in modules("keybound.core"):
        for _, name in imports(module):
            root = next((io for io in IO_MODULES if within(name, io)), None)
            if root is not None:
                found.add((module.name, f"import {root}"))
        visitor = _CoreIo(module)
        visitor.visit(module.tree)
        found |= {(module.name, finding) for finding in visitor.found}
    return found


def test_core_does_no_io() -> None:
    """keybound.core is sans-IO: no I/O modules or builtins, randomness and time injected."""
    found = core_io_findings()
    new = sorted(found - CORE_IO_EXCEPTIONS.keys())
    assert not new, "I/O in keybound.core:\n" + "\n".join(map(str, new))
    stale = sorted(CORE_IO_EXCEPTIONS.keys() - found)
    assert not stale, "fixed, delete from CORE_IO_EXCEPTIONS:\n" + "\n".join(map(str, stale))


def test_the_io_reader_sees_defaults_and_calls() -> None:
    """A check of the guard itself on a made-up module."""
    source = (
        "import os\nfrom time import monotonic as clock\nfrom dataclasses import field\n"
        "class A:\n    def f(self, rnd=os.urandom, *, now=clock, n=3):\n        open('x')\n"
        "    g: bytes = field(default_factory=lambda: os.urandom(8))\n"
    )
    module = Module("keybound.core.example", ROOT / "core" / "example.py", ast.parse(source))
    visitor = _CoreIo(module)
    visitor.visit(module.tree)
    assert visitor.found == {
        "default A.f(rnd=os.urandom)",
        "default A.f(now=clock)",
        "call open()",
        "default A field(default_factory=lambda: os.urandom(8))",
    }


# ---- (c) __all__ says exactly what is public ----------------------------------------------------

#: Public-named functions of modules with ``__all__`` that are left out of it today:
#: module -> (names, why). An entry that no longer applies fails the test (delete it).
_TYPER = "typer commands and callbacks: the CLI is their surface, __all__ names the app"
_BENCH = "run: the entry point the bench registry calls"
ALL_EXCEPTIONS: dict[str, tuple[str, str]] = {
    "keybound.coap.authz_server_site": (
        "context_fingerprint",
        "helpers of the AS site, used only inside the module",
    ),
    "keybound.tools.bench.authz_server": ("run", _BENCH),
    "keybound.tools.bench.codec": ("run", _BENCH),
    "keybound.tools.bench.dpop": ("run", _BENCH),
    "keybound.tools.bench.http_sig": ("run", _BENCH),
    "keybound.tools.bench.firmware": ("run firmware_sources", _BENCH + "; the firmware's sources"),
    "keybound.tools.bench.oscore": ("run", _BENCH),
    "keybound.tools.bench.resource_server": ("run", _BENCH),
    "keybound.tools.bench.size": ("run", _BENCH),
    "keybound.tools.bench.startup": ("run", _BENCH),
    "keybound.tools.cli.app": ("demo_command key_generate main_callback package_version", _TYPER),
    "keybound.tools.cli.as_commands": (
        "client_add client_add_tls client_rekey init list_all remove revoke rotate_key rs_add "
        "serve show trl_command",
        _TYPER,
    ),
    "keybound.tools.cli.device_commands": ("bundle_command flash_command keygen_command", _TYPER),
    "keybound.tools.cli.token_commands": ("inspect_command mint_command", _TYPER),
    "keybound.tools.tokens.inspection": (
        "inspect_cwt inspect_jwt",
        "the two halves of inspect(), used only inside the module",
    ),
}


def top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The module's statements, looking into top-level ``if`` and ``try`` blocks."""
    for node in body:
        if isinstance(node, ast.If):
            yield from top_level(node.body)
            yield from top_level(node.orelse)
        elif isinstance(node, ast.Try):
            yield from top_level(node.body)
            for handler in node.handlers:
                yield from top_level(handler.body)
            yield from top_level(node.orelse)
            yield from top_level(node.finalbody)
        else:
            yield node


@dataclass(frozen=True)
class Surface:
    declared: tuple[str, ...] | None  # __all__, None without one
    functions_and_classes: frozenset[str]  # public-named def and class statements
    reexports: frozenset[str]  # public names imported from keybound.*
    bound: frozenset[str]  # every name the module binds at the top level


def surface(module: Module) -> Surface:
    declared: tuple[str, ...] | None = None
    defs: set[str] = set()
    reexports: set[str] = set()
    bound: set[str] = set()
    for node in top_level(module.tree.body):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
            if not node.name.startswith("_"):
                defs.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {part.id for target in targets for part in ast.walk(target)
                     if isinstance(part, ast.Name)}  # fmt: skip
            if "__all__" in names and node.value is not None:
                declared = tuple(ast.literal_eval(node.value))
            bound |= names
        elif isinstance(node, ast.Import):
            bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            names = {alias.asname or alias.name for alias in node.names}
            bound |= names
            if node.level or within(node.module or "", "keybound"):
                reexports |= {name for name in names if not name.startswith("_")}
    return Surface(declared, frozenset(defs), frozenset(reexports), frozenset(bound))


DECLARING = [module for module in all_modules() if surface(module).declared is not None]


@pytest.mark.parametrize("module", DECLARING, ids=[module.name for module in DECLARING])
def test_all_is_exact(module: Module) -> None:
    """Every ``__all__`` entry exists; every public function and class is in ``__all__``; in
    a package's ``__init__``, ``__all__`` is exactly what it defines and re-exports."""
    found = surface(module)
    assert found.declared is not None
    declared = set(found.declared)
    assert len(declared) == len(found.declared), f"__all__ repeats a name: {found.declared}"
    assert declared <= found.bound, f"in __all__, not defined: {sorted(declared - found.bound)}"
    mod = importlib.import_module(module.name)
    assert all(hasattr(mod, name) for name in declared)
    allowed = set(ALL_EXCEPTIONS.get(module.name, ("", ""))[0].split())
    missing = found.functions_and_classes - declared
    assert missing <= allowed, f"public but not in __all__: {sorted(missing - allowed)}"
    assert allowed <= missing, f"delete from ALL_EXCEPTIONS: {sorted(allowed - missing)}"
    if module.path.name == "__init__.py":
        public = found.functions_and_classes | found.reexports
        assert declared == public, (
            f"the facade's public names {sorted(public)} differ from __all__ {sorted(declared)}"
        )


def test_every_exception_names_a_module_with_all() -> None:
    assert set(ALL_EXCEPTIONS) <= {module.name for module in DECLARING}


# ---- the test tree ------------------------------------------------------------------------------


def test_helpers_hold_no_fixtures_and_no_test_imports_a_test_or_conftest() -> None:
    """Fixtures live in conftest.py files (pytest finds them by name); tests/helpers holds
    plain code; no module imports a conftest or a test module."""
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        where = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if path.parent.name == "helpers" and isinstance(
                node, ast.FunctionDef | ast.AsyncFunctionDef
            ):
                for decorator in node.decorator_list:
                    target = decorator.func if isinstance(decorator, ast.Call) else decorator
                    if ast.unparse(target) in ("pytest.fixture", "fixture"):
                        wrong.append(f"{where}:{node.lineno} fixture {node.name}")
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            for name in names:
                parts = name.split(".")
                ours = parts[0] == "tests" and any(p.startswith("test_") for p in parts[1:3])
                if parts[0] == "conftest" or "conftest" in parts[:3] or ours:
                    wrong.append(f"{where}:{node.lineno} imports {name}")
    assert not wrong, "\n".join(wrong)
