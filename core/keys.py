"""Keys: one type over ``cryptography`` keys, as COSE_Key and as JWK.

COSE_Key is RFC 9052 §7 / RFC 9053 §7; JWK is RFC 7517/7518/8037. Thumbprints
are RFC 7638 (JWK, SHA-256, base64url) and RFC 9679 (COSE, SHA-256 over the
deterministic encoding of the required parameters).

Private parts are emitted only when ``include_private=True`` is passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from . import cbor
from .errors import DecodeError, UnsupportedPopKey
from .numbers.cose_algorithms import Algorithm
from .numbers.cose_keys import Curve, EC2Param, KeyCommon, KeyType, OKPParam, SymmetricParam

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | x25519.X25519PublicKey

_EC_CURVES: dict[Curve, ec.EllipticCurve] = {
    Curve.P_256: ec.SECP256R1(),
    Curve.P_384: ec.SECP384R1(),
}
_EC_SIZES = {Curve.P_256: 32, Curve.P_384: 48}
#: COSE_Key labels as plain integers, for the lookups of from_cose_key.
_KTY, _KID, _ALG = int(KeyCommon.KTY), int(KeyCommon.KID), int(KeyCommon.ALG)
_K, _CRV, _X, _Y = int(SymmetricParam.K), int(EC2Param.CRV), int(EC2Param.X), int(EC2Param.Y)
_D, _OKP_D = int(EC2Param.D), int(OKPParam.D)
#: COSE curve number -> Curve (``numbers.lookup`` without building an Enum per call).
_CURVES_BY_ID: dict[int, Curve] = {int(curve): curve for curve in Curve}
_OKP_CLASSES: dict[Curve, tuple[Any, Any]] = {
    Curve.ED25519: (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey),
    Curve.X25519: (x25519.X25519PrivateKey, x25519.X25519PublicKey),
}
_JOSE_CURVES = {c.jose_name: c for c in (Curve.P_256, Curve.P_384, Curve.ED25519, Curve.X25519)}
MAX_SYMMETRIC_KEY = 64
#: Where randomness comes from: ``random_bytes(n)`` returns ``n`` random bytes
#: (``os.urandom`` or ``secrets.token_bytes`` in an application; core draws none itself).
RandomBytes = Callable[[int], bytes]


def b64u_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Strict base64url without padding; raises :class:`DecodeError`."""
    if not isinstance(text, str) or "=" in text:
        raise DecodeError("expected base64url text without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError as exc:
        raise DecodeError(f"invalid base64url: {exc}") from exc


@dataclass(frozen=True, eq=False)
class Key:
    """A COSE/JOSE key: EC2 P-256/P-384, OKP Ed25519/X25519, or symmetric."""

    kty: KeyType
    curve: Curve | None = None
    private: PrivateKey | None = field(default=None, repr=False)
    public: PublicKey | None = None
    secret: bytes | None = field(default=None, repr=False)
    kid: bytes | None = None
    alg: Algorithm | None = None

    # ---- construction --------------------------------------------------------------------

    @classmethod
    def generate_ec2(
        cls, curve: Curve = Curve.P_256, *, kid: bytes | None = None, alg: Algorithm | None = None
    ) -> Key:
        if curve not in _EC_CURVES:
            raise UnsupportedPopKey(f"EC2 curve {curve!r} is not supported")
        private = ec.generate_private_key(_EC_CURVES[curve])
        return cls(KeyType.EC2, curve, private, private.public_key(), kid=kid, alg=alg)

    @classmethod
    def generate_okp(
        cls, curve: Curve = Curve.ED25519, *, kid: bytes | None = None, alg: Algorithm | None = None
    ) -> Key:
        private: PrivateKey
        if curve == Curve.ED25519:
            private = ed25519.Ed25519PrivateKey.generate()
        elif curve == Curve.X25519:
            private = x25519.X25519PrivateKey.generate()
        else:
            raise UnsupportedPopKey(f"OKP curve {curve!r} is not supported")
        return cls(KeyType.OKP, curve, private, private.public_key(), kid=kid, alg=alg)

    @classmethod
    def generate_symmetric(
        cls,
        size: int = 16,
        *,
        random_bytes: RandomBytes,
        kid: bytes | None = None,
        alg: Algorithm | None = None,
    ) -> Key:
        """A new symmetric key of ``size`` bytes drawn from ``random_bytes``."""
        return cls.symmetric(random_bytes(size), kid=kid, alg=alg)

    @classmethod
    def symmetric(
        cls, secret: bytes, *, kid: bytes | None = None, alg: Algorithm | None = None
    ) -> Key:
        if not isinstance(secret, bytes) or not 1 <= len(secret) <= MAX_SYMMETRIC_KEY:
            raise UnsupportedPopKey("a symmetric key must be 1 to 64 bytes")
        return cls(KeyType.SYMMETRIC, secret=secret, kid=kid, alg=alg)

    @classmethod
    def from_cryptography(
        cls, key: PrivateKey | PublicKey, *, kid: bytes | None = None, alg: Algorithm | None = None
    ) -> Key:
        if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
            curve = _curve_of(key.curve)
            if isinstance(key, ec.EllipticCurvePrivateKey):
                return cls(KeyType.EC2, curve, key, key.public_key(), kid=kid, alg=alg)
            return cls(KeyType.EC2, curve, None, key, kid=kid, alg=alg)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls(KeyType.OKP, Curve.ED25519, key, key.public_key(), kid=kid, alg=alg)
        if isinstance(key, ed25519.Ed25519PublicKey):
            return cls(KeyType.OKP, Curve.ED25519, None, key, kid=kid, alg=alg)
        if isinstance(key, x25519.X25519PrivateKey):
            return cls(KeyType.OKP, Curve.X25519, key, key.public_key(), kid=kid, alg=alg)
        if isinstance(key, x25519.X25519PublicKey):
            return cls(KeyType.OKP, Curve.X25519, None, key, kid=kid, alg=alg)
        raise UnsupportedPopKey(f"unsupported key type {type(key).__name__}")

    @classmethod
    def from_pem(cls, data: bytes, *, kid: bytes | None = None) -> Key:
        """Load a PEM private or public key (PKCS#8, SEC1 or SubjectPublicKeyInfo)."""
        # PEM is for files people bring: its loader (and SSH's) costs import time.
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

        loaded: Any
        try:
            if b"PRIVATE KEY" in data:
                loaded = serialization.load_pem_private_key(data, password=None)
            else:
                loaded = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise DecodeError(f"cannot load PEM key: {exc}") from exc
        if not isinstance(
            loaded,
            ec.EllipticCurvePrivateKey
            | ec.EllipticCurvePublicKey
            | ed25519.Ed25519PrivateKey
            | ed25519.Ed25519PublicKey
            | x25519.X25519PrivateKey
            | x25519.X25519PublicKey,
        ):
            raise UnsupportedPopKey(f"unsupported PEM key type {type(loaded).__name__}")
        return cls.from_cryptography(loaded, kid=kid)

    # ---- properties ----------------------------------------------------------------------

    @property
    def has_private(self) -> bool:
        return self.private is not None or self.secret is not None

    @property
    def is_symmetric(self) -> bool:
        return self.kty == KeyType.SYMMETRIC

    def public_key(self) -> Key:
        """The public half (raises for a symmetric key)."""
        if self.is_symmetric:
            raise UnsupportedPopKey("a symmetric key has no public part")
        return Key(self.kty, self.curve, None, self.public, kid=self.kid, alg=self.alg)

    def with_kid(self, kid: bytes | None) -> Key:
        return Key(self.kty, self.curve, self.private, self.public, self.secret, kid, self.alg)

    def with_alg(self, alg: Algorithm | None) -> Key:
        return Key(self.kty, self.curve, self.private, self.public, self.secret, self.kid, alg)

    def _coordinates(self) -> tuple[bytes, bytes | None]:
        """(x, y) for EC2, (x, None) for OKP; computed once per key (keys never change)."""
        cached: tuple[bytes, bytes | None] | None = self.__dict__.get("_coordinates_cache")
        if cached is None:
            cached = self._compute_coordinates()
            object.__setattr__(self, "_coordinates_cache", cached)
        return cached

    def _compute_coordinates(self) -> tuple[bytes, bytes | None]:
        if self.public is None:
            raise UnsupportedPopKey("a symmetric key has no public coordinates")
        if isinstance(self.public, ec.EllipticCurvePublicKey):
            assert self.curve is not None
            size = _EC_SIZES[self.curve]
            nums = self.public.public_numbers()
            return nums.x.to_bytes(size, "big"), nums.y.to_bytes(size, "big")
        return self.public.public_bytes_raw(), None

    def _private_bytes(self) -> bytes:
        if self.private is None:
            raise UnsupportedPopKey("no private part")
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            assert self.curve is not None
            return self.private.private_numbers().private_value.to_bytes(
                _EC_SIZES[self.curve], "big"
            )
        return self.private.private_bytes_raw()

    # ---- COSE_Key ------------------------------------------------------------------------

    def to_cose_key(self, *, include_private: bool = False) -> dict[int, Any]:
        """The COSE_Key map (RFC 9052 §7). Secrets only with ``include_private=True``."""
        out: dict[int, Any] = {_KTY: int(self.kty)}
        if self.kid is not None:
            out[_KID] = self.kid
        if self.alg is not None:
            out[_ALG] = self.alg.id
        if self.kty == KeyType.SYMMETRIC:
            if not include_private:
                raise UnsupportedPopKey("refusing to emit a symmetric key without include_private")
            assert self.secret is not None
            out[_K] = self.secret
            return out
        assert self.curve is not None
        x, y = self._coordinates()
        out[_CRV] = int(self.curve)
        out[_X] = x
        if y is not None:
            out[_Y] = y
        if include_private and self.private is not None:
            out[_D] = self._private_bytes()
        return out

    def to_cose_key_bytes(self, *, include_private: bool = False) -> bytes:
        return cbor.dumps(self.to_cose_key(include_private=include_private))

    @classmethod
    def from_cose_key(cls, data: dict[Any, Any] | bytes) -> Key:
        """Parse a COSE_Key map (or its CBOR encoding); raise on anything malformed."""
        mapping = cbor.loads(data) if isinstance(data, bytes) else data
        if not isinstance(mapping, dict):
            raise DecodeError("a COSE_Key must be a CBOR map")
        kty = mapping.get(_KTY)
        if type(kty) is not int:
            raise DecodeError("COSE_Key kty must be an integer")
        kid = mapping.get(_KID)
        if kid is not None and not isinstance(kid, bytes):
            raise DecodeError("COSE_Key kid must be a byte string")
        alg = _alg_of(mapping.get(_ALG))
        if kty == KeyType.SYMMETRIC:
            k = mapping.get(_K)
            if not isinstance(k, bytes):
                raise DecodeError("symmetric COSE_Key without k")
            return cls.symmetric(k, kid=kid, alg=alg)
        if kty not in (KeyType.EC2, KeyType.OKP):
            raise UnsupportedPopKey(f"COSE key type {kty!r} is not supported")
        crv = mapping.get(_CRV)
        if type(crv) is not int:
            raise DecodeError("COSE_Key crv must be an integer")
        curve = _CURVES_BY_ID.get(crv, crv)
        x = mapping.get(_X)
        d = mapping.get(_D)
        if not isinstance(x, bytes) or (d is not None and not isinstance(d, bytes)):
            raise DecodeError("COSE_Key x and d must be byte strings")
        if kty == KeyType.EC2:
            y = mapping.get(_Y)
            if not isinstance(y, bytes):
                raise DecodeError(
                    "EC2 COSE_Key needs y as a byte string (point compression unsupported)"
                )
            return cls._ec2(curve, x, y, d, kid, alg)
        return cls._okp(curve, x, mapping.get(_OKP_D), kid, alg)

    @classmethod
    def _ec2(
        cls,
        curve: Curve | int,
        x: bytes,
        y: bytes,
        d: bytes | None,
        kid: bytes | None,
        alg: Algorithm | None,
    ) -> Key:
        if not isinstance(curve, Curve) or curve not in _EC_CURVES:
            raise UnsupportedPopKey(f"EC2 curve {curve!r} is not supported")
        size = _EC_SIZES[curve]
        if len(x) != size or len(y) != size or (d is not None and len(d) != size):
            raise DecodeError(f"{curve.jose_name} coordinates must be {size} bytes")
        try:
            # SEC 1 §2.3.3 uncompressed form; cryptography checks that the point is on the curve.
            public = ec.EllipticCurvePublicKey.from_encoded_point(
                _EC_CURVES[curve], b"\x04" + x + y
            )
            private = None
            if d is not None:
                private = ec.derive_private_key(int.from_bytes(d, "big"), _EC_CURVES[curve])
                if private.public_key().public_numbers() != public.public_numbers():
                    raise DecodeError("EC2 private key does not match its public point")
        except ValueError as exc:
            raise DecodeError(f"invalid EC2 key: {exc}") from exc
        return cls(KeyType.EC2, curve, private, public, kid=kid, alg=alg)

    @classmethod
    def _okp(
        cls, curve: Curve | int, x: bytes, d: object, kid: bytes | None, alg: Algorithm | None
    ) -> Key:
        if d is not None and not isinstance(d, bytes):
            raise DecodeError("OKP d must be a byte string")
        if curve not in _OKP_CLASSES:
            raise UnsupportedPopKey(f"OKP curve {curve!r} is not supported")
        okp = Curve(curve)
        private_cls, public_cls = _OKP_CLASSES[okp]
        try:
            if d is None:
                return cls(
                    KeyType.OKP, okp, None, public_cls.from_public_bytes(x), kid=kid, alg=alg
                )
            private = private_cls.from_private_bytes(d)
        except ValueError as exc:
            raise DecodeError(f"invalid OKP key: {exc}") from exc
        if private.public_key().public_bytes_raw() != x:
            raise DecodeError(f"{okp.jose_name} private key does not match its public key")
        return cls(KeyType.OKP, okp, private, private.public_key(), kid=kid, alg=alg)

    # ---- JWK -----------------------------------------------------------------------------

    def to_jwk(self, *, include_private: bool = False) -> dict[str, str]:
        """The JWK (RFC 7517). Secrets only with ``include_private=True``."""
        out: dict[str, str]
        if self.kty == KeyType.SYMMETRIC:
            if not include_private:
                raise UnsupportedPopKey("refusing to emit a symmetric key without include_private")
            assert self.secret is not None
            out = {"kty": "oct", "k": b64u_encode(self.secret)}
        else:
            assert self.curve is not None
            x, y = self._coordinates()
            out = {"kty": "EC" if self.kty == KeyType.EC2 else "OKP", "crv": self.curve.jose_name}
            out["x"] = b64u_encode(x)
            if y is not None:
                out["y"] = b64u_encode(y)
            if include_private and self.private is not None:
                out["d"] = b64u_encode(self._private_bytes())
        if self.kid is not None:
            out["kid"] = _kid_to_text(self.kid)
        if self.alg is not None and self.alg.value.jose:
            out["alg"] = self.alg.value.jose
        return out

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any] | str) -> Key:
        """Parse a JWK object (or its JSON text)."""
        if isinstance(jwk, str):
            try:
                jwk = json.loads(jwk)
            except ValueError as exc:
                raise DecodeError(f"invalid JWK JSON: {exc}") from exc
        if not isinstance(jwk, dict):
            raise DecodeError("a JWK must be a JSON object")
        kid_text = jwk.get("kid")
        if kid_text is not None and not isinstance(kid_text, str):
            raise DecodeError("JWK kid must be a string")
        kid = kid_text.encode("utf-8") if kid_text is not None else None
        alg = None
        if isinstance(jwk.get("alg"), str):
            try:
                alg = Algorithm.from_name(jwk["alg"])
            except KeyError:
                alg = None
        kty = jwk.get("kty")
        if kty == "oct":
            return cls.symmetric(b64u_decode(_text(jwk, "k")), kid=kid, alg=alg)
        crv_name = jwk.get("crv")
        if not isinstance(crv_name, str) or crv_name not in _JOSE_CURVES:
            raise UnsupportedPopKey(f"JWK curve {crv_name!r} is not supported")
        curve = _JOSE_CURVES[crv_name]
        x = b64u_decode(_text(jwk, "x"))
        d = b64u_decode(jwk["d"]) if "d" in jwk else None
        if kty == "EC":
            return cls._ec2(curve, x, b64u_decode(_text(jwk, "y")), d, kid, alg)
        if kty == "OKP":
            return cls._okp(curve, x, d, kid, alg)
        raise UnsupportedPopKey(f"JWK key type {kty!r} is not supported")

    # ---- thumbprints ---------------------------------------------------------------------

    def jwk_thumbprint(self) -> str:
        """RFC 7638 §3: SHA-256 over the required members in lexicographic order, base64url."""
        if self.kty == KeyType.SYMMETRIC:
            assert self.secret is not None
            members = {"k": b64u_encode(self.secret), "kty": "oct"}
        else:
            jwk = self.to_jwk()
            names = ("crv", "kty", "x", "y") if self.kty == KeyType.EC2 else ("crv", "kty", "x")
            members = {n: jwk[n] for n in names}
        canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
        return b64u_encode(hashlib.sha256(canonical.encode("utf-8")).digest())

    def cose_thumbprint(self) -> bytes:
        """RFC 9679 §3: SHA-256 over the deterministic CBOR of the required parameters."""
        if self.kty == KeyType.SYMMETRIC:
            assert self.secret is not None
            params: dict[int, Any] = {KeyCommon.KTY: int(self.kty), SymmetricParam.K: self.secret}
        else:
            full = self.to_cose_key()
            names = [KeyCommon.KTY, EC2Param.CRV, EC2Param.X]
            if self.kty == KeyType.EC2:
                names.append(EC2Param.Y)
            params = {int(n): full[int(n)] for n in names}
        return hashlib.sha256(cbor.dumps({int(k): v for k, v in params.items()})).digest()

    def equals_public(self, other: Key) -> bool:
        """True if both keys have the same public (or symmetric) material."""
        return hmac.compare_digest(self.cose_thumbprint(), other.cose_thumbprint())

    def __eq__(self, other: object) -> bool:
        """Keys are equal when their material, kid and alg are (private halves aside)."""
        if not isinstance(other, Key):
            return NotImplemented
        return (
            self.kty == other.kty
            and self.kid == other.kid
            and self.alg == other.alg
            and self.equals_public(other)
        )

    def __hash__(self) -> int:
        return hash((self.kty, self.kid, self.cose_thumbprint()))


def _text(jwk: dict[str, Any], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise DecodeError(f"JWK member {name!r} must be a string")
    return value


def _kid_to_text(kid: bytes) -> str:
    try:
        text = kid.decode("utf-8")
    except UnicodeDecodeError:
        return b64u_encode(kid)
    return text if text.isprintable() else b64u_encode(kid)


def _curve_of(curve: ec.EllipticCurve) -> Curve:
    for cose_curve, crypto_curve in _EC_CURVES.items():
        if crypto_curve.name == curve.name:
            return cose_curve
    raise UnsupportedPopKey(f"EC curve {curve.name} is not supported")


def _alg_of(value: object) -> Algorithm | None:
    if value is None:
        return None
    try:
        return Algorithm.from_id(value)
    except KeyError:
        return None


__all__ = ["Key", "PrivateKey", "PublicKey", "RandomBytes", "b64u_decode", "b64u_encode"]
