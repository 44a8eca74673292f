"""The shared access-token model: one :class:`AccessToken` for CWT and JWT.

Claims are those of RFC 8392 §3 / RFC 7519 §4.1 (iss, sub, aud, exp, nbf,
iat, cti/jti), ACE's ``scope``, ``ace_profile``, ``cnonce`` and ``exi``
(RFC 9200 §5.10, §5.10.3), and ``cnf`` (RFC 8747 for CWT, RFC 7800 for JWT,
RFC 9203 for ``osc``, RFC 9449 for ``jkt``, RFC 9679 for ``ckt``).

Time claims (``exp``, ``nbf``, ``iat``: NumericDate, RFC 8392 §2 / RFC 7519 §2;
``exi``: seconds, RFC 9200 §5.10.3) share one bound in both encodings: 0 to
:data:`MAX_TIME_CLAIM` (253402300799, 9999-12-31T23:59:59Z, the last second a
four-digit year and a ``datetime`` can show). A NumericDate may be a finite float
and is floored to whole seconds first; ``exi`` is an unsigned integer. NaN,
infinities, negative values and anything above the bound are ``InvalidClaim``.

The model is immutable. :meth:`AccessToken.to_cwt_claims` /
:meth:`AccessToken.from_cwt_claims` and the ``jwt`` pair convert to and from
the wire claim sets; unknown claims are kept in ``extra``. Where a format
cannot express a value (a COSE thumbprint in a JWT, say) the conversion
raises :class:`~keybound.core.errors.UnsupportedConversion` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, TypeAlias

import cbor2

from . import cbor
from .errors import DecodeError, InvalidClaim, UnsupportedConversion
from .keys import Key, b64u_decode, b64u_encode
from .numbers.cnf_methods import CnfMethod, JwtCnfMethod
from .numbers.cwt_claims import CWTClaim
from .numbers.edhoc_profile import CNF_KCCS
from .oscore_material import OscoreInputMaterial
from .scope import Scope

#: The largest value of any time claim (exp, nbf, iat, exi), in CWT and JWT alike:
#: 9999-12-31T23:59:59Z in seconds since the epoch.
MAX_TIME_CLAIM = 253_402_300_799
MAX_AUDIENCES = 16
MAX_TEXT = 1024

# ---- cnf --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CnfKey:
    """A public key (or, inside an encrypted token, a symmetric key) bound to the token."""

    key: Key


@dataclass(frozen=True)
class CnfEncryptedKey:
    """An encrypted PoP key: COSE_Encrypt0 (RFC 8747 §3.3) or a compact JWE (RFC 7800 §3.3)."""

    cose: Any = None  # the COSE_Encrypt0 structure (array, untagged or tagged)
    jwe: str | None = None


@dataclass(frozen=True)
class CnfKid:
    """A key identifier (RFC 8747 §3.4, RFC 7800 §3.4)."""

    kid: bytes


@dataclass(frozen=True)
class CnfJkt:
    """A JWK SHA-256 thumbprint (RFC 9449 §6.1)."""

    jkt: str


@dataclass(frozen=True)
class CnfX5tS256:
    """The SHA-256 thumbprint of an X.509 client certificate (RFC 8705 §3.1, ``x5t#S256``)."""

    x5t: str


@dataclass(frozen=True)
class CnfCkt:
    """A COSE key thumbprint (RFC 9679 §5.1)."""

    ckt: bytes


@dataclass(frozen=True)
class CnfOsc:
    """OSCORE input material (RFC 9203 §3.2.1)."""

    material: OscoreInputMaterial


@dataclass(frozen=True)
class CnfKccs:
    """An EDHOC authentication credential by value: a CCS with a COSE_Key.

    The ``kccs`` method of draft-ietf-ace-edhoc-oscore-profile (provisional number,
    :mod:`keybound.core.numbers.edhoc_profile`); ``ccs`` is the encoded CCS as EDHOC
    uses it (RFC 9528 §3.5.2), carried as the CCS map itself.
    """

    ccs: bytes


Cnf: TypeAlias = CnfKey | CnfEncryptedKey | CnfKid | CnfJkt | CnfX5tS256 | CnfCkt | CnfOsc | CnfKccs


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
    if isinstance(cnf, CnfKccs):
        return {CNF_KCCS: cbor2.loads(cnf.ccs)}
    if isinstance(cnf, CnfX5tS256):
        raise UnsupportedConversion("a certificate thumbprint has no CWT cnf method", claim="cnf")
    raise UnsupportedConversion("a JWK thumbprint (jkt) has no CWT cnf method", claim="cnf")


_COSE_KEY_METHOD = int(CnfMethod.COSE_KEY)
#: Whether CnfKey still has the one field :func:`_cnf_from_cwt` sets directly.
_DIRECT_CNF_KEY = [f.name for f in fields(CnfKey)] == ["key"]
_new = object.__new__


def _cnf_from_cwt(value: Any) -> Cnf:
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidClaim("cnf must be a map with exactly one confirmation method", claim="cnf")
    ((method, body),) = value.items()
    if method == _COSE_KEY_METHOD and type(method) is int:
        key = _public_cose_key(body)
        if not _DIRECT_CNF_KEY:  # pragma: no cover - guards a future field
            return CnfKey(key)
        # CnfKey(key) without the frozen dataclass's setattr; one key assigned rather than
        # frozen_record's update, so the record kept with the token keeps CPython's
        # shared-key layout
        cnf = _new(CnfKey)
        cnf.__dict__["key"] = key
        return cnf
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
    if method == CNF_KCCS and type(method) is int:
        if not isinstance(body, dict):
            raise InvalidClaim("cnf kccs must be a CCS map", claim="cnf")
        return CnfKccs(cbor2.dumps(body))
    raise InvalidClaim(f"unsupported cnf method {method!r}", claim="cnf")


#: Public ``cnf`` keys already imported, by their COSE_Key items; at most
#: :data:`MAX_CACHED_CNF_KEYS`, the oldest dropped first.
_CNF_KEYS: dict[tuple[tuple[int, int | bytes], ...], Key] = {}
MAX_CACHED_CNF_KEYS = 1024
#: COSE_Key labels (RFC 9052 §7.1, RFC 9053 §7): kty, and the private parts d (EC2, OKP).
_KTY, _D = 1, -4


def _public_cose_key(body: Any) -> Key:
    """:meth:`Key.from_cose_key` of a ``cnf`` COSE_Key, public EC2/OKP keys from a cache.

    A client binds the same key to many tokens; importing it (with the check that an
    EC2 point lies on its curve) is the dearest step of reading the claims. A key is
    kept only when its map holds integer labels with integer or byte-string values
    (so equal items mean the same input, type for type), of key type EC2 or OKP and
    without a private part: no secret is kept here. Only a key that imported is kept,
    so a refused map is refused again, with the same error.
    """
    if type(body) is not dict or type(body.get(_KTY)) is not int or _D in body:
        return Key.from_cose_key(body)
    for label, item in body.items():
        if type(label) is not int or (type(item) is not bytes and type(item) is not int):
            return Key.from_cose_key(body)
    cache_key = tuple(body.items())
    key = _CNF_KEYS.get(cache_key)
    if key is None:
        key = Key.from_cose_key(body)
        if key.is_symmetric or key.private is not None:  # a symmetric key (kty 4) is a secret
            return key
        if len(_CNF_KEYS) >= MAX_CACHED_CNF_KEYS:
            del _CNF_KEYS[next(iter(_CNF_KEYS))]
        _CNF_KEYS[cache_key] = key
    return key


def _cnf_to_jwt(cnf: Cnf) -> dict[str, Any]:
    if isinstance(cnf, CnfKey):
        return {JwtCnfMethod.JWK: cnf.key.to_jwk(include_private=cnf.key.is_symmetric)}
    if isinstance(cnf, CnfEncryptedKey):
        if cnf.jwe is None:
            raise UnsupportedConversion(
                "an Encrypted_COSE_Key cannot be put in a JWT (use a JWE)", claim="cnf"
            )
        return {JwtCnfMethod.JWE: cnf.jwe}
    if isinstance(cnf, CnfKid):
        try:
            return {JwtCnfMethod.KID: cnf.kid.decode("utf-8")}
        except UnicodeDecodeError:
            raise UnsupportedConversion("a binary cnf kid has no JWT form", claim="cnf") from None
    if isinstance(cnf, CnfJkt):
        return {JwtCnfMethod.JKT: cnf.jkt}
    if isinstance(cnf, CnfX5tS256):
        return {JwtCnfMethod.X5T_S256: cnf.x5t}
    if isinstance(cnf, CnfOsc):
        return {"osc": cnf.material.to_dict()}
    if isinstance(cnf, CnfKccs):
        raise UnsupportedConversion("a kccs credential is not put in a JWT here", claim="cnf")
    raise UnsupportedConversion("a COSE key thumbprint (ckt) has no JWT cnf method", claim="cnf")


def _cnf_from_jwt(value: Any) -> Cnf:
    if not isinstance(value, dict) or len(value) != 1:
        raise InvalidClaim(
            "cnf must be an object with exactly one confirmation method", claim="cnf"
        )
    ((method, body),) = value.items()
    if method == JwtCnfMethod.JWK:
        if not isinstance(body, dict):
            raise InvalidClaim("cnf jwk must be an object", claim="cnf")
        return CnfKey(Key.from_jwk(body))
    if method == JwtCnfMethod.JWE:
        if not isinstance(body, str) or body.count(".") != 4:
            raise InvalidClaim("cnf jwe must be a compact JWE", claim="cnf")
        return CnfEncryptedKey(jwe=body)
    if method == JwtCnfMethod.KID:
        if not isinstance(body, str):
            raise InvalidClaim("cnf kid must be a string", claim="cnf")
        return CnfKid(body.encode("utf-8"))
    if method == JwtCnfMethod.JKT:
        if not isinstance(body, str) or len(b64u_decode(body)) != 32:
            raise InvalidClaim("cnf jkt must be a base64url SHA-256 thumbprint", claim="cnf")
        return CnfJkt(body)
    if method == JwtCnfMethod.X5T_S256:
        if not isinstance(body, str) or len(b64u_decode(body)) != 32:
            raise InvalidClaim("cnf x5t#S256 must be a base64url SHA-256 thumbprint", claim="cnf")
        return CnfX5tS256(body)
    if method == "osc":
        if not isinstance(body, dict):
            raise InvalidClaim("cnf osc must be an object", claim="cnf")
        return CnfOsc(OscoreInputMaterial.from_dict(body))
    raise InvalidClaim(f"unsupported cnf method {method!r}", claim="cnf")


# ---- the token --------------------------------------------------------------------------

#: CWT claim key -> the model's field name, read once (Enum members are not built per call).
_CWT_CLAIM_NAMES: dict[int, str] = {int(claim): claim.name.lower() for claim in CWTClaim}


def _frozen(mapping: Mapping[Any, Any] | None) -> Mapping[Any, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class AccessToken:
    """An access token's claims, independent of CWT or JWT.

    ``aud`` is a tuple (one or many audiences). ``cti`` is bytes; in a JWT
    it travels as ``jti``, base64url-encoded. ``extra`` keeps claims
    keybound does not model, keyed as they arrived.
    """

    iss: str | None = None
    sub: str | None = None
    aud: tuple[str, ...] = ()
    exp: int | None = None
    nbf: int | None = None
    iat: int | None = None
    cti: bytes | None = None
    scope: Scope | None = None
    ace_profile: int | None = None
    cnonce: bytes | None = None
    exi: int | None = None
    cnf: Cnf | None = None
    extra: Mapping[Any, Any] = field(default_factory=lambda: _frozen(None))

    def __post_init__(self) -> None:
        if isinstance(self.aud, str):
            object.__setattr__(self, "aud", (self.aud,))
        elif not isinstance(self.aud, tuple):
            object.__setattr__(self, "aud", tuple(self.aud))
        if not isinstance(self.extra, MappingProxyType):
            object.__setattr__(self, "extra", _frozen(self.extra))

    def replace(self, **changes: Any) -> AccessToken:
        """A copy with ``changes`` applied (the model itself never changes)."""
        return replace(self, **changes)

    # ---- CWT -----------------------------------------------------------------------------

    def to_cwt_claims(self) -> dict[int | str, Any]:
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

    def to_cwt_payload(self) -> bytes:
        """The deterministic CBOR encoding of :meth:`to_cwt_claims` (RFC 8949 §4.2.1).

        Without ``extra`` claims the map is written directly: the modelled claims have
        small unsigned keys, whose encodings sort as the numbers do.
        """
        if self.extra:
            return cbor.dumps(self.to_cwt_claims())
        dumps = cbor.dumps
        # The values that can fail (cnf, scope) are computed before anything is encoded,
        # as to_cwt_claims does; then each claim is its key's encoding and its value's.
        cnf = None if self.cnf is None else _cnf_to_cwt(self.cnf)
        scope = None if self.scope is None else self.scope.to_cwt()
        count = 0
        body = b""
        if self.iss is not None:
            body += b"\x01" + dumps(self.iss)
            count += 1
        if self.sub is not None:
            body += b"\x02" + dumps(self.sub)
            count += 1
        if self.aud:
            body += b"\x03" + dumps(self.aud[0] if len(self.aud) == 1 else list(self.aud))
            count += 1
        if self.exp is not None:
            body += b"\x04" + dumps(self.exp)
            count += 1
        if self.nbf is not None:
            body += b"\x05" + dumps(self.nbf)
            count += 1
        if self.iat is not None:
            body += b"\x06" + dumps(self.iat)
            count += 1
        if self.cti is not None:
            body += b"\x07" + dumps(self.cti)
            count += 1
        if cnf is not None:
            body += b"\x08" + dumps(cnf)
            count += 1
        if scope is not None:
            body += b"\x09" + dumps(scope)
            count += 1
        if self.ace_profile is not None:
            body += b"\x18\x26" + dumps(self.ace_profile)
            count += 1
        if self.cnonce is not None:
            body += b"\x18\x27" + dumps(self.cnonce)
            count += 1
        if self.exi is not None:
            body += b"\x18\x28" + dumps(self.exi)
            count += 1
        return cbor.head(5, count) + body

    @classmethod
    def from_cwt_claims(cls, claims: Mapping[Any, Any]) -> AccessToken:
        """Build the model from a decoded CWT claims map, checking each claim's type.

        A map whose claims all pass the checks at a glance (:func:`_plain_claims`) is
        built without the per-claim calls; anything else takes the full path, which
        raises the error of the first claim in the fields' order.
        """
        if cls is AccessToken and _DIRECT_BUILD and type(claims) is dict:
            built = _plain_claims(claims)
            if built is not None:
                token = object.__new__(cls)
                token.__dict__.update(built)
                return token
        return cls._checked_from_cwt_claims(claims)

    @classmethod
    def _checked_from_cwt_claims(cls, claims: Mapping[Any, Any]) -> AccessToken:
        """:meth:`from_cwt_claims` claim by claim, each through its own check."""
        if not isinstance(claims, Mapping):
            raise DecodeError("the CWT payload must be a map of claims")
        values: dict[str, Any] = {}
        extra: dict[Any, Any] = {}
        names = _CWT_CLAIM_NAMES
        for key, value in claims.items():
            name = names.get(key) if type(key) is int else None
            if name is None:
                extra[key] = value
            else:
                values[name] = value
        get = values.get
        # Absent claims are None without a call; the checks run in the fields' order.
        built: dict[str, Any] = {
            "iss": None if (v := get("iss")) is None else _opt_text(v, "iss"),
            "sub": None if (v := get("sub")) is None else _opt_text(v, "sub"),
            "aud": _audiences(get("aud")),
            "exp": None if (v := get("exp")) is None else _opt_time(v, "exp"),
            "nbf": None if (v := get("nbf")) is None else _opt_time(v, "nbf"),
            "iat": None if (v := get("iat")) is None else _opt_time(v, "iat"),
            "cti": None if (v := get("cti")) is None else _opt_bytes(v, "cti"),
            "scope": Scope.from_claim(values["scope"]) if "scope" in values else None,
            "ace_profile": None
            if (v := get("ace_profile")) is None
            else _opt_int(v, "ace_profile"),
            "cnonce": None if (v := get("cnonce")) is None else _opt_bytes(v, "cnonce"),
            "exi": None if (v := get("exi")) is None else _opt_seconds(v, "exi"),
            "cnf": _cnf_from_cwt(values["cnf"]) if "cnf" in values else None,
            "extra": _frozen(extra),
        }
        if cls is AccessToken and _DIRECT_BUILD:
            # Every field is given in the form __post_init__ would make it (aud a tuple,
            # extra read-only), so the frozen dataclass's per-field setattr is skipped.
            token = object.__new__(cls)
            token.__dict__.update(built)
            return token
        return cls(**built)

    # ---- JWT -----------------------------------------------------------------------------

    def to_jwt_claims(self) -> dict[str, Any]:
        """The JWT claims set (RFC 7519 §4.1, RFC 7800 ``cnf``, RFC 9200 ``exi``...)."""
        out: dict[str, Any] = {}
        if self.iss is not None:
            out["iss"] = self.iss
        if self.sub is not None:
            out["sub"] = self.sub
        if self.aud:
            out["aud"] = self.aud[0] if len(self.aud) == 1 else list(self.aud)
        for name, value in (("exp", self.exp), ("nbf", self.nbf), ("iat", self.iat)):
            if value is not None:
                out[name] = value
        if self.cti is not None:
            out["jti"] = b64u_encode(self.cti)
        if self.cnf is not None:
            out["cnf"] = _cnf_to_jwt(self.cnf)
        if self.scope is not None:
            out["scope"] = self.scope.to_jwt()
        if self.ace_profile is not None:
            out["ace_profile"] = self.ace_profile
        if self.cnonce is not None:
            out["cnonce"] = b64u_encode(self.cnonce)
        if self.exi is not None:
            out["exi"] = self.exi
        for key, value in self.extra.items():
            if not isinstance(key, str):
                raise UnsupportedConversion(
                    f"claim {key!r} has an integer key, which a JWT cannot carry", claim=str(key)
                )
            if key in out:
                raise InvalidClaim(f"extra claim {key!r} collides with a modelled claim")
            out[key] = _json_value(value, key)
        return out

    @classmethod
    def from_jwt_claims(cls, claims: Mapping[str, Any]) -> AccessToken:
        """Build the model from a decoded JWT claims set, checking each claim's type."""
        if not isinstance(claims, Mapping):
            raise DecodeError("the JWT payload must be a JSON object")
        modelled = {
            "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "cnf", "scope",
            "ace_profile", "cnonce", "exi",
        }  # fmt: skip
        jti = claims.get("jti")
        cti: bytes | None = None
        if jti is not None:
            if not isinstance(jti, str) or len(jti) > MAX_TEXT:
                raise InvalidClaim("jti must be a string", claim="jti")
            try:
                cti = b64u_decode(jti)
            except DecodeError:
                cti = jti.encode("utf-8")
        cnonce = claims.get("cnonce")
        if cnonce is not None and not isinstance(cnonce, str):
            raise InvalidClaim("cnonce must be a base64url string", claim="cnonce")
        return cls(
            iss=_opt_text(claims.get("iss"), "iss"),
            sub=_opt_text(claims.get("sub"), "sub"),
            aud=_audiences(claims.get("aud")),
            exp=_opt_time(claims.get("exp"), "exp"),
            nbf=_opt_time(claims.get("nbf"), "nbf"),
            iat=_opt_time(claims.get("iat"), "iat"),
            cti=cti,
            scope=Scope.from_jwt(claims["scope"]) if "scope" in claims else None,
            ace_profile=_opt_int(claims.get("ace_profile"), "ace_profile"),
            cnonce=b64u_decode(cnonce) if cnonce is not None else None,
            exi=_opt_seconds(claims.get("exi"), "exi"),
            cnf=_cnf_from_jwt(claims["cnf"]) if "cnf" in claims else None,
            extra={k: v for k, v in claims.items() if k not in modelled},
        )

    # ---- display -------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly view keyed by claim name (``cti`` and byte strings as hex)."""
        out: dict[str, Any] = {}
        for name in ("iss", "sub"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.aud:
            out["aud"] = self.aud[0] if len(self.aud) == 1 else list(self.aud)
        for name in ("exp", "nbf", "iat"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.cti is not None:
            out["cti"] = self.cti.hex()
        if self.scope is not None:
            out["scope"] = self.scope.to_jwt()
        if self.ace_profile is not None:
            out["ace_profile"] = self.ace_profile
        if self.cnonce is not None:
            out["cnonce"] = self.cnonce.hex()
        if self.exi is not None:
            out["exi"] = self.exi
        if self.cnf is not None:
            out["cnf"] = describe_cnf(self.cnf)
        for key, value in self.extra.items():
            out[str(key)] = _display(value)
        return out


#: The fields from_cwt_claims sets; if the model gains one, it goes through __init__ again.
_DIRECT_BUILD = {f.name for f in fields(AccessToken)} == {
    "iss", "sub", "aud", "exp", "nbf", "iat", "cti", "scope", "ace_profile", "cnonce", "exi",
    "cnf", "extra",
}  # fmt: skip


#: What :func:`_plain_claims` checks of each modelled claim but ``aud``, ``scope`` and
#: ``cnf``, by CWT key: the field, and the exact type it takes (str and bytes up to
#: MAX_TEXT, a time claim an int from 0 to MAX_TIME_CLAIM, ``ace_profile`` any int).
_TEXT, _BYTES, _TIME, _INT = range(4)
_PLAIN_CLAIMS: dict[int, tuple[str, int]] = {
    int(CWTClaim.ISS): ("iss", _TEXT),
    int(CWTClaim.SUB): ("sub", _TEXT),
    int(CWTClaim.EXP): ("exp", _TIME),
    int(CWTClaim.NBF): ("nbf", _TIME),
    int(CWTClaim.IAT): ("iat", _TIME),
    int(CWTClaim.CTI): ("cti", _BYTES),
    int(CWTClaim.ACE_PROFILE): ("ace_profile", _INT),
    int(CWTClaim.CNONCE): ("cnonce", _BYTES),
    int(CWTClaim.EXI): ("exi", _TIME),
}
_AUD, _SCOPE, _CNF = int(CWTClaim.AUD), int(CWTClaim.SCOPE), int(CWTClaim.CNF)
#: The model's fields in order, each absent: what :func:`_plain_claims` starts from.
_ABSENT: dict[str, Any] = {f.name: None for f in fields(AccessToken)} | {"aud": ()}
#: The ``extra`` of a token without unmodelled claims (read-only, so one serves all).
_NO_EXTRA = _frozen(None)
#: A claim not met (None is a value a claim can have).
_MISSING: Any = object()


#: Scopes already read, by their claim (a text or byte string); at most
#: :data:`MAX_CACHED_SCOPES`, the oldest dropped first.
_SCOPES: dict[str | bytes, Scope] = {}
MAX_CACHED_SCOPES = 256


def _scope(value: Any) -> Scope:
    """:meth:`Scope.from_claim`, the scopes of text and byte strings kept once read.

    Tokens for one RS carry few distinct scopes; a scope is immutable, so the one
    read first serves every later claim equal to it (and of the same type). Only a
    scope that was read is kept: a refused claim is refused again, the same way.
    """
    kind = type(value)
    if kind is not str and kind is not bytes:
        return Scope.from_claim(value)
    scope = _SCOPES.get(value)  # a text and a byte string are never equal keys
    if scope is None:
        scope = Scope.from_claim(value)
        if len(_SCOPES) >= MAX_CACHED_SCOPES:
            del _SCOPES[next(iter(_SCOPES))]
        _SCOPES[value] = scope
    return scope


def _plain_claims(claims: dict[Any, Any]) -> dict[str, Any] | None:
    """The fields of the token of ``claims`` when every simple claim has the plain form
    the full checks accept (None otherwise, for the full path to say what is wrong).

    Only ``scope`` and then ``cnf`` can raise here, through the functions the full path
    calls, after every other claim passed: the full path would raise the same first.
    """
    built = _ABSENT.copy()
    extra: dict[Any, Any] | None = None
    scope: Any = _MISSING
    cnf: Any = _MISSING
    plain = _PLAIN_CLAIMS
    for key, value in claims.items():
        spec = plain.get(key) if type(key) is int else None
        if spec is not None:
            kind = spec[1]
            if kind == _TIME:
                if type(value) is not int or not 0 <= value <= MAX_TIME_CLAIM:
                    return None
            elif kind == _TEXT:
                if type(value) is not str or len(value) > MAX_TEXT:
                    return None
            elif kind == _BYTES:
                if type(value) is not bytes or len(value) > MAX_TEXT:
                    return None
            elif type(value) is not int:
                return None
            built[spec[0]] = value
        elif type(key) is not int or key not in (_AUD, _SCOPE, _CNF):
            if extra is None:
                extra = {}
            extra[key] = value
        elif key == _AUD:
            if type(value) is not str or len(value) > MAX_TEXT:
                return None
            built["aud"] = (value,)
        elif key == _SCOPE:
            scope = value
        else:
            cnf = value
    if scope is not _MISSING:
        built["scope"] = _scope(scope)
    if cnf is not _MISSING:
        built["cnf"] = _cnf_from_cwt(cnf)
    built["extra"] = _NO_EXTRA if extra is None else _frozen(extra)
    return built


def describe_cnf(cnf: Cnf) -> dict[str, Any]:
    """A readable description of a ``cnf`` value; secrets are never shown."""
    if isinstance(cnf, CnfKey):
        if cnf.key.is_symmetric:
            return {"method": "COSE_Key", "kty": "Symmetric", "kid": _hex(cnf.key.kid)}
        jwk = cnf.key.to_jwk()
        return {"method": "COSE_Key", "jwk": jwk, "jkt": cnf.key.jwk_thumbprint()}
    if isinstance(cnf, CnfEncryptedKey):
        return {"method": "Encrypted_COSE_Key" if cnf.cose is not None else "jwe"}
    if isinstance(cnf, CnfKid):
        return {"method": "kid", "kid": cnf.kid.hex()}
    if isinstance(cnf, CnfJkt):
        return {"method": "jkt", "jkt": cnf.jkt}
    if isinstance(cnf, CnfX5tS256):
        return {"method": "x5t#S256", "x5t#S256": cnf.x5t}
    if isinstance(cnf, CnfCkt):
        return {"method": "ckt", "ckt": cnf.ckt.hex()}
    if isinstance(cnf, CnfKccs):
        return {"method": "kccs", "ccs": cnf.ccs.hex()}
    m = cnf.material
    return {
        "method": "osc",
        "id": m.id.hex(),
        "ms": f"<{len(m.ms)} secret bytes>",
        **({"salt": m.salt.hex()} if m.salt is not None else {}),
        **({"contextId": m.context_id.hex()} if m.context_id is not None else {}),
        **({"alg": m.alg} if m.alg is not None else {}),
        **({"hkdf": m.hkdf} if m.hkdf is not None else {}),
    }


def _hex(value: bytes | None) -> str | None:
    return value.hex() if value is not None else None


def _display(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_display(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _display(v) for k, v in value.items()}
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": _display(value.value)}
    return value


def _json_value(value: Any, claim: str) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_json_value(v, claim) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v, claim) for k, v in value.items()}
    raise UnsupportedConversion(f"claim {claim!r} holds a value JSON cannot carry", claim=claim)


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


__all__ = [
    "MAX_TIME_CLAIM",
    "AccessToken",
    "Cnf",
    "CnfCkt",
    "CnfEncryptedKey",
    "CnfJkt",
    "CnfKccs",
    "CnfKey",
    "CnfKid",
    "CnfOsc",
    "CnfX5tS256",
    "describe_cnf",
]
