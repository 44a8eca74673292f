"""Reference copy (keybound 0.1.0).

COSE_Sign1, COSE_Mac0, COSE_Encrypt0 (RFC 9052 §4.2, §6.2, §5.2) on cbor2 and cryptography.

Only the message framing lives here; the primitives are ``cryptography``'s.
Every decode takes an explicit allow-list of algorithms, checks that the key
fits the algorithm (a MAC algorithm with a public key is refused), bounds the
input, and raises a :class:`~keybound.core.errors.KeyboundError` on any
failure. MAC tags are compared in constant time; ``InvalidTag`` and
``InvalidSignature`` are turned into :class:`~keybound.core.errors.BadSignature`
here, at the boundary.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from keybound.core.errors import (
    AlgorithmNotAllowed,
    BadSignature,
    DecodeError,
    KeyboundError,
    KeyNotFound,
)
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_headers import CoseTag, HeaderParameter
from keybound.core.numbers.cose_keys import Curve, KeyType
from tests.helpers.codec_reference import cbor

#: Algorithms accepted by default, per kind.
SIGNATURE_ALGORITHMS = frozenset({Algorithm.ES256, Algorithm.ES384, Algorithm.EDDSA})
MAC_ALGORITHMS = frozenset({Algorithm.HMAC_256_64, Algorithm.HMAC_256_256})
AEAD_ALGORITHMS = frozenset(
    {
        Algorithm.AES_CCM_16_64_128,
        Algorithm.AES_CCM_16_128_128,
        Algorithm.A128GCM,
        Algorithm.A256GCM,
        Algorithm.CHACHA20_POLY1305,
    }
)
DEFAULT_MAX_SIZE = 8 * 1024

KeyLookup = Callable[[bytes | None, Algorithm], Key]


@dataclass(frozen=True)
class CoseMessage:
    """A verified (or decrypted) COSE message."""

    kind: CoseTag
    alg: Algorithm
    payload: bytes
    protected: Mapping[int, Any]
    unprotected: Mapping[int, Any]
    tagged: bool
    key: Key = field(repr=False)

    @property
    def kid(self) -> bytes | None:
        kid = self.protected.get(HeaderParameter.KID, self.unprotected.get(HeaderParameter.KID))
        return kid if isinstance(kid, bytes) else None


# ---- primitives -------------------------------------------------------------------------


def _check_key(alg: Algorithm, key: Key, *, signing: bool) -> None:
    """Refuse a key that does not fit ``alg`` (key confusion)."""
    if alg.kind in ("mac", "aead"):
        if key.kty != KeyType.SYMMETRIC:
            raise AlgorithmNotAllowed(f"{alg.value.name} needs a symmetric key")
        assert key.secret is not None
        if len(key.secret) != alg.key_bytes:
            raise AlgorithmNotAllowed(f"{alg.value.name} needs a {alg.key_bytes}-byte key")
        return
    expected = {
        Algorithm.ES256: (KeyType.EC2, Curve.P_256),
        Algorithm.ES384: (KeyType.EC2, Curve.P_384),
        Algorithm.EDDSA: (KeyType.OKP, Curve.ED25519),
    }.get(alg)
    if expected is None or (key.kty, key.curve) != expected:
        raise AlgorithmNotAllowed(f"{alg.value.name} cannot be used with this key")
    if key.alg is not None and key.alg != alg:
        raise AlgorithmNotAllowed(f"the key is restricted to {key.alg.value.name}")
    if signing and key.private is None:
        raise KeyNotFound("signing needs a private key")


def _sign(alg: Algorithm, key: Key, data: bytes) -> bytes:
    _check_key(alg, key, signing=True)
    priv = key.private
    if isinstance(priv, ec.EllipticCurvePrivateKey):
        hash_alg = hashes.SHA256() if alg == Algorithm.ES256 else hashes.SHA384()
        r, s = decode_dss_signature(priv.sign(data, ec.ECDSA(hash_alg)))
        size = 32 if alg == Algorithm.ES256 else 48
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    assert isinstance(priv, ed25519.Ed25519PrivateKey)
    return priv.sign(data)


def _verify(alg: Algorithm, key: Key, data: bytes, signature: bytes) -> None:
    _check_key(alg, key, signing=False)
    pub = key.public
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            size = 32 if alg == Algorithm.ES256 else 48
            if len(signature) != 2 * size:
                raise BadSignature("ECDSA signature of the wrong length")
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            hash_alg = hashes.SHA256() if alg == Algorithm.ES256 else hashes.SHA384()
            pub.verify(der, data, ec.ECDSA(hash_alg))
            return
        assert isinstance(pub, ed25519.Ed25519PublicKey)
        pub.verify(signature, data)
    except InvalidSignature as exc:
        raise BadSignature("signature does not verify") from exc


def _mac(alg: Algorithm, key: Key, data: bytes) -> bytes:
    _check_key(alg, key, signing=True)
    assert key.secret is not None
    return hmac.new(key.secret, data, hashlib.sha256).digest()[: alg.tag_bytes]


def _aead(alg: Algorithm, key: Key) -> AESCCM | AESGCM | ChaCha20Poly1305:
    _check_key(alg, key, signing=True)
    assert key.secret is not None
    if alg in (Algorithm.AES_CCM_16_64_128, Algorithm.AES_CCM_16_128_128):
        return AESCCM(key.secret, tag_length=alg.tag_bytes)
    if alg in (Algorithm.A128GCM, Algorithm.A256GCM):
        return AESGCM(key.secret)
    return ChaCha20Poly1305(key.secret)


def aead_encrypt(alg: Algorithm, key: Key, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Raw AEAD encryption as COSE uses it (ciphertext with the tag appended)."""
    return _aead(alg, key).encrypt(nonce, plaintext, aad)


