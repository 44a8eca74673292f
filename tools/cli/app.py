"""The ``keybound`` command line (typer + rich)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer import _click as click

from keybound.tools.cli.plain_params import use_plain_conversions
from keybound.tools.cli.support import EXIT_BAD_INPUT, clean_errors, console, fail

#: The command groups: module holding the ``app``, and the help shown by
#: ``keybound --help``. A group's module is imported only when it runs, so that
#: ``--help``, ``--version`` and ``token inspect`` start fast.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "token": ("keybound.tools.cli.token_commands", "Inspect and mint access tokens (CWT and JWT)."),
    "as": (
        "keybound.tools.cli.as_commands",
        "The desktop Authorization Server: keys, resource servers, clients, serving.",
    ),
    "rs": ("keybound.tools.cli.rs_commands", "Run the CoAP Resource Server (ACE OSCORE profile)."),
    "client": (
        "keybound.tools.cli.client_commands",
        "Call resource servers with proof-of-possession tokens.",
    ),
    "device": (
        "keybound.tools.cli.device_commands",
        "Devices: write a device bundle, flash the MicroPython firmware.",
    ),
}
BENCH_HELP = (
    "Measure what keybound costs: token sizes, codec, DPoP and RS timings against baselines."
)

app = typer.Typer(
    help="keybound: proof-of-possession access tokens (ACE-OAuth, OSCORE profile, DPoP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
key_app = typer.Typer(help="Generate and show keys.", no_args_is_help=True)
app.add_typer(key_app, name="key")


def _chosen(argv: Sequence[str]) -> str | None:
    """The command group ARGV runs (its first word that is not an option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_app(argv: Sequence[str] | None = None) -> typer.Typer:
    """The CLI with the group ARGV runs loaded for real; all of them when ``argv`` is None."""
    chosen = None if argv is None else _chosen(argv)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if argv is None or name == chosen:
            sub = importlib.import_module(module_name).app
        else:
            sub = typer.Typer(help=help_text)  # a stand-in: listed by --help, never run
        app.add_typer(sub, name=name)
    if argv is None or chosen == "bench":
        from keybound.tools.cli import bench_commands as bench_cli  # noqa: PLC0415 - loaded when it runs

        app.command("bench")(bench_cli.bench_command)
    else:
        app.command("bench", help=BENCH_HELP)(_stand_in)
    return app


def _stand_in() -> None:  # pragma: no cover - never run: build_app loads the real command
    raise AssertionError("a stand-in command ran")


def package_version() -> str:
    """keybound's version (:data:`keybound.tools.__version__`)."""
    from keybound.tools import __version__  # noqa: PLC0415 - the package is loaded already

    return __version__


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
    force: Annotated[bool, typer.Option("--force", help="replace an existing file")] = False,
    ccs: Annotated[
        bool,
        typer.Option(
            "--ccs",
            help="p256 only: an EDHOC key; also write OUT.ccs, the public credential (CCS)",
        ),
    ] = False,
    subject: Annotated[
        str | None, typer.Option("--subject", help="with --ccs: the credential's sub claim")
    ] = None,
    signing: Annotated[
        bool,
        typer.Option(
            "--signing",
            help="with --ccs: a signature key (ES256, EDHOC method 0) instead of static DH",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Generate a key and write it (with its private part) to OUT, readable by you only.

    An existing OUT is never replaced without ``--force``. With ``--ccs`` OUT holds the
    private key as a COSE_Key (kty, crv, d) and OUT.ccs the public EDHOC credential, a
    CWT Claims Set with the COSE_Key in ``cnf`` (RFC 8392, RFC 9528 §3.5.2): give that
    one to the AS (``keybound as client add --credential``). The key is a static DH key
    (EDHOC method 3) unless ``--signing`` makes it an ES256 signature key (method 0 when
    both parties sign; 1 or 2 when one does).
    """
    if signing and not ccs:
        raise ValueError("--signing needs --ccs")
    if ccs:
        from keybound.tools.keyfiles import write_edhoc_key  # noqa: PLC0415 - import time

        if kind != "p256":
            raise ValueError("--ccs needs --type p256 (EDHOC cipher suite 2)")
        written = write_edhoc_key(
            out,
            kid=kid.encode() if kid else None,
            subject=subject,
            overwrite=force,
            signing=signing,
        )
        if as_json:
            import json  # noqa: PLC0415 - import time

            info = {
                "path": str(out),
                "credential": str(written.path),
                "type": kind,
                "kid": written.ccs.kid.hex(),
                "credential_bytes": len(written.ccs.encoded),
                "signing": signing,
            }
            print(json.dumps(info, indent=2, sort_keys=True))
            return
        console.print(
            f"wrote p256 EDHOC {'signature' if signing else 'static DH'} key to {out} "
            f"(mode 0600) and its credential to {written.path} "
            f"({len(written.ccs.encoded)} bytes, kid {written.ccs.kid.hex()})"
        )
        return
    from keybound.core.keys import Key  # noqa: PLC0415 - import time
    from keybound.core.numbers.cose_keys import Curve  # noqa: PLC0415
    from keybound.tools.keyfiles import write_key  # noqa: PLC0415

    kid_bytes = kid.encode() if kid else None
    makers = {
        "p256": lambda: Key.generate_ec2(Curve.P_256, kid=kid_bytes),
        "p384": lambda: Key.generate_ec2(Curve.P_384, kid=kid_bytes),
        "ed25519": lambda: Key.generate_okp(Curve.ED25519, kid=kid_bytes),
        "x25519": lambda: Key.generate_okp(Curve.X25519, kid=kid_bytes),
        "symmetric": lambda: Key.generate_symmetric(size, random_bytes=os.urandom, kid=kid_bytes),
    }
    if kind not in makers:
        raise ValueError(f"unknown key type {kind!r}; choose one of {', '.join(makers)}")
    key = makers[kind]()
    write_key(out, key, fmt=fmt, overwrite=force)
    if as_json:
        import json  # noqa: PLC0415 - import time

        info = {
            "path": str(out),
            "type": kind,
            "format": fmt,
            "jwk_thumbprint": key.jwk_thumbprint(),
        }
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    console.print(f"wrote {kind} key to {out} (mode 0600); JWK thumbprint {key.jwk_thumbprint()}")


@app.command("demo")
@clean_errors
def demo_command(
    profile: Annotated[
        str, typer.Option("--profile", help="oscore (default), edhoc, or both")
    ] = "oscore",
) -> None:
    """Show keybound at work on this machine (see README: Quick start)."""
    if profile not in ("oscore", "edhoc", "both"):
        raise ValueError(f"unknown profile {profile!r}; choose oscore, edhoc or both")
    if profile in ("oscore", "both"):
        from keybound.tools import demo  # noqa: PLC0415 - the demo pulls in more than others

        demo.run()
    if profile in ("edhoc", "both"):
        from keybound.tools import demo_edhoc  # noqa: PLC0415

        demo_edhoc.run()


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: usage errors are one line too."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = typer.main.get_command(build_app(args))
    use_plain_conversions(command)
    plain_help(command)
    try:
        result: Any = command.main(
            args, prog_name="keybound", standalone_mode=False, **_help_width()
        )
    except click.exceptions.NoArgsIsHelpError as exc:  # the help was the answer
        if exc.format_message():
            print(exc.format_message())
        raise SystemExit(EXIT_BAD_INPUT) from None
    except click.exceptions.UsageError as exc:
        where = exc.ctx.command_path.removeprefix("keybound").strip() if exc.ctx else ""
        prefix = f"{where}: " if where else ""
        raise SystemExit(_fail_code(f"{prefix}{exc.format_message()} (see --help)")) from None
    except click.exceptions.ClickException as exc:
        raise SystemExit(_fail_code(exc.format_message())) from None
    except typer.Abort:
        raise SystemExit(_fail_code("aborted", 1)) from None
    sys.exit(result if isinstance(result, int) else 0)


def _help_width() -> dict[str, Any]:
    """Help as wide as the terminal (up to 120 columns); a pipe gets 120, never 80."""
    if sys.stdout.isatty():
        return {"max_content_width": 120}
    return {"terminal_width": 120, "max_content_width": 120}


def plain_help(command: Any) -> None:
    """Have ``command`` and its subcommands print click's plain help, not rich panels.

    Drawing help with rich loads rich's markdown, traceback and layout modules: that
    doubled the CPU time of ``keybound --help`` (``keybound bench --only startup``).
    Plain help is also what a pipe or a pager wants.
    """
    if hasattr(command, "rich_markup_mode"):
        command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


def _fail_code(message: str, code: int = EXIT_BAD_INPUT) -> int:
    return fail(message, code).exit_code


__all__ = ["SUBCOMMANDS", "app", "build_app", "main", "plain_help"]
