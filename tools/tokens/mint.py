"""Test tokens from a claims file and a key (``keybound token mint``).

The claims file holds a JSON object with the claims' JWT names; byte strings
(``cti``, ``cnonce``) are hex. The token is a CWT (COSE_Sign1, COSE_Mac0 or
COSE_Encrypt0) or a JWT (JWS or JWE).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from keybound.core.errors import DecodeError, InvalidClaim
from keybound.core.keys import Key, b64u_encode
from keybound.core.token import AccessToken

__all__ = ["claims_from_json", "mint", "read_claims"]


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


def read_claims(path: Path, *, lifetime: int | None) -> AccessToken:
    """The token of the claims file ``path``; with ``lifetime``, iat now and exp after it."""
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise DecodeError(f"{path}: not JSON: {exc}") from exc
    return claims_from_json(data, now=int(time.time()), lifetime=lifetime)


def mint(
    token: AccessToken,
    key: Key,
    *,
    fmt: str = "cwt",
    protection: str = "",
    alg: str | None = None,
    cwt_tag: bool = False,
    encoding: str = "hex",
) -> str:
    """``token`` protected with ``key``, as text: a compact JWT, or a CWT in hex or base64url.

    ``protection`` is sign1, mac0 or encrypt0 for a CWT (default: mac0 with a
    symmetric key, else sign1), jws or jwe for a JWT (default jws).
    """
    if fmt == "jwt":
        from keybound.core import jwt  # noqa: PLC0415 - JOSE only when minting a JWT

        if protection in ("", "jws"):
            return jwt.encode(token, key, alg=alg)
        if protection == "jwe":
            return jwt.encode_encrypted(token, key)
        raise DecodeError(f"JWT protection must be jws or jwe, not {protection!r}")
    if fmt != "cwt":
        raise DecodeError(f"format must be cwt or jwt, not {fmt!r}")
    from keybound.core import cwt  # noqa: PLC0415 - COSE only when minting a CWT
    from keybound.core.numbers.cose_algorithms import Algorithm  # noqa: PLC0415

    try:
        chosen = Algorithm.from_name(alg) if alg else None
    except KeyError:
        raise ValueError(f"--alg: unknown COSE algorithm {alg!r}") from None
    prot: cwt.Protection
    protection = protection or ("mac0" if key.is_symmetric else "sign1")
    if protection == "sign1":
        prot = cwt.Sign1(key, chosen)
    elif protection == "mac0":
        prot = cwt.Mac0(key, chosen or Algorithm.HMAC_256_64)
    elif protection == "encrypt0":
        prot = cwt.Encrypt0(key, chosen or Algorithm.AES_CCM_16_64_128)
    else:
        raise DecodeError(f"CWT protection must be sign1, mac0 or encrypt0, not {protection!r}")
    out = cwt.encode(token, prot, cwt_tag=cwt_tag, random_bytes=os.urandom)
    return out.hex() if encoding == "hex" else b64u_encode(out)
