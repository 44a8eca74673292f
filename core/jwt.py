"""JSON Web Tokens (RFC 7519) from the shared :class:`~keybound.core.token.AccessToken` (joserfc).

JWS (RFC 7515) with ES256, ES384, EdDSA/Ed25519 or HS256, and JWE (RFC 7516)
for encrypted tokens. Also the encrypted ``cnf.jwe`` PoP key of RFC 7800 §3.3 /
the PoP key-distribution draft: :func:`seal_key` and :func:`open_key`.
Decoding verifies with an explicit allow-list and bounds the input; claim
checks are :func:`keybound.core.validation.validate`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jwe, jwk, jws
from joserfc.errors import JoseError

from .errors import AlgorithmNotAllowed, BadSignature, DecodeError, KeyNotFound, PayloadTooLarge
from .keys import Key, b64u_decode
from .numbers.cose_keys import Curve, KeyType
from .token import AccessToken

DEFAULT_MAX_SIZE = 8192
SIGNATURE_ALGS = frozenset({"ES256", "ES384", "EdDSA", "Ed25519", "HS256"})
KEY_WRAP_ALGS = frozenset({"dir", "A128KW", "A256KW", "ECDH-ES", "ECDH-ES+A128KW"})
CONTENT_ALGS = frozenset({"A128GCM", "A256GCM"})
JWT_TYP = "at+jwt"  # RFC 9068 §2.1


def to_jose_key(key: Key, *, private: bool = True) -> jwk.Key:
    """The joserfc key for ``key`` (private parts only when ``private``).

    The imported key is kept on the (immutable) :class:`Key` instance, so a key
    used for many tokens is converted once.
    """
    want_private = private or key.is_symmetric
    cache: dict[bool, jwk.Key] = key.__dict__.setdefault("_jose_keys", {})
    found = cache.get(want_private)
    if found is None:
        data = key.to_jwk(include_private=want_private)
        data.pop("alg", None)
        found = jwk.import_key(data)  # type: ignore[arg-type]
        cache[want_private] = found
    return found


def _default_alg(key: Key) -> str:
    if key.kty == KeyType.SYMMETRIC:
        return "HS256"
    if key.kty == KeyType.OKP:
        return "EdDSA"
    return "ES384" if key.curve == Curve.P_384 else "ES256"


def _check_alg_key(alg: str, key: Key) -> None:
    if alg == "HS256" and key.kty != KeyType.SYMMETRIC:
        raise AlgorithmNotAllowed("HS256 needs a symmetric key")
    if alg in ("ES256", "ES384") and key.kty != KeyType.EC2:
        raise AlgorithmNotAllowed(f"{alg} needs an EC key")
    if alg in ("EdDSA", "Ed25519") and (key.kty, key.curve) != (KeyType.OKP, Curve.ED25519):
        raise AlgorithmNotAllowed(f"{alg} needs an Ed25519 key")


def encode(token: AccessToken, key: Key, *, alg: str | None = None, typ: str = JWT_TYP) -> str:
    """A compact JWS of the token's claims."""
    alg = alg or _default_alg(key)
    if alg not in SIGNATURE_ALGS:
        raise AlgorithmNotAllowed(f"JWS algorithm {alg} is not supported")
    _check_alg_key(alg, key)
    header: dict[str, Any] = {"alg": alg, "typ": typ}
    if key.kid is not None:
        header["kid"] = key.to_jwk(include_private=key.is_symmetric)["kid"]
    payload = json.dumps(token.to_jwt_claims(), separators=(",", ":"), sort_keys=True)
    return jws.serialize_compact(header, payload, to_jose_key(key), algorithms=[alg])


def encode_encrypted(
    token: AccessToken,
    key: Key,
    *,
    alg: str = "dir",
    enc: str = "A128GCM",
    typ: str = JWT_TYP,
) -> str:
    """A compact JWE of the token's claims, encrypted for the holder of ``key``."""
    if alg not in KEY_WRAP_ALGS or enc not in CONTENT_ALGS:
        raise AlgorithmNotAllowed(f"JWE {alg}/{enc} is not supported")
    header: dict[str, Any] = {"alg": alg, "enc": enc, "typ": typ}
    if key.kid is not None:
        header["kid"] = key.to_jwk(include_private=key.is_symmetric)["kid"]
    payload = json.dumps(token.to_jwt_claims(), separators=(",", ":"), sort_keys=True)
    try:
        return jwe.encrypt_compact(
            header, payload, to_jose_key(key, private=False), algorithms=[alg, enc]
        )
    except JoseError as exc:
        raise AlgorithmNotAllowed(f"cannot encrypt: {exc}") from exc


@dataclass(frozen=True)
class DecodedJwt:
    token: AccessToken
    header: dict[str, Any]
    encrypted: bool
    claims: dict[str, Any]

    @property
    def alg(self) -> str:
        return str(self.header.get("alg"))


