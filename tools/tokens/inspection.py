"""What ``keybound token inspect`` shows: detection, unverified view, verification."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from keybound.core import cbor, cose, cwt
from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.keys import Key, b64u_decode
from keybound.core.numbers.cose_headers import CoseTag, HeaderParameter
from keybound.core.numbers.cwt_claims import CWT_TAG
from keybound.core.token import AccessToken

MAX_TOKEN_INPUT = 64 * 1024
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_B64U = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


@dataclass
class Inspection:
    format: str
    verified: bool
    alg: str | None
    kid: str | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)
    cwt_tag: bool = False
    claims: dict[str, Any] | None = None
    note: str = ""
    diagnostic: str | None = None
    header: dict[str, Any] | None = None
    size: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": self.format,
            "verified": self.verified,
            "alg": self.alg,
            "kid": self.kid,
            "size": self.size,
            "claims": self.claims,
        }
        if self.format == "cwt":
            out["layers"] = self.layers
            out["cwt_tag"] = self.cwt_tag
            out["diagnostic"] = self.diagnostic
        else:
            out["header"] = self.header
        if self.note:
            out["note"] = self.note
        return out


def read_token_argument(arg: str) -> str | bytes:
    """TOKEN as given: ``@path``, hex, a compact JWT, or base64url. Returns text (JWT) or bytes."""
    if arg.startswith("@"):
        path = Path(arg[1:])
        try:
            if path.stat().st_size > MAX_TOKEN_INPUT:
                raise DecodeError(f"{path}: larger than {MAX_TOKEN_INPUT} bytes")
            raw = path.read_bytes()
        except OSError as exc:
            raise DecodeError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            return raw
        if not text:
            raise DecodeError(f"{path} is empty")
        return read_token_argument(text) if not text.startswith("@") else raw
    text = arg.strip()
    if len(text) > 2 * MAX_TOKEN_INPUT:
        raise DecodeError("token argument too long")
    if text.count(".") in (2, 4) and all(_B64U.match(p) for p in text.split(".") if p):
        return text
    if _HEX.match(text):
        return bytes.fromhex(text)
    if _B64U.match(text) or re.match(r"^[A-Za-z0-9+/]+={0,2}$", text):
        try:
            return base64.urlsafe_b64decode(
                text.replace("+", "-").replace("/", "_").rstrip("=")
                + "=" * (-len(text.rstrip("=")) % 4)
            )
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"not hex, base64url or a JWT: {exc}") from exc
    raise DecodeError("TOKEN is not hex, base64url, a compact JWT or @file")


def _diagnostic(data: bytes) -> str | None:
    try:
        import cbor_diag  # noqa: PLC0415 - optional at run time, imported only when shown

        return str(cbor_diag.cbor2diag(data))
    except Exception:  # cbor-diag raises its own error types on exotic input
        return None


def _kid_text(kid: object) -> str | None:
    if not isinstance(kid, bytes):
        return None
    try:
        text = kid.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return kid.hex()


def inspect_cwt(data: bytes, keys: Sequence[Key]) -> Inspection:
    obj = cbor.loads(data, max_size=MAX_TOKEN_INPUT)
    result = Inspection("cwt", False, None, size=len(data), diagnostic=_diagnostic(data))
    if isinstance(obj, cbor2.CBORTag) and obj.tag == CWT_TAG:
        result.cwt_tag, obj = True, obj.value
    if keys:
        decoded = cwt.decode(data, list(keys), max_size=MAX_TOKEN_INPUT)
        result.verified = True
        result.layers = [
            {
                "type": layer.kind.name,
                "alg": layer.alg.value.name,
                "kid": _kid_text(layer.kid),
                "tagged": layer.tagged,
            }
            for layer in decoded.layers
        ]
        result.alg = result.layers[-1]["alg"]
        result.kid = result.layers[0]["kid"]
        result.claims = decoded.token.describe()
        return result
    parsed = cose.parse(
        obj,
        expected=None if isinstance(obj, cbor2.CBORTag) else CoseTag.SIGN1,
        max_size=MAX_TOKEN_INPUT,
    )
    kid = parsed.protected.get(HeaderParameter.KID, parsed.unprotected.get(HeaderParameter.KID))
    result.alg = parsed.alg.value.name
    result.kid = _kid_text(kid)
    result.layers = [
        {"type": parsed.kind.name, "alg": result.alg, "kid": result.kid, "tagged": parsed.tagged}
    ]
    if parsed.kind == CoseTag.ENCRYPT0:
        result.note = "encrypted: give --key with the recipient's key to read the claims"
        return result
    payload = cbor.loads(parsed.items[2], max_size=MAX_TOKEN_INPUT)
    if isinstance(payload, dict):
        result.claims = AccessToken.from_cwt_claims(payload).describe()
    result.note = "unverified: give --key to check the signature or MAC"
    return result


def inspect_jwt(token: str, keys: Sequence[Key]) -> Inspection:
    parts = token.split(".")
    try:
        header = json.loads(b64u_decode(parts[0]))
    except (ValueError, KeyboundError) as exc:
        raise DecodeError(f"invalid JOSE header: {exc}") from exc
    if not isinstance(header, dict):
        raise DecodeError("the JOSE header must be a JSON object")
    result = Inspection("jwt", False, str(header.get("alg")), size=len(token), header=header)
    result.kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    if keys:
        from keybound.core import jwt  # noqa: PLC0415 - JOSE only for a JWT: a CWT starts faster

        decoded = jwt.decode(token, list(keys))
        result.verified = True
        result.claims = decoded.token.describe()
        return result
    if len(parts) == 5:
        result.note = "encrypted (JWE): give --key with the recipient's key to read the claims"
        return result
    try:
        claims = json.loads(b64u_decode(parts[1]))
    except (ValueError, KeyboundError) as exc:
        raise DecodeError(f"the JWT payload is not JSON: {exc}") from exc
    result.claims = AccessToken.from_jwt_claims(claims).describe()
    result.note = "unverified: give --key to check the signature"
    return result


def inspect(token: str | bytes, keys: Sequence[Key]) -> Inspection:
    if isinstance(token, str):
        return inspect_jwt(token, keys)
    return inspect_cwt(token, keys)


__all__ = ["Inspection", "inspect", "read_token_argument"]
