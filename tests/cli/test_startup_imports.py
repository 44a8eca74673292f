"""What ``keybound token inspect`` loads: the token code, not the servers' libraries.

A structural check of the start-up work (timings are ``keybound bench --only startup``):
the command runs in a fresh interpreter, which then lists the modules it imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

from keybound.core import cwt
from keybound.core.keys import Key
from keybound.core.token import AccessToken
from keybound.tools.cli.plain_params import use_plain_conversions
from keybound.tools.keyfiles import write_key

#: Libraries of the servers, the HTTP client and typer's value adapters.
HEAVY = ("starlette", "uvicorn", "sqlalchemy", "aiocoap", "httpx", "pydantic", "joserfc")

SCRIPT = """\
import json, sys
from keybound.tools.cli.app import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(*args: str) -> tuple[int, list[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    return report["code"], report["modules"], proc.stdout


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if m.split(".")[0] in names]


@pytest.mark.parametrize("as_json", [False, True])
def test_token_inspect_loads_no_server_library(tmp_path: Path, as_json: bool) -> None:
    key = Key.generate_symmetric(32, random_bytes=os.urandom, kid=b"k")
    token = cwt.encode(AccessToken(iss="as", aud=("rs",), exp=2**31), cwt.Mac0(key))
    write_key(tmp_path / "key.jwk", key)
    args = ["token", "inspect", token.hex(), "--key", str(tmp_path / "key.jwk")]
    code, modules, out = _run(*args, *(["--json"] if as_json else []))
    assert code == 0
    assert ("verified" in out) if not as_json else json.loads(out)["verified"] is True
    assert _loaded(modules, HEAVY) == []
    assert "keybound.tools.authz_server" not in modules
    assert "keybound.tools.resource_server" not in modules
    assert _loaded(modules, ("rich",)) == []  # printed plainly, for a person and a pipe alike


def test_version_and_help_load_no_command_group() -> None:
    for args in (["--version"], ["--help"]):
        code, modules, _ = _run(*args)
        assert code == 0
        assert _loaded(modules, HEAVY) == []
        assert [m for m in modules if m.startswith("keybound.core")] == []
        assert _loaded(modules, ("rich",)) == []  # click's plain help, not rich's panels


def test_help_is_plain_and_not_wrapped_at_80_columns() -> None:
    code, _, out = _run("as", "--help")
    assert code == 0
    assert "─" not in out  # no rich box drawing
    assert "╭" not in out
    # A pipe gets lines up to 120 columns: this command's summary is not cut at 80.
    line = next(line for line in out.splitlines() if line.strip().startswith("serve "))
    assert len(line) > 80
    assert "one event loop" in line


def test_plain_conversions_give_what_typer_gives(tmp_path: Path) -> None:
    """The same values (and the same refusals) with and without the plain conversions."""
    app = typer.Typer()

    @app.command()
    def show(
        text: str,
        paths: Annotated[list[Path] | None, typer.Option("--path")] = None,
        one: Annotated[Path | None, typer.Option("--one")] = None,
        real: Annotated[Path | None, typer.Option("--real", exists=True)] = None,
        flag: bool = False,
    ) -> None:
        print(repr((text, paths, one, real, flag)))

    @app.command()
    def other() -> None:
        """A second command, so that typer makes a group."""

    plain = typer.main.get_command(app)
    use_plain_conversions(plain)
    assert plain.commands["show"].params[0]._runtime_param is not None  # type: ignore[attr-defined]
    for args in (
        ["show", "abc"],
        ["show", "a b", "--path", "x/y", "--path", str(tmp_path), "--one", "z", "--flag"],
        ["show", "t", "--real", str(tmp_path)],
        ["show", "t", "--real", str(tmp_path / "missing")],
        ["show"],
    ):
        assert _outcome(plain, args) == _outcome(typer.main.get_command(app), args), args


def _outcome(command: Any, args: list[str]) -> tuple[str, str]:
    """What ``command`` printed, or the refusal it raised (its class and message)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            command.main(args, prog_name="show", standalone_mode=False)
    except Exception as exc:  # a usage error: compared by class and message
        return type(exc).__name__, exc.format_message() if hasattr(exc, "format_message") else ""
    return "printed", out.getvalue()


def test_the_version_is_the_packages() -> None:
    """``keybound --version`` prints the constant; it must be what pyproject.toml and the
    installed metadata say."""
    import tomllib
    from importlib.metadata import version

    from keybound.tools import __version__
    from tests.helpers.paths import ROOT

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert __version__ == declared == version("keybound")
    code, modules, out = _run("--version")
    assert code == 0
    assert out.strip() == f"keybound {__version__}"
    assert "importlib.metadata" not in modules
