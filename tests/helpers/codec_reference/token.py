"""The CWT claims codec of keybound 0.1.0 (``AccessToken`` to and from a claims map).

One addition since: the ``kccs`` confirmation method of the EDHOC profile, which
0.1.0 refused as unknown.

Kept as the reference the current codec is compared with (tests/unit/test_codec_differential.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cbor2

from keybound.core.errors import DecodeError, InvalidClaim, UnsupportedConversion
from keybound.core.keys import Key
from keybound.core.numbers.cnf_methods import CnfMethod
from keybound.core.numbers.cwt_claims import CWTClaim
from keybound.core.numbers.edhoc_profile import CNF_KCCS
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.scope import Scope
from keybound.core.token import (
    MAX_AUDIENCES,
    MAX_TEXT,
    MAX_TIME_CLAIM,
    AccessToken,
    Cnf,
    CnfCkt,
    CnfEncryptedKey,
    CnfKccs,
    CnfKey,
    CnfKid,
    CnfOsc,
)
from tests.helpers.codec_reference import cbor


def _cnf_to_cwt(cnf: Cnf) -> dict[int, Any]:
    if isinstance(cnf, CnfKey):
        include_private = cnf.key.is_symmetric
        return {int(CnfMethod.COSE_KEY): cnf.key.to_cose_key(include_private=include_private)}
    if isinstance(cnf, CnfEncryptedKey):
        if cnf.cose is None:
            raise UnsupportedConversion(
                "a JWE-encrypted cnf key cannot be put in a CWT", claim="cnf"
            )
        return {int(CnfMethod.ENCRYPTED_COSE_KEY): cnf.cose}
    if isinstance(cnf, CnfKid):
        return {int(CnfMethod.KID): cnf.kid}
    if isinstance(cnf, CnfCkt):
        return {int(CnfMethod.CKT): cnf.ckt}
    if isinstance(cnf, CnfOsc):
        return {int(CnfMethod.OSC): cnf.material.to_cbor_map()}
    raise UnsupportedConversion("a JWK thumbprint (jkt) has no CWT cnf method", claim="cnf")


def _cnf_from_cwt(value: Any) -> Cnf:
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidClaim("cnf must be a map with exactly one confirmation method", claim="cnf")
    ((method, body),) = value.items()
    if method == CnfMethod.COSE_KEY and type(method) is int:
        return CnfKey(Key.from_cose_key(body))
    if method == CnfMethod.ENCRYPTED_COSE_KEY:
        if not isinstance(body, list | cbor2.CBORTag):
            raise InvalidClaim("Encrypted_COSE_Key must be a COSE_Encrypt0", claim="cnf")
        return CnfEncryptedKey(cose=body)
    if method == CnfMethod.KID:
        if not isinstance(body, bytes):
            raise InvalidClaim("cnf kid must be a byte string", claim="cnf")
        return CnfKid(body)
    if method == CnfMethod.CKT:
        if not isinstance(body, bytes) or len(body) != 32:
            raise InvalidClaim("cnf ckt must be a 32-byte SHA-256 thumbprint", claim="cnf")
        return CnfCkt(body)
    if method == CnfMethod.OSC:
        if not isinstance(body, dict):
            raise InvalidClaim("cnf osc must be a map", claim="cnf")
        return CnfOsc(OscoreInputMaterial.from_cbor_map(body))
    # Not in 0.1.0: the EDHOC profile's kccs method, read as keybound reads it since.
    if method == CNF_KCCS and type(method) is int:
        if not isinstance(body, dict):
            raise InvalidClaim("cnf kccs must be a CCS map", claim="cnf")
        return CnfKccs(cbor2.dumps(body))
    raise InvalidClaim(f"unsupported cnf method {method!r}", claim="cnf")


def _opt_text(value: Any, claim: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InvalidClaim(f"{claim} must be a text string", claim=claim)
    return value


def _opt_bytes(value: Any, claim: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, bytes) or len(value) > MAX_TEXT:
        raise InvalidClaim(f"{claim} must be a byte string", claim=claim)
    return value


def _opt_int(value: Any, claim: str) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise InvalidClaim(f"{claim} must be an integer", claim=claim)
    return value


def _opt_time(value: Any, claim: str) -> int | None:
    """A NumericDate (RFC 8392 §2, RFC 7519 §2); a float is floored to whole seconds.

    The result lies in 0 to :data:`MAX_TIME_CLAIM`, the bound of every time claim.
    """
    if value is None:
        return None
    if type(value) is float and math.isfinite(value):
        value = math.floor(value)
    if type(value) is not int or not 0 <= value <= MAX_TIME_CLAIM:
        raise InvalidClaim(f"{claim} must be a NumericDate from 0 to {MAX_TIME_CLAIM}", claim=claim)
    return value


def _opt_seconds(value: Any, claim: str) -> int | None:
    """``exi`` (RFC 9200 §5.10.3): an unsigned integer number of seconds, same bound."""
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_TIME_CLAIM:
        raise InvalidClaim(f"{claim} must be an integer from 0 to {MAX_TIME_CLAIM}", claim=claim)
    return value


def _audiences(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (_opt_text(value, "aud") or "",)
    if isinstance(value, list) and 0 < len(value) <= MAX_AUDIENCES:
        return tuple(_opt_text(v, "aud") or "" for v in value)
    raise InvalidClaim("aud must be a text string or a list of them", claim="aud")


def to_cwt_claims(self: AccessToken) -> dict[int | str, Any]:
    """The CWT claims map (RFC 8392 §3; ``aud`` as an array when there are several)."""
    out: dict[int | str, Any] = {}
    if self.iss is not None:
        out[int(CWTClaim.ISS)] = self.iss
    if self.sub is not None:
        out[int(CWTClaim.SUB)] = self.sub
    if self.aud:
        out[int(CWTClaim.AUD)] = self.aud[0] if len(self.aud) == 1 else list(self.aud)
    for claim, value in (
        (CWTClaim.EXP, self.exp),
        (CWTClaim.NBF, self.nbf),
        (CWTClaim.IAT, self.iat),
        (CWTClaim.CTI, self.cti),
    ):
        if value is not None:
            out[int(claim)] = value
    if self.cnf is not None:
        out[int(CWTClaim.CNF)] = _cnf_to_cwt(self.cnf)
    if self.scope is not None:
        out[int(CWTClaim.SCOPE)] = self.scope.to_cwt()
    for claim, value in (
        (CWTClaim.ACE_PROFILE, self.ace_profile),
        (CWTClaim.CNONCE, self.cnonce),
        (CWTClaim.EXI, self.exi),
    ):
        if value is not None:
            out[int(claim)] = value
    for key, value in self.extra.items():
        if key in out:
            raise InvalidClaim(f"extra claim {key!r} collides with a modelled claim")
        out[key] = value
    return out


def to_cwt_payload(self: AccessToken) -> bytes:
    """The deterministic CBOR encoding of :meth:`to_cwt_claims`."""
    return cbor.dumps(to_cwt_claims(self))


def from_cwt_claims(claims: Mapping[Any, Any]) -> AccessToken:
    """Build the model from a decoded CWT claims map, checking each claim's type."""
    if not isinstance(claims, Mapping):
        raise DecodeError("the CWT payload must be a map of claims")
    known = {int(c) for c in CWTClaim}
    values: dict[str, Any] = {}
    extra: dict[Any, Any] = {}
    for key, value in claims.items():
        if type(key) is int and key in known:
            values[CWTClaim(key).name.lower()] = value
        else:
            extra[key] = value
    return AccessToken(
        iss=_opt_text(values.get("iss"), "iss"),
        sub=_opt_text(values.get("sub"), "sub"),
        aud=_audiences(values.get("aud")),
        exp=_opt_time(values.get("exp"), "exp"),
        nbf=_opt_time(values.get("nbf"), "nbf"),
        iat=_opt_time(values.get("iat"), "iat"),
        cti=_opt_bytes(values.get("cti"), "cti"),
        scope=Scope.from_claim(values["scope"]) if "scope" in values else None,
        ace_profile=_opt_int(values.get("ace_profile"), "ace_profile"),
        cnonce=_opt_bytes(values.get("cnonce"), "cnonce"),
        exi=_opt_seconds(values.get("exi"), "exi"),
        cnf=_cnf_from_cwt(values["cnf"]) if "cnf" in values else None,
        extra=extra,
    )
