"""``keybound token ...``: inspect and mint access tokens.

The work is done by :mod:`keybound.tools.tokens`. ``token inspect`` is the command
people run most often at a shell: this module imports only typer at load time, the
token code when a command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keybound.tools.cli.support import clean_errors

app = typer.Typer(help="Inspect and mint access tokens (CWT and JWT).", no_args_is_help=True)


@app.command("inspect")
@clean_errors
def inspect_command(
    token: Annotated[str, typer.Argument(help="hex, base64url, a compact JWT, or @path")],
    key: Annotated[
        list[Path] | None,
        typer.Option(
            "--key", "-k", help="JWK JSON, COSE_Key (CBOR or hex) or PEM file; repeatable"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Show a token's protection and claims; verify or decrypt it with --key."""
    import json  # noqa: PLC0415 - import time: see the module's docstring

    from keybound.tools.keyfiles import read_key  # noqa: PLC0415
    from keybound.tools.tokens.inspection import inspect, read_token_argument  # noqa: PLC0415

    keys = [read_key(p) for p in key or []]
    result = inspect(read_token_argument(token), keys)
    if as_json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=False))
        return
    # Plain print, not rich: the command people run most at a shell starts faster without it.
    status = "verified" if result.verified else "not verified"
    print(f"{result.format.upper()} ({result.size} bytes), {status}")
    if result.format == "cwt":
        for layer in result.layers:
            tagged = " tagged" if layer["tagged"] else ""
            print(f"  {layer['type']} alg={layer['alg']} kid={layer['kid']}{tagged}")
        if result.cwt_tag:
            print("  wrapped in the CWT tag 61")
    else:
        print(f"  header {json.dumps(result.header)}")
    if result.claims is not None:
        print("claims")
        rows = [
            (name, value if isinstance(value, str) else json.dumps(value))
            for name, value in result.claims.items()
        ]
        width = max((len(name) for name, _ in rows), default=0)
        for name, shown in rows:
            print(f"  {name.ljust(width)}  {shown}")
    if result.note:
        print(result.note)
    if result.diagnostic:
        print("CBOR diagnostic notation")
        print(result.diagnostic)


@app.command("mint")
@clean_errors
def mint_command(
    claims: Annotated[Path, typer.Option("--claims", "-c", help="JSON claims file (JWT names)")],
    key: Annotated[Path, typer.Option("--key", "-k", help="signing, MAC or encryption key file")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="cwt or jwt")] = "cwt",
    protection: Annotated[
        str, typer.Option("--protection", "-p", help="sign1, mac0, encrypt0 (CWT) / jws, jwe (JWT)")
    ] = "",
    alg: Annotated[str | None, typer.Option("--alg", help="algorithm name, e.g. ES256")] = None,
    lifetime: Annotated[
        int | None, typer.Option("--lifetime", help="set iat to now and exp to now + SECONDS")
    ] = None,
    cwt_tag: Annotated[bool, typer.Option("--cwt-tag", help="wrap a CWT in tag 61")] = False,
    encoding: Annotated[str, typer.Option("--encoding", help="hex or base64url (CWT)")] = "hex",
) -> None:
    """Produce a test token from a claims file and a key."""
    from keybound.tools.keyfiles import read_key  # noqa: PLC0415 - import time
    from keybound.tools.tokens.mint import mint, read_claims  # noqa: PLC0415

    minted = read_claims(claims, lifetime=lifetime)
    signing_key = read_key(key)
    print(
        mint(
            minted,
            signing_key,
            fmt=fmt,
            protection=protection,
            alg=alg,
            cwt_tag=cwt_tag,
            encoding=encoding,
        )
    )


__all__ = ["app"]
