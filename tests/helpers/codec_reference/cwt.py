"""Reference copy (keybound 0.1.0).

CBOR Web Tokens (RFC 8392) from the shared :class:`~keybound.core.token.AccessToken`.

:func:`encode` protects a token with COSE_Sign1, COSE_Mac0, COSE_Encrypt0, or a
Sign1 nested in an Encrypt0 (RFC 8392 §7.1, Appendix A.6), optionally wrapped
in the CWT tag 61. :func:`decode` verifies/decrypts with an explicit allow-list
and returns the model; claim checks are :func:`keybound.core.validation.validate`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from keybound.core.cwt import Encrypt0, Mac0, Nested, Sign1
from keybound.core.errors import DecodeError, KeyNotFound
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_headers import CoseTag
from keybound.core.numbers.cose_keys import KeyType
from keybound.core.numbers.cwt_claims import CWT_TAG
from keybound.core.token import AccessToken
from tests.helpers.codec_reference import cbor, cose
from tests.helpers.codec_reference.token import from_cwt_claims, to_cwt_payload

DEFAULT_MAX_SIZE = 4096
#: Default allow-list: every COSE algorithm keybound implements.
DEFAULT_ALLOWED = cose.SIGNATURE_ALGORITHMS | cose.MAC_ALGORITHMS | cose.AEAD_ALGORITHMS


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


def _protect(payload: bytes, protection: Sign1 | Mac0 | Encrypt0) -> bytes:
    if isinstance(protection, Sign1):
        return cose.sign1(payload, protection.key, alg=protection.alg)
    if isinstance(protection, Mac0):
        return cose.mac0(payload, protection.key, alg=protection.alg)
    return cose.encrypt0(payload, protection.key, alg=protection.alg, iv=protection.iv)


def encode(token: AccessToken, protection: Protection, *, cwt_tag: bool = False) -> bytes:
    """The CWT bytes of ``token`` under ``protection`` (deterministic claims encoding)."""
    payload = to_cwt_payload(token)
    if isinstance(protection, Nested):
        message = _protect(_protect(payload, protection.sign), protection.encrypt)
    else:
        message = _protect(payload, protection)
    if cwt_tag:
        return CWT_TAG_PREFIX + message
    return message


# Tag 61 is a one-byte-argument head: 0xd8 0x3d.
CWT_TAG_PREFIX = bytes([0xD8, CWT_TAG])


def _key_finder(keys: Key | Sequence[Key] | cose.KeyLookup) -> cose.KeyLookup:
    if callable(keys) and not isinstance(keys, Key):
        return keys
    pool = [keys] if isinstance(keys, Key) else list(keys)

    def find(kid: bytes | None, alg: Algorithm) -> Key:
        symmetric = alg.kind in ("mac", "aead")
        fitting = [k for k in pool if (k.kty == KeyType.SYMMETRIC) == symmetric]
        if kid is not None:
            by_kid = [k for k in fitting if k.kid == kid]
            if by_kid:
                return by_kid[0]
            fitting = [k for k in fitting if k.kid is None]
        if not fitting:
            raise KeyNotFound(
                f"no {'symmetric' if symmetric else 'public'} key"
                + (f" with kid {kid.hex()}" if kid is not None else "")
            )
        return fitting[0]

    return find


@dataclass(frozen=True)
class OpenedCwt:
    """A CWT whose COSE layers verified and decrypted, its claims not yet read."""

    layers: tuple[Layer, ...]
    cwt_tag: bool
    claims: dict[Any, Any]


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
    if not isinstance(data, bytes):
        raise DecodeError("a CWT must be bytes")
    obj = cbor.loads(data, max_size=max_size)
    cwt_tag = False
    if isinstance(obj, cbor2.CBORTag) and obj.tag == CWT_TAG:
        cwt_tag, obj = True, obj.value
    finder = _key_finder(keys)
    layers: list[Layer] = []
    for _depth in range(2):
        msg = cose.decode(
            obj, finder, allowed=allowed, max_size=max_size, external_aad=external_aad
        )
        layers.append(Layer(msg.kind, msg.alg, msg.kid, msg.tagged))
        inner = cbor.loads(msg.payload, max_size=max_size)
        if isinstance(inner, cbor2.CBORTag) and inner.tag == CWT_TAG:
            inner = inner.value
        if isinstance(inner, cbor2.CBORTag) and inner.tag in (CoseTag.SIGN1, CoseTag.MAC0):
            if msg.kind != CoseTag.ENCRYPT0 or len(layers) > 1:
                raise DecodeError("only a Sign1 or Mac0 inside an Encrypt0 may be nested")
            obj = inner
            continue
        if not isinstance(inner, dict):
            raise DecodeError("the CWT payload must be a map of claims")
        return OpenedCwt(tuple(layers), cwt_tag, inner)
    raise DecodeError("CWT nested too deeply")  # pragma: no cover - loop returns or raises


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
    opened = open_layers(data, keys, allowed=allowed, max_size=max_size, external_aad=external_aad)
    token = from_cwt_claims(opened.claims)
    return DecodedCwt(token, opened.layers, opened.cwt_tag, opened.claims)


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
