"""CBOR Web Tokens (RFC 8392) from the shared :class:`~keybound.core.token.AccessToken`.

:func:`encode` protects a token with COSE_Sign1, COSE_Mac0, COSE_Encrypt0, or a
Sign1 nested in an Encrypt0 (RFC 8392 §7.1, Appendix A.6), optionally wrapped
in the CWT tag 61. :func:`decode` verifies/decrypts with an explicit allow-list
and returns the model; claim checks are :func:`keybound.core.validation.validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from typing import Any

import cbor2

from . import cbor, cose
from .errors import DecodeError, KeyNotFound, PayloadTooLarge
from .keys import Key, RandomBytes
from .numbers.cose_algorithms import Algorithm
from .numbers.cose_headers import CoseTag, HeaderParameter
from .numbers.cose_keys import KeyType
from .numbers.cwt_claims import CWT_TAG
from .records import frozen_record
from .token import AccessToken

DEFAULT_MAX_SIZE = 4096
#: Default allow-list: every COSE algorithm keybound implements.
DEFAULT_ALLOWED = cose.SIGNATURE_ALGORITHMS | cose.MAC_ALGORITHMS | cose.AEAD_ALGORITHMS


@dataclass(frozen=True)
class Sign1:
    key: Key
    alg: Algorithm | None = None


@dataclass(frozen=True)
class Mac0:
    key: Key
    alg: Algorithm = Algorithm.HMAC_256_64


@dataclass(frozen=True)
class Encrypt0:
    key: Key
    alg: Algorithm = Algorithm.AES_CCM_16_64_128
    iv: bytes | None = None


@dataclass(frozen=True)
class Nested:
    """A Sign1 inside an Encrypt0: the RS can read the token and check who signed it."""

    sign: Sign1
    encrypt: Encrypt0


Protection = Sign1 | Mac0 | Encrypt0 | Nested


@dataclass(frozen=True)
class Layer:
    """One COSE layer of a decoded CWT, outermost first."""

    kind: CoseTag
    alg: Algorithm
    kid: bytes | None
    tagged: bool


@dataclass(frozen=True)
class DecodedCwt:
    token: AccessToken
    layers: tuple[Layer, ...]
    cwt_tag: bool
    claims: dict[Any, Any]


def _protect(
    payload: bytes,
    protection: Sign1 | Mac0 | Encrypt0,
    random_bytes: RandomBytes | None,
    protect_all: bool,
) -> bytes:
    if isinstance(protection, Sign1):
        return cose.sign1(payload, protection.key, alg=protection.alg, protect_all=protect_all)
    if isinstance(protection, Mac0):
        return cose.mac0(payload, protection.key, alg=protection.alg, protect_all=protect_all)
    return cose.encrypt0(
        payload,
        protection.key,
        alg=protection.alg,
        iv=protection.iv,
        random_bytes=random_bytes,
        protect_all=protect_all,
    )


def encode(
    token: AccessToken,
    protection: Protection,
    *,
    cwt_tag: bool = False,
    random_bytes: RandomBytes | None = None,
    protect_all: bool = False,
) -> bytes:
    """The CWT bytes of ``token`` under ``protection`` (deterministic claims encoding).

    An :class:`Encrypt0` without a fixed ``iv`` draws its IV from ``random_bytes``
    (``os.urandom`` in an application), which it then needs. ``protect_all`` puts
    every header parameter (``kid``, the IV) in the protected headers and leaves the
    unprotected ones empty: with ``cwt_tag`` that is the layout RFC 9770 §3 requires
    of a token whose hash goes on a token revocation list.
    """
    payload = token.to_cwt_payload()
    if isinstance(protection, Nested):
        inner = _protect(payload, protection.sign, random_bytes, protect_all)
        message = _protect(inner, protection.encrypt, random_bytes, protect_all)
    else:
        message = _protect(payload, protection, random_bytes, protect_all)
    if cwt_tag:
        return CWT_TAG_PREFIX + message
    return message


# Tag 61 is a one-byte-argument head: 0xd8 0x3d.
CWT_TAG_PREFIX = bytes([0xD8, CWT_TAG])


def _key_finder(keys: Key | Sequence[Key] | cose.KeyLookup) -> cose.KeyLookup:
    if callable(keys) and not isinstance(keys, Key):
        return keys
    if isinstance(keys, Key):
        return _one_key_finder(keys)
    pool = list(keys)

    def find(kid: bytes | None, alg: Algorithm) -> Key:
        symmetric = _SYMMETRIC_KINDS.get(alg, False)
        fitting = [k for k in pool if (k.kty == KeyType.SYMMETRIC) == symmetric]
        if kid is not None:
            for k in fitting:
                if k.kid == kid:
                    return k
            fitting = [k for k in fitting if k.kid is None]
        if not fitting:
            raise KeyNotFound(
                f"no {'symmetric' if symmetric else 'public'} key"
                + (f" with kid {kid.hex()}" if kid is not None else "")
            )
        return fitting[0]

    return find


def _one_key_finder(key: Key) -> cose.KeyLookup:
    """The finder of a pool of one: ``key`` if its kind fits and its kid is the message's
    or none (what the general finder gives for ``[key]``)."""
    key_symmetric = key.kty == KeyType.SYMMETRIC

    def find(kid: bytes | None, alg: Algorithm) -> Key:
        symmetric = _SYMMETRIC_KINDS.get(alg, False)
        if key_symmetric == symmetric and (kid is None or key.kid is None or key.kid == kid):
            return key
        raise KeyNotFound(
            f"no {'symmetric' if symmetric else 'public'} key"
            + (f" with kid {kid.hex()}" if kid is not None else "")
        )

    return find


#: The kid header label as a plain integer (RFC 9052 §3.1).
_KID = int(HeaderParameter.KID)
#: Whether an algorithm takes a symmetric key (MAC and AEAD), read once per algorithm.
_SYMMETRIC_KINDS = {alg: alg.value.kind in ("mac", "aead") for alg in Algorithm}


@dataclass(frozen=True)
class OpenedCwt:
    """A CWT whose COSE layers verified and decrypted, its claims not yet read."""

    layers: tuple[Layer, ...]
    cwt_tag: bool
    claims: dict[Any, Any]


#: Whether Layer and DecodedCwt still have exactly the fields the direct builds below
#: set (:func:`~keybound.core.records.frozen_record`); if one gains a field, they go
#: through __init__ again.
_LAYER_FIELDS = ["kind", "alg", "kid", "tagged"]
_DECODED_FIELDS = ["token", "layers", "cwt_tag", "claims"]
_DIRECT_BUILD = [f.name for f in fields(Layer)] == _LAYER_FIELDS and [
    f.name for f in fields(DecodedCwt)
] == _DECODED_FIELDS


def _layer(kind: CoseTag, alg: Algorithm, kid: bytes | None, tagged: bool) -> Layer:
    """``Layer(kind, alg, kid, tagged)``, without the frozen dataclass's per-field setattr."""
    if not _DIRECT_BUILD:  # pragma: no cover - guards a future field
        return Layer(kind, alg, kid, tagged)
    return frozen_record(Layer, kind=kind, alg=alg, kid=kid, tagged=tagged)


