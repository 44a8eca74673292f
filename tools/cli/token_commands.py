"""``keybound token ...``: inspect and mint access tokens."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from keybound.core import cwt
from keybound.core.errors import DecodeError, InvalidClaim
from keybound.core.keys import b64u_encode
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.token import AccessToken
from keybound.tools.cli.support import clean_errors, console
from keybound.tools.cli.token_inspect import inspect, read_token_argument
from keybound.tools.keyfiles import read_key

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
    keys = [read_key(p) for p in key or []]
    result = inspect(read_token_argument(token), keys)
    if as_json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=False))
        return
    status = "[green]verified[/]" if result.verified else "[yellow]not verified[/]"
    console.print(f"[bold]{result.format.upper()}[/] ({result.size} bytes), {status}")
    if result.format == "cwt":
        for layer in result.layers:
            console.print(
                f"  {layer['type']} alg={layer['alg']} kid={layer['kid']}"
                f"{' tagged' if layer['tagged'] else ''}"
            )
        if result.cwt_tag:
            console.print("  wrapped in the CWT tag 61")
    else:
        console.print(f"  header {json.dumps(result.header)}", markup=False)
    if result.claims is not None:
        table = Table("claim", "value", title="claims")
        for name, value in result.claims.items():
            shown = value if isinstance(value, str) else json.dumps(value)
            table.add_row(name, shown)
        console.print(table)
    if result.note:
        console.print(f"[dim]{result.note}[/]")
    if result.diagnostic:
        console.print("[bold]CBOR diagnostic notation[/]")
        console.print(result.diagnostic, markup=False, soft_wrap=True)


def claims_from_json(data: dict[str, Any], *, now: int, lifetime: int | None) -> AccessToken:
    """An :class:`AccessToken` from a claims file: names as in a JWT; byte strings in hex."""
    if not isinstance(data, dict):
        raise DecodeError("the claims file must hold a JSON object")
    claims = dict(data)
    if "cti" in claims:
        cti = claims.pop("cti")
        if not isinstance(cti, str):
            raise InvalidClaim("cti must be hex text", claim="cti")
        claims["jti"] = b64u_encode(bytes.fromhex(cti))
    if "cnonce" in claims and isinstance(claims["cnonce"], str):
        claims["cnonce"] = b64u_encode(bytes.fromhex(claims["cnonce"]))
    if lifetime is not None:
        claims.setdefault("iat", now)
        claims["exp"] = now + lifetime
    return AccessToken.from_jwt_claims(claims)


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
    try:
        data = json.loads(claims.read_text())
    except ValueError as exc:
        raise DecodeError(f"{claims}: not JSON: {exc}") from exc
    token = claims_from_json(data, now=int(time.time()), lifetime=lifetime)
    signing_key = read_key(key)
    if fmt == "jwt":
        from keybound.core import jwt  # noqa: PLC0415 - JOSE only when minting a JWT

        if protection in ("", "jws"):
            print(jwt.encode(token, signing_key, alg=alg))
        elif protection == "jwe":
            print(jwt.encode_encrypted(token, signing_key))
        else:
            raise DecodeError(f"JWT protection must be jws or jwe, not {protection!r}")
        return
    if fmt != "cwt":
        raise DecodeError(f"format must be cwt or jwt, not {fmt!r}")
    try:
        chosen = Algorithm.from_name(alg) if alg else None
    except KeyError:
        raise ValueError(f"--alg: unknown COSE algorithm {alg!r}") from None
    prot: cwt.Protection
    protection = protection or ("mac0" if signing_key.is_symmetric else "sign1")
    if protection == "sign1":
        prot = cwt.Sign1(signing_key, chosen)
    elif protection == "mac0":
        prot = cwt.Mac0(signing_key, chosen or Algorithm.HMAC_256_64)
    elif protection == "encrypt0":
        prot = cwt.Encrypt0(signing_key, chosen or Algorithm.AES_CCM_16_64_128)
    else:
        raise DecodeError(f"CWT protection must be sign1, mac0 or encrypt0, not {protection!r}")
    out = cwt.encode(token, prot, cwt_tag=cwt_tag)
    print(out.hex() if encoding == "hex" else b64u_encode(out))


__all__ = ["app", "claims_from_json"]
