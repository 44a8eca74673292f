"""OSCORE Security Context derivation of the OSCORE profile (RFC 9203 §4.3, RFC 8613 §3.2).

:func:`derive_context_parameters` (RFC 9203 §4.3) and :func:`derive_keys`
(RFC 8613 §3.2.1) turn the input material, both nonces and both Recipient IDs into
an OSCORE Security Context; both are pure functions of their inputs.

The profile's other pieces have their own modules:
:mod:`keybound.core.oscore_material` (:class:`OscoreInputMaterial`, the ``osc``
confirmation method of RFC 9203 §3.2.1) and :mod:`keybound.core.authz_info`
(the ``/authz-info`` payloads of RFC 9203 §4.1, §4.2 and the bounds on nonces and
Recipient IDs).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from . import cbor
from .authz_info import (
    check_nonce,
    check_recipient_id,
)
from .errors import InvalidRequest
from .numbers.cose_algorithms import HKDF_SHA256, OSCORE_DEFAULT_AEAD, Algorithm
from .oscore_material import (
    HKDF_HASHES,
    OscoreInputMaterial,
    aead_algorithm,
    hkdf_algorithm,
)
from .records import frozen_record

# ---- OSCORE setup (RFC 9203 §4.3) and key derivation (RFC 8613 §3.2) ------------------------


@dataclass(frozen=True, eq=False)
class DerivedContext:
    """The parameters of an OSCORE Security Context (RFC 8613 §3.2), before key derivation."""

    master_secret: bytes = field(repr=False)
    master_salt: bytes
    id_context: bytes | None
    sender_id: bytes
    recipient_id: bytes
    alg: int = OSCORE_DEFAULT_AEAD
    hkdf: int = HKDF_SHA256

    def __post_init__(self) -> None:
        limit = _aead_sizes(self.alg)[2] - 6
        if type(self.hkdf) is not int or self.hkdf != HKDF_SHA256:
            hkdf_algorithm(self.hkdf)
        for name in ("master_secret", "master_salt", "sender_id", "recipient_id"):
            if not isinstance(getattr(self, name), bytes):
                raise InvalidRequest(f"{name} must be a byte string")
        if self.id_context is not None and not isinstance(self.id_context, bytes):
            raise InvalidRequest("id_context must be a byte string")
        check_recipient_id(self.sender_id, "sender_id", limit)
        check_recipient_id(self.recipient_id, "recipient_id", limit)
        if self.sender_id == self.recipient_id:
            raise InvalidRequest("Sender ID and Recipient ID must differ")

    def _public(self) -> tuple[object, ...]:
        return (
            self.master_salt,
            self.id_context,
            self.sender_id,
            self.recipient_id,
            self.alg,
            self.hkdf,
        )

    def __eq__(self, other: object) -> bool:
        """Equality; the Master Secret is compared in constant time."""
        if not isinstance(other, DerivedContext):
            return NotImplemented
        same_secret = hmac.compare_digest(self.master_secret, other.master_secret)
        return same_secret and self._public() == other._public()

    def __hash__(self) -> int:
        return hash(self._public())

    @property
    def aead(self) -> Algorithm:
        return _aead(self.alg)


#: The AEAD algorithms by their integer COSE value, read once (an Enum member's
#: ``value`` is a property), and their ``(value, key size, nonce size)`` by the same
#: integer: an Enum member hashes by a Python-level ``__hash__``, an int does not.
_AEAD_BY_ID: dict[int, Algorithm] = {alg.id: alg for alg in Algorithm if alg.kind == "aead"}
_AEAD_SIZES: dict[int, tuple[int, int, int]] = {
    alg.id: (alg.id, alg.key_bytes, alg.iv_bytes) for alg in _AEAD_BY_ID.values()
}


def _aead(value: object) -> Algorithm:
    """:func:`aead_algorithm` of ``value``, without its checks for an integer it knows."""
    if type(value) is int:
        alg = _AEAD_BY_ID.get(value)
        if alg is not None:
            return alg
    return aead_algorithm(value)


def _aead_sizes(value: object) -> tuple[int, int, int]:
    """``(COSE value, key size, nonce size)`` of the AEAD :func:`aead_algorithm` reads
    from ``value`` (its checks run for anything but an integer it knows)."""
    if type(value) is int:
        sizes = _AEAD_SIZES.get(value)
        if sizes is not None:
            return sizes
    return _AEAD_SIZES[aead_algorithm(value).id]


class DerivedKeys(NamedTuple):
    """Sender Key, Recipient Key and Common IV (RFC 8613 §3.2.1)."""

    sender_key: bytes
    recipient_key: bytes
    common_iv: bytes

    def __repr__(self) -> str:
        return f"DerivedKeys(<{len(self.sender_key)}-byte keys>, common_iv={self.common_iv.hex()})"


def build_master_salt(salt: bytes | None, nonce1: bytes, nonce2: bytes) -> bytes:
    """Master Salt = salt | N1 | N2, each encoded as a CBOR byte string (RFC 9203 §4.3).

    An absent salt is the empty byte string, so it contributes ``0x40``.
    """
    salt = salt or b""
    if type(salt) is bytes and type(nonce1) is bytes and type(nonce2) is bytes:
        return _bstr(salt) + _bstr(nonce1) + _bstr(nonce2)
    return b"".join(cbor.dumps(part) for part in (salt, nonce1, nonce2))


def derive_context_parameters(
    material: OscoreInputMaterial,
    nonce1: bytes,
    nonce2: bytes,
    client_recipient_id: bytes,
    server_recipient_id: bytes,
    role: Literal["client", "rs"] = "client",
) -> DerivedContext:
    """The OSCORE Security Context parameters of RFC 9203 §4.3.

    ``client_recipient_id`` is ID1 (sent by the client), ``server_recipient_id`` ID2
    (sent by the RS). The client's Sender ID is ID2 and its Recipient ID is ID1; the
    RS has the reverse. ID1 == ID2 is refused: both keys would be equal. The nonces
    are checked here; for nonces already checked, see :func:`context_parameters`.
    """
    _check_role(role)
    check_nonce(nonce1, "nonce1")
    check_nonce(nonce2, "nonce2")
    return context_parameters(
        material, nonce1, nonce2, client_recipient_id, server_recipient_id, role=role
    )


def context_parameters(
    material: OscoreInputMaterial,
    nonce1: bytes,
    nonce2: bytes,
    client_recipient_id: bytes,
    server_recipient_id: bytes,
    *,
    role: Literal["client", "rs"],
) -> DerivedContext:
    """:func:`derive_context_parameters` for nonces checked where they were decoded.

    The Recipient IDs are checked against the AEAD of ``material`` (RFC 8613 §3.3:
    at most nonce length - 6 bytes), which only the token tells, and against each
    other.
    """
    _check_role(role)
    alg, _key_bytes, iv_bytes = _aead_sizes(
        OSCORE_DEFAULT_AEAD if material.alg is None else material.alg
    )
    limit = iv_bytes - 6
    id1 = check_recipient_id(client_recipient_id, "ace_client_recipientId", limit)
    id2 = check_recipient_id(server_recipient_id, "ace_server_recipientId", limit)
    if id1 == id2:
        raise InvalidRequest("ace_client_recipientId equals ace_server_recipientId")
    sender_id, recipient_id = (id2, id1) if role == "client" else (id1, id2)
    # Every check of DerivedContext.__post_init__ has been made: the AEAD and the
    # Recipient IDs just above, the HKDF, Master Secret, salt and ID Context by
    # OscoreInputMaterial; the Master Salt is built here as bytes. So the object is
    # made without running them a second time.
    return frozen_record(
        DerivedContext,
        master_secret=material.ms,
        master_salt=build_master_salt(material.salt, nonce1, nonce2),
        id_context=material.context_id,
        sender_id=sender_id,
        recipient_id=recipient_id,
        alg=alg,
        hkdf=material.hkdf_value,
    )


def _check_role(role: str) -> None:
    if role not in ("client", "rs"):
        raise ValueError(f"role must be 'client' or 'rs', not {role!r}")


def _bstr(data: bytes) -> bytes:
    """A definite-length CBOR byte string (RFC 8949 §3.1, major type 2): head, then ``data``."""
    size = len(data)
    return (_BSTR_HEADS[size] if size < 0x100 else cbor.head(2, size)) + data


#: The heads of byte strings shorter than 256 bytes.
_BSTR_HEADS = tuple(cbor.head(2, size) for size in range(0x100))
#: The end of an ``info`` array, ``alg_aead, type, L``, per such triple met (few exist).
_INFO_TAILS: dict[tuple[int, str, int], bytes] = {}


def kdf_info(
    id_: bytes, id_context: bytes | None, alg_aead: int, type_: Literal["Key", "IV"], length: int
) -> bytes:
    """The CBOR ``info`` array [id, id_context, alg_aead, type, L] (RFC 8613 §3.2.1).

    An array of plain items holds no map to order, so the bytes are those any CBOR
    encoder writes; they are put together here from the items' encodings.
    """
    if type(id_) is not bytes or not (id_context is None or type(id_context) is bytes):
        return cbor.dumps([id_, id_context, alg_aead, type_, length])
    return (
        b"\x85"
        + _bstr(id_)
        + (b"\xf6" if id_context is None else _bstr(id_context))
        + _info_tail(alg_aead, type_, length)
    )


def _info_tail(alg_aead: int, type_: str, length: int) -> bytes:
    """The encoding of ``alg_aead, type, L``, kept for the triples met (bounded: few exist)."""
    key = (alg_aead, type_, length)
    tail = _INFO_TAILS.get(key) if type(alg_aead) is int and type(length) is int else None
    if tail is None:
        tail = cbor.dumps(alg_aead) + cbor.dumps(type_) + cbor.dumps(length)
        if type(alg_aead) is int and type(length) is int and len(_INFO_TAILS) < 64:
            _INFO_TAILS[key] = tail
    return tail


#: HMAC's inner and outer pads (RFC 2104 §2): a key padded to the block is XORed with each
#: byte value through these tables, as the standard library's own HMAC does.
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_SHA256_BLOCK = 64
_SHA256_SIZE = 32


def _hmac_sha256_pads(key: bytes) -> tuple[Any, Any]:
    """The SHA-256 states after HMAC's inner and outer padded keys (RFC 2104 §2).

    HMAC-SHA-256(K, m) is then SHA-256(opad state | SHA-256(ipad state | m)), each
    state copied per message: the keys of RFC 8613 §3.2.1 are three messages under
    one PRK. (OpenSSL 3's one-shot HMAC sets up a MAC context per call, which costs
    more than the two hashes of a short message.)
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\x00")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def _hmac_sha256(pads: tuple[Any, Any], message: bytes) -> bytes:
    """HMAC-SHA-256 of ``message`` under the key of ``pads`` (:func:`_hmac_sha256_pads`)."""
    inner = pads[0].copy()
    inner.update(message)
    outer = pads[1].copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def _hmac_sha256_once(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA-256 of one message (RFC 2104 §2): each padded key hashed with what follows
    it in one call, no hash state kept for a second message."""
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\x00")
    inner = hashlib.sha256(key.translate(_IPAD) + message).digest()
    digest: bytes = hashlib.sha256(key.translate(_OPAD) + inner).digest()
    return digest


def _hkdf_extract(ctx: DerivedContext) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2): PRK = HMAC-Hash(Master Salt, Master Secret).

    The same for the three derivations of RFC 8613 §3.2.1 (each is HKDF with the
    same salt and input keying material), so it is computed once.
    """
    if ctx.hkdf == HKDF_SHA256:
        return _hmac_sha256_once(ctx.master_salt, ctx.master_secret)
    mac = HMAC(ctx.master_salt, HKDF_HASHES[ctx.hkdf]())  # pragma: no cover - SHA-256 only
    mac.update(ctx.master_secret)
    return mac.finalize()


def _hkdf_expand(ctx: DerivedContext, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3) of ``prk`` to ``length`` bytes."""
    return HKDFExpand(algorithm=HKDF_HASHES[ctx.hkdf](), length=length, info=info).derive(prk)


def derive_keys(ctx: DerivedContext) -> DerivedKeys:
    """Sender Key, Recipient Key and Common IV by HKDF (RFC 8613 §3.2.1).

    The keys use the Sender/Recipient ID as ``id`` and the AEAD key length as ``L``;
    the Common IV uses the empty ``id`` and the AEAD nonce length. The three share
    one HKDF-Extract (:func:`_hkdf_extract`). Every OSCORE key and nonce fits in one
    SHA-256 output, so HKDF-Expand is its first block, T(1) = HMAC-Hash(PRK, info |
    0x01), cut to ``L`` (RFC 5869 §2.3), the three under one PRK's HMAC pads.
    """
    alg, key_bytes, iv_bytes = _aead_sizes(ctx.alg)
    id_context = ctx.id_context
    key_tail = _info_tail(alg, "Key", key_bytes)
    infos = (
        _info(ctx.sender_id, id_context, key_tail),
        _info(ctx.recipient_id, id_context, key_tail),
        _info(b"", id_context, _info_tail(alg, "IV", iv_bytes)),
    )
    prk = _hkdf_extract(ctx)
    if ctx.hkdf == HKDF_SHA256 and key_bytes <= _SHA256_SIZE and iv_bytes <= _SHA256_SIZE:
        pads = _hmac_sha256_pads(prk)
        return DerivedKeys(
            _hmac_sha256(pads, infos[0] + b"\x01")[:key_bytes],
            _hmac_sha256(pads, infos[1] + b"\x01")[:key_bytes],
            _hmac_sha256(pads, infos[2] + b"\x01")[:iv_bytes],
        )
    return DerivedKeys(  # pragma: no cover - every AEAD's key and nonce fit in one SHA-256 block
        _hkdf_expand(ctx, prk, infos[0], key_bytes),
        _hkdf_expand(ctx, prk, infos[1], key_bytes),
        _hkdf_expand(ctx, prk, infos[2], iv_bytes),
    )


def _info(id_: bytes, id_context: bytes | None, tail: bytes) -> bytes:
    """:func:`kdf_info` of byte strings, with the encoded ``alg_aead, type, L`` given."""
    return b"\x85" + _bstr(id_) + (b"\xf6" if id_context is None else _bstr(id_context)) + tail


__all__ = [
    "DerivedContext",
    "DerivedKeys",
    "build_master_salt",
    "context_parameters",
    "derive_context_parameters",
    "derive_keys",
    "kdf_info",
]