def _pick(keys: Key | Sequence[Key], header: dict[str, Any], *, symmetric: bool) -> Key:
    pool = [keys] if isinstance(keys, Key) else list(keys)
    kid = header.get("kid")
    fitting = [k for k in pool if k.is_symmetric == symmetric]
    if kid is not None:
        by_kid = [
            k
            for k in fitting
            if k.kid is not None and k.to_jwk(include_private=True).get("kid") == kid
        ]
        if by_kid:
            return by_kid[0]
        fitting = [k for k in fitting if k.kid is None]
    if not fitting:
        raise KeyNotFound("no key fits this JWT" + (f" (kid {kid!r})" if kid else ""))
    return fitting[0]


def _header(segment: str) -> dict[str, Any]:
    try:
        header = json.loads(b64u_decode(segment))
    except (ValueError, DecodeError) as exc:
        raise DecodeError(f"invalid JOSE header: {exc}") from exc
    if not isinstance(header, dict):
        raise DecodeError("the JOSE header must be a JSON object")
    return header


def _claims(payload: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(payload)
    except ValueError as exc:
        raise DecodeError(f"the JWT payload is not JSON: {exc}") from exc
    if not isinstance(claims, dict):
        raise DecodeError("the JWT payload must be a JSON object")
    return claims


def decode(
    token: str | bytes,
    keys: Key | Sequence[Key],
    *,
    allowed: Collection[str] = SIGNATURE_ALGS | KEY_WRAP_ALGS | CONTENT_ALGS,
    max_size: int = DEFAULT_MAX_SIZE,
) -> DecodedJwt:
    """Verify (JWS) or decrypt (JWE) a compact JWT; raise keybound errors only."""
    if isinstance(token, bytes):
        try:
            token = token.decode("ascii")
        except UnicodeDecodeError:
            raise DecodeError("a JWT must be ASCII") from None
    if len(token) > max_size:
        raise PayloadTooLarge(f"JWT of {len(token)} characters exceeds the limit of {max_size}")
    parts = token.split(".")
    if len(parts) not in (3, 5):
        raise DecodeError("not a compact JWS or JWE")
    header = _header(parts[0])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed or alg == "none":
        raise AlgorithmNotAllowed(f"JOSE algorithm {alg!r} is not allowed")
    try:
        if len(parts) == 3:
            if alg not in SIGNATURE_ALGS:
                raise AlgorithmNotAllowed(f"{alg} is not a signature algorithm")
            key = _pick(keys, header, symmetric=alg == "HS256")
            _check_alg_key(alg, key)
            signed = jws.deserialize_compact(
                token, to_jose_key(key, private=False), algorithms=[alg]
            )
            claims = _claims(signed.payload)
            return DecodedJwt(AccessToken.from_jwt_claims(claims), header, False, claims)
        enc = header.get("enc")
        if not isinstance(enc, str) or enc not in allowed or enc not in CONTENT_ALGS:
            raise AlgorithmNotAllowed(f"JWE content encryption {enc!r} is not allowed")
        key = _pick(keys, header, symmetric=alg in ("dir", "A128KW", "A256KW"))
        opened = jwe.decrypt_compact(token, to_jose_key(key), algorithms=[alg, enc])
        assert opened.plaintext is not None
        claims = _claims(opened.plaintext)
        return DecodedJwt(AccessToken.from_jwt_claims(claims), header, True, claims)
    except (AlgorithmNotAllowed, KeyNotFound, DecodeError):
        raise
    except JoseError as exc:
        if exc.error in ("bad_signature", "decryption_failed", "invalid_encrypted_key"):
            raise BadSignature(f"JWT does not verify: {exc.error}") from exc
        raise DecodeError(f"invalid JWT: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise DecodeError(f"invalid JWT: {exc}") from exc


def seal_key(pop_key: Key, kek: Key, *, enc: str = "A128GCM") -> str:
    """Encrypt a symmetric PoP key as a compact JWE for ``cnf.jwe`` (RFC 7800 §3.3)."""
    body = json.dumps(pop_key.to_jwk(include_private=True), separators=(",", ":"))
    alg = "dir" if kek.is_symmetric else "ECDH-ES"
    header = {"alg": alg, "enc": enc, "cty": "jwk+json"}
    return jwe.encrypt_compact(header, body, to_jose_key(kek, private=False), algorithms=[alg, enc])


def open_key(sealed: str, kek: Key) -> Key:
    """Decrypt a ``cnf.jwe`` PoP key; raise :class:`BadSignature` on a wrong key."""
    header = _header(sealed.split(".", 1)[0])
    alg, enc = header.get("alg"), header.get("enc")
    if alg not in KEY_WRAP_ALGS or enc not in CONTENT_ALGS:
        raise AlgorithmNotAllowed(f"JWE {alg}/{enc} is not allowed")
    try:
        opened = jwe.decrypt_compact(sealed, to_jose_key(kek), algorithms=[str(alg), str(enc)])
    except JoseError as exc:
        raise BadSignature(f"cannot decrypt the PoP key: {exc.error}") from exc
    assert opened.plaintext is not None
    return Key.from_jwk(json.loads(opened.plaintext))


__all__ = [
    "CONTENT_ALGS",
    "KEY_WRAP_ALGS",
    "SIGNATURE_ALGS",
    "DecodedJwt",
    "decode",
    "encode",
    "encode_encrypted",
    "open_key",
    "seal_key",
    "to_jose_key",
]