def open_layers(
    data: bytes,
    keys: Key | Sequence[Key] | Callable[[bytes | None, Algorithm], Key],
    *,
    allowed: Collection[Algorithm] = DEFAULT_ALLOWED,
    max_size: int = DEFAULT_MAX_SIZE,
    external_aad: bytes = b"",
) -> OpenedCwt:
    """Verify/decrypt the COSE layers of a CWT and return its claims map, unread.

    Accepts the CWT tag 61, tagged COSE messages, and one nested layer
    (Sign1 or Mac0 inside Encrypt0). Every error raised here is one of the
    security wrapper (framing, algorithm, key, signature, decryption), which
    RFC 9200 §5.10.1.1 tells apart from malformed claims of an authentic token.
    """
    return OpenedCwt(*_open(data, keys, allowed, max_size, external_aad))


def _open(
    data: bytes,
    keys: Key | Sequence[Key] | Callable[[bytes | None, Algorithm], Key],
    allowed: Collection[Algorithm],
    max_size: int,
    external_aad: bytes,
) -> tuple[tuple[Layer, ...], bool, dict[Any, Any]]:
    """:func:`open_layers` as (layers, cwt_tag, claims), for :func:`decode` to build on."""
    if not isinstance(data, bytes):
        raise DecodeError("a CWT must be bytes")
    if len(data) > max_size:
        raise PayloadTooLarge(f"CBOR input of {len(data)} bytes exceeds the limit of {max_size}")
    cwt_tag = data[:2] == CWT_TAG_PREFIX
    # The usual shape is split without decoding its byte strings (cose.split); anything
    # else is decoded whole first. Both give the same items to the same checks.
    message: cose.Parsed | Any = (
        cose.parse_split(data, 2, 1, max_size=max_size)
        if cwt_tag
        else cose.parse_split(data, max_size=max_size)
    )
    if message is None:
        obj = cbor.loads(data, max_size=max_size)
        cwt_tag = isinstance(obj, cbor2.CBORTag) and obj.tag == CWT_TAG
        message = obj.value if cwt_tag else obj
    finder = _key_finder(keys)
    layers: list[Layer] = []
    for _depth in range(2):
        if not isinstance(message, cose.Parsed):
            message = cose.parse(message, max_size=max_size)
        payload, _key = cose.verified_payload(
            message, finder, allowed=allowed, external_aad=external_aad
        )
        kid = message.protected.get(_KID, message.unprotected.get(_KID))
        kind = message.kind
        layers.append(
            _layer(kind, message.alg, kid if isinstance(kid, bytes) else None, message.tagged)
        )
        if payload and 0xA0 <= payload[0] <= 0xBF:  # a map: the claims, neither tag nor layer
            return tuple(layers), cwt_tag, cbor.loads(payload, max_size=max_size)
        parts = _nested_parts(payload)
        if parts is not None:
            if kind != CoseTag.ENCRYPT0 or len(layers) > 1:
                raise DecodeError("only a Sign1 or Mac0 inside an Encrypt0 may be nested")
            message = cose.parse_parts(*parts, max_size=max_size)
            continue
        inner = cbor.loads(payload, max_size=max_size)
        if isinstance(inner, cbor2.CBORTag) and inner.tag == CWT_TAG:
            inner = inner.value
        if isinstance(inner, cbor2.CBORTag) and inner.tag in (CoseTag.SIGN1, CoseTag.MAC0):
            if kind != CoseTag.ENCRYPT0 or len(layers) > 1:
                raise DecodeError("only a Sign1 or Mac0 inside an Encrypt0 may be nested")
            message = inner
            continue
        if not isinstance(inner, dict):
            raise DecodeError("the CWT payload must be a map of claims")
        return tuple(layers), cwt_tag, inner
    raise DecodeError("CWT nested too deeply")  # pragma: no cover - loop returns or raises