def aead_decrypt(alg: Algorithm, key: Key, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Raw AEAD decryption; a wrong key or tampered input raises :class:`BadSignature`."""
    if len(nonce) != alg.iv_bytes:
        raise DecodeError(f"{alg.value.name} needs a {alg.iv_bytes}-byte IV")
    try:
        return _aead(alg, key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise BadSignature("decryption failed: authentication tag does not verify") from exc


# ---- encoding ---------------------------------------------------------------------------


def _protected_bytes(alg: Algorithm, extra: Mapping[int, Any] | None) -> bytes:
    headers: dict[int, Any] = {int(HeaderParameter.ALG): alg.id}
    if extra:
        headers.update({int(k): v for k, v in extra.items()})
    return cbor.dumps(headers)


def _unprotected(kid: bytes | None, extra: Mapping[int, Any] | None) -> dict[int, Any]:
    headers: dict[int, Any] = {}
    if kid is not None:
        headers[int(HeaderParameter.KID)] = kid
    if extra:
        headers.update({int(k): v for k, v in extra.items()})
    return headers


def _frame(tag: CoseTag, items: list[Any], tagged: bool) -> bytes:
    return cbor.dumps_ordered(cbor2.CBORTag(int(tag), items) if tagged else items)


def sign1(
    payload: bytes,
    key: Key,
    *,
    alg: Algorithm | None = None,
    kid: bytes | None = None,
    protected: Mapping[int, Any] | None = None,
    unprotected: Mapping[int, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
) -> bytes:
    """COSE_Sign1 (RFC 9052 §4.2, Sig_structure of §4.4)."""
    alg = alg or key.alg or (Algorithm.EDDSA if key.kty == KeyType.OKP else Algorithm.ES256)
    body = _protected_bytes(alg, protected)
    to_sign = cbor.dumps_ordered(["Signature1", body, external_aad, payload])
    signature = _sign(alg, key, to_sign)
    uh = _unprotected(kid if kid is not None else key.kid, unprotected)
    return _frame(CoseTag.SIGN1, [body, uh, payload, signature], tagged)


def mac0(
    payload: bytes,
    key: Key,
    *,
    alg: Algorithm = Algorithm.HMAC_256_64,
    kid: bytes | None = None,
    protected: Mapping[int, Any] | None = None,
    unprotected: Mapping[int, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
) -> bytes:
    """COSE_Mac0 (RFC 9052 §6.2, MAC_structure of §6.3)."""
    body = _protected_bytes(alg, protected)
    tag = _mac(alg, key, cbor.dumps_ordered(["MAC0", body, external_aad, payload]))
    uh = _unprotected(kid if kid is not None else key.kid, unprotected)
    return _frame(CoseTag.MAC0, [body, uh, payload, tag], tagged)


def encrypt0(
    plaintext: bytes,
    key: Key,
    *,
    alg: Algorithm = Algorithm.AES_CCM_16_64_128,
    kid: bytes | None = None,
    iv: bytes | None = None,
    protected: Mapping[int, Any] | None = None,
    unprotected: Mapping[int, Any] | None = None,
    external_aad: bytes = b"",
    tagged: bool = True,
) -> bytes:
    """COSE_Encrypt0 (RFC 9052 §5.2, Enc_structure of §5.3); a random IV unless given."""
    iv = iv if iv is not None else os.urandom(alg.iv_bytes)
    body = _protected_bytes(alg, protected)
    aad = cbor.dumps_ordered(["Encrypt0", body, external_aad])
    ciphertext = aead_encrypt(alg, key, iv, plaintext, aad)
    uh = _unprotected(kid if kid is not None else key.kid, unprotected)
    uh[int(HeaderParameter.IV)] = iv
    return _frame(CoseTag.ENCRYPT0, [body, uh, ciphertext], tagged)


# ---- decoding ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    kind: CoseTag
    tagged: bool
    items: list[Any]
    protected: dict[int, Any]
    unprotected: dict[int, Any]
    alg: Algorithm


#: The header parameters this module processes, so ``crit`` may name them (RFC 9052 §3.1).
UNDERSTOOD_HEADERS = frozenset({HeaderParameter.ALG, HeaderParameter.KID, HeaderParameter.IV})


def _check_crit(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> None:
    """RFC 9052 §3.1 ``crit``: protected bucket only, a non-empty array of labels we understand.

    A ``crit`` in the unprotected bucket makes the message invalid (it could be added
    or removed by anyone); so does a label this module does not process.
    """
    if HeaderParameter.CRIT in unprotected:
        raise DecodeError("crit must be in the protected header (RFC 9052 §3.1)")
    if HeaderParameter.CRIT not in protected:
        return
    crit = protected[HeaderParameter.CRIT]
    if not isinstance(crit, list) or not crit:
        raise DecodeError("crit must be a non-empty array of header labels (RFC 9052 §3.1)")
    for label in crit:
        if type(label) not in (int, str):
            raise DecodeError("crit must hold integer or text labels (RFC 9052 §3.1)")
        if label not in UNDERSTOOD_HEADERS:
            raise DecodeError(f"critical header parameter {label!r} is not understood")


def parse(
    data: bytes | Any, *, expected: CoseTag | None = None, max_size: int = DEFAULT_MAX_SIZE
) -> _Parsed:
    """Parse the framing of a COSE message without verifying it."""
    obj = cbor.loads(data, max_size=max_size) if isinstance(data, bytes) else data
    tagged = isinstance(obj, cbor2.CBORTag)
    if tagged:
        try:
            kind = CoseTag(obj.tag)
        except ValueError as exc:
            raise DecodeError(f"CBOR tag {obj.tag} is not a COSE message") from exc
        obj = obj.value
    elif expected is None:
        raise DecodeError("an untagged COSE message needs its type from the context")
    else:
        kind = expected
    if expected is not None and kind != expected:
        raise DecodeError(f"expected {expected.name}, found {kind.name}")
    sizes = {CoseTag.SIGN1: 4, CoseTag.MAC0: 4, CoseTag.ENCRYPT0: 3}
    if kind not in sizes:
        raise DecodeError(f"{kind.name} is not supported")
    if not isinstance(obj, list) or len(obj) != sizes[kind]:
        raise DecodeError(f"{kind.name} must be an array of {sizes[kind]} items")
    body, unprotected = obj[0], obj[1]
    if not isinstance(body, bytes) or not isinstance(unprotected, dict):
        raise DecodeError("COSE headers must be a byte string and a map")
    protected = cbor.loads(body, max_size=max_size) if body else {}
    if not isinstance(protected, dict):
        raise DecodeError("the COSE protected header must encode a map")
    for headers in (protected, unprotected):
        for label in headers:
            if type(label) not in (int, str):
                raise DecodeError("COSE header labels must be integers or text")
    both = set(protected) & set(unprotected)
    if both:
        raise DecodeError(
            f"header parameters {sorted(both, key=str)} are both protected and unprotected"
        )
    _check_crit(protected, unprotected)
    if any(not isinstance(item, bytes) for item in obj[2:]) and not (
        kind != CoseTag.ENCRYPT0 and obj[2] is None
    ):
        raise DecodeError(f"{kind.name} payload and tag must be byte strings")
    if obj[2] is None:
        raise DecodeError("detached COSE payloads are not supported")
    kid = protected.get(HeaderParameter.KID, unprotected.get(HeaderParameter.KID))
    if kid is not None and not isinstance(kid, bytes):
        raise DecodeError("COSE kid must be a byte string")
    if HeaderParameter.ALG not in protected:
        raise AlgorithmNotAllowed("the algorithm must be in the protected header")
    try:
        alg = Algorithm.from_id(protected[HeaderParameter.ALG])
    except KeyError as exc:
        raise AlgorithmNotAllowed(
            f"COSE algorithm {protected[HeaderParameter.ALG]!r} is not supported"
        ) from exc
    return _Parsed(kind, tagged, obj, protected, unprotected, alg)


def decode(
    data: bytes | Any,
    keys: Key | KeyLookup,
    *,
    allowed: Collection[Algorithm],
    expected: CoseTag | None = None,
    external_aad: bytes = b"",
    max_size: int = DEFAULT_MAX_SIZE,
) -> CoseMessage:
    """Verify or decrypt a COSE_Sign1, COSE_Mac0 or COSE_Encrypt0; raise on any failure.

    ``keys`` is a key or a function ``(kid, alg) -> Key`` that raises
    :class:`KeyNotFound`. ``allowed`` is the explicit algorithm allow-list.
    """
    msg = parse(data, expected=expected, max_size=max_size)
    if msg.alg not in allowed:
        raise AlgorithmNotAllowed(f"{msg.alg.value.name} is not allowed here")
    expected_kind = {"sign": CoseTag.SIGN1, "mac": CoseTag.MAC0, "aead": CoseTag.ENCRYPT0}
    if expected_kind.get(msg.alg.kind) != msg.kind:
        raise AlgorithmNotAllowed(f"{msg.alg.value.name} cannot protect a {msg.kind.name}")
    kid = msg.protected.get(HeaderParameter.KID, msg.unprotected.get(HeaderParameter.KID))
    key = keys if isinstance(keys, Key) else keys(kid, msg.alg)
    if not isinstance(key, Key):
        raise KeyNotFound("no key for this message")
    body = msg.items[0]
    if msg.kind == CoseTag.SIGN1:
        payload, signature = msg.items[2], msg.items[3]
        _verify(
            msg.alg, key, cbor.dumps_ordered(["Signature1", body, external_aad, payload]), signature
        )
    elif msg.kind == CoseTag.MAC0:
        payload, tag = msg.items[2], msg.items[3]
        mine = _mac(msg.alg, key, cbor.dumps_ordered(["MAC0", body, external_aad, payload]))
        if not hmac.compare_digest(mine, tag):
            raise BadSignature("MAC tag does not verify")
    else:
        iv = msg.unprotected.get(HeaderParameter.IV, msg.protected.get(HeaderParameter.IV))
        if not isinstance(iv, bytes):
            raise DecodeError("COSE_Encrypt0 without an IV (Partial IV is not supported here)")
        aad = cbor.dumps_ordered(["Encrypt0", body, external_aad])
        payload = aead_decrypt(msg.alg, key, iv, msg.items[2], aad)
    return CoseMessage(msg.kind, msg.alg, payload, msg.protected, msg.unprotected, msg.tagged, key)


def key_lookup(keys: Mapping[bytes, Key], *, default: Key | None = None) -> KeyLookup:
    """A :data:`KeyLookup` over a kid -> key map, optionally with a key for messages without kid."""

    def find(kid: bytes | None, alg: Algorithm) -> Key:
        if kid is None:
            if default is None:
                raise KeyNotFound("the message has no kid and no default key is configured")
            return default
        try:
            return keys[kid]
        except KeyError:
            raise KeyNotFound(f"unknown kid {kid.hex()}") from None

    return find


__all__ = [
    "AEAD_ALGORITHMS",
    "MAC_ALGORITHMS",
    "SIGNATURE_ALGORITHMS",
    "CoseMessage",
    "KeyLookup",
    "KeyboundError",
    "aead_decrypt",
    "aead_encrypt",
    "decode",
    "encrypt0",
    "key_lookup",
    "mac0",
    "parse",
    "sign1",
]
