"""``keybound demo``: what keybound does, shown step by step on this machine.

Today it runs the token round trip of the shared model: one access token bound
to a P-256 key, as a CWT (COSE_Sign1, ES256) and as a JWT (JWS, ES256), both
verified and compared. The full ACE flow (AS, RS and client on loopback) takes
its place when the resource server lands.
"""

from __future__ import annotations

import time

from keybound.core import cwt, jwt
from keybound.core.keys import Key
from keybound.core.scope import Scope
from keybound.core.token import AccessToken, CnfKey
from keybound.core.validation import validate
from keybound.tools.cli_support import console


def token_round_trip() -> tuple[int, int]:
    """Mint, encode, decode and validate one token both ways; return (CWT bytes, JWT bytes)."""
    now = int(time.time())
    as_key = Key.generate_ec2(kid=b"as-demo")
    pop_key = Key.generate_ec2()
    console.print("[bold]1.[/] the AS signing key and the client's proof-of-possession key (P-256)")
    token = AccessToken(
        iss="coap://as.example",
        aud=("coap://rs.example",),
        iat=now,
        exp=now + 3600,
        cti=b"\x0b\x71",
        scope=Scope.from_claim("temp.read"),
        cnf=CnfKey(pop_key.public_key()),
    )
    console.print(f"[bold]2.[/] the token: {token.describe()}", markup=True, soft_wrap=True)
    as_cwt = cwt.encode(token, cwt.Sign1(as_key))
    as_jwt = jwt.encode(token, as_key)
    console.print(f"[bold]3.[/] as CWT (COSE_Sign1 ES256): {len(as_cwt)} bytes")
    console.print(f"   as JWT (JWS ES256):        {len(as_jwt)} bytes")
    from_cwt = cwt.decode(as_cwt, as_key.public_key()).token
    from_jwt = jwt.decode(as_jwt, as_key.public_key()).token
    validate(from_cwt, now=now, audience="coap://rs.example", issuer="coap://as.example")
    validate(from_jwt, now=now, audience="coap://rs.example", issuer="coap://as.example")
    if not from_cwt == from_jwt == token:
        raise RuntimeError("the CWT and the JWT decoded to different tokens")
    console.print(
        "[bold]4.[/] both verified with the AS public key, validated, and equal to the model"
    )
    console.print(
        f"   bound key thumbprint (RFC 7638): {pop_key.jwk_thumbprint()}; "
        f"CWT is {len(as_cwt) / len(as_jwt):.0%} of the JWT's size"
    )
    return len(as_cwt), len(as_jwt)


def run() -> None:
    console.rule("keybound demo: one token model, CWT and JWT")
    token_round_trip()
    console.print("[green]done[/]")


__all__ = ["run", "token_round_trip"]