def _nested_parts(payload: bytes) -> tuple[CoseTag, bool, list[Any]] | None:
    """The parts of a Sign1 or Mac0 that is the whole ``payload``, when it has the usual shape."""
    if payload[:1] in (b"\xd1", b"\xd2"):
        return cose.split(payload)
    if payload[:3] in (b"\xd8\x3d\xd1", b"\xd8\x3d\xd2"):
        return cose.split(payload, 2, 1)
    return None


def decode(
    data: bytes,
    keys: Key | Sequence[Key] | Callable[[bytes | None, Algorithm], Key],
    *,
    allowed: Collection[Algorithm] = DEFAULT_ALLOWED,
    max_size: int = DEFAULT_MAX_SIZE,
    external_aad: bytes = b"",
) -> DecodedCwt:
    """Verify/decrypt a CWT and return its claims as the model (:func:`open_layers`, then
    :meth:`AccessToken.from_cwt_claims`). Does not validate claims.
    """
    layers, cwt_tag, claims = _open(data, keys, allowed, max_size, external_aad)
    token = AccessToken.from_cwt_claims(claims)
    if not _DIRECT_BUILD:  # pragma: no cover - guards a future field
        return DecodedCwt(token, layers, cwt_tag, claims)
    return frozen_record(DecodedCwt, token=token, layers=layers, cwt_tag=cwt_tag, claims=claims)


__all__ = [
    "CWT_TAG_PREFIX",
    "DEFAULT_ALLOWED",
    "DecodedCwt",
    "Encrypt0",
    "Layer",
    "Mac0",
    "Nested",
    "OpenedCwt",
    "Protection",
    "Sign1",
    "decode",
    "encode",
    "open_layers",
]
