"""The ``keybound`` command line (typer + rich)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer

from keybound.core.keys import Key
from keybound.core.numbers.cose_keys import Curve
from keybound.tools import as_cli, bench_cli, client_cli, device_cli, rs_cli, token_cli
from keybound.tools.cli_support import clean_errors, console
from keybound.tools.keyfiles import write_key

app = typer.Typer(
    help="keybound: proof-of-possession access tokens (ACE-OAuth, OSCORE profile, DPoP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(token_cli.app, name="token")
app.add_typer(as_cli.app, name="as")
app.add_typer(rs_cli.app, name="rs")
app.add_typer(client_cli.app, name="client")
app.add_typer(device_cli.app, name="device")
app.command("bench")(bench_cli.bench_command)
key_app = typer.Typer(help="Generate and show keys.", no_args_is_help=True)
app.add_typer(key_app, name="key")


def package_version() -> str:
    try:
        return version("keybound")
    except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
        return "0+unknown"


def _version(value: bool) -> None:
    if value:
        print(f"keybound {package_version()}")
        raise typer.Exit()


@app.callback()
def main_callback(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """keybound: proof-of-possession access tokens for constrained devices and HTTP."""


@key_app.command("generate")
@clean_errors
def key_generate(
    out: Annotated[Path, typer.Argument(help="file to write (0600)")],
    kind: Annotated[
        str, typer.Option("--type", "-t", help="p256, p384, ed25519, x25519 or symmetric")
    ] = "p256",
    size: Annotated[int, typer.Option("--size", help="symmetric key bytes")] = 16,
    kid: Annotated[str | None, typer.Option("--kid", help="key identifier")] = None,
    fmt: Annotated[str, typer.Option("--format", help="jwk or cose")] = "jwk",
) -> None:
    """Generate a key and write it (with its private part) to OUT, readable by you only."""
    kid_bytes = kid.encode() if kid else None
    makers = {
        "p256": lambda: Key.generate_ec2(Curve.P_256, kid=kid_bytes),
        "p384": lambda: Key.generate_ec2(Curve.P_384, kid=kid_bytes),
        "ed25519": lambda: Key.generate_okp(Curve.ED25519, kid=kid_bytes),
        "x25519": lambda: Key.generate_okp(Curve.X25519, kid=kid_bytes),
        "symmetric": lambda: Key.generate_symmetric(size, kid=kid_bytes),
    }
    if kind not in makers:
        raise ValueError(f"unknown key type {kind!r}; choose one of {', '.join(makers)}")
    key = makers[kind]()
    write_key(out, key, fmt=fmt)
    console.print(f"wrote {kind} key to {out} (mode 0600); JWK thumbprint {key.jwk_thumbprint()}")


@app.command("demo")
@clean_errors
def demo_command() -> None:
    """Show keybound at work on this machine (see README: Quick start)."""
    from keybound.tools import demo  # noqa: PLC0415 - the demo pulls in more than other commands

    demo.run()


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
