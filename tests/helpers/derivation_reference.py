"""keybound.core.oscore_derivation as it was before its derivation was put together by hand.

The reference of tests/unit/test_derivation_differential.py: the same results and the
same errors are expected of the current module. Do not change it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keybound.core import cbor
from keybound.core.authz_info import (
    check_nonce,
    check_recipient_id,
)
from keybound.core.errors import InvalidRequest
from keybound.core.numbers.cose_algorithms import HKDF_SHA256, OSCORE_DEFAULT_AEAD, Algorithm
from keybound.core.oscore_material import (
    HKDF_HASHES,
    OscoreInputMaterial,
    aead_algorithm,
    hkdf_algorithm,
)

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
        aead = aead_algorithm(self.alg)
        hkdf_algorithm(self.hkdf)
        for name in ("master_secret", "master_salt", "sender_id", "recipient_id"):
            if not isinstance(getattr(self, name), bytes):
                raise InvalidRequest(f"{name} must be a byte string")
        if self.id_context is not None and not isinstance(self.id_context, bytes):
            raise InvalidRequest("id_context must be a byte string")
        limit = aead.iv_bytes - 6
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
        return aead_algorithm(self.alg)


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
    return b"".join(cbor.dumps(part) for part in (salt or b"", nonce1, nonce2))


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
    aead = material.aead
    limit = aead.iv_bytes - 6
    id1 = check_recipient_id(client_recipient_id, "ace_client_recipientId", limit)
    id2 = check_recipient_id(server_recipient_id, "ace_server_recipientId", limit)
    if id1 == id2:
        raise InvalidRequest("ace_client_recipientId equals ace_server_recipientId")
    sender_id, recipient_id = (id2, id1) if role == "client" else (id1, id2)
    return DerivedContext(
        master_secret=material.ms,
        master_salt=build_master_salt(material.salt, nonce1, nonce2),
        id_context=material.context_id,
        sender_id=sender_id,
        recipient_id=recipient_id,
        alg=aead.id,
        hkdf=material.hkdf_value,
    )


def _check_role(role: str) -> None:
    if role not in ("client", "rs"):
        raise ValueError(f"role must be 'client' or 'rs', not {role!r}")


def kdf_info(
    id_: bytes, id_context: bytes | None, alg_aead: int, type_: Literal["Key", "IV"], length: int
) -> bytes:
    """The CBOR ``info`` array [id, id_context, alg_aead, type, L] (RFC 8613 §3.2.1).

    An array of plain items holds no map to order, so the deterministic encoder
    writes the bytes any CBOR encoder writes, without cbor2's encoder set-up.
    """
    return cbor.dumps([id_, id_context, alg_aead, type_, length])


def _hkdf_extract(ctx: DerivedContext) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2): PRK = HMAC-Hash(Master Salt, Master Secret).

    The same for the three derivations of RFC 8613 §3.2.1 (each is HKDF with the
    same salt and input keying material), so it is computed once.
    """
    mac = HMAC(ctx.master_salt, HKDF_HASHES[ctx.hkdf]())
    mac.update(ctx.master_secret)
    return mac.finalize()


def _hkdf_expand(ctx: DerivedContext, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3) of ``prk`` to ``length`` bytes."""
    return HKDFExpand(algorithm=HKDF_HASHES[ctx.hkdf](), length=length, info=info).derive(prk)


def derive_keys(ctx: DerivedContext) -> DerivedKeys:
    """Sender Key, Recipient Key and Common IV by HKDF (RFC 8613 §3.2.1).

    The keys use the Sender/Recipient ID as ``id`` and the AEAD key length as ``L``;
    the Common IV uses the empty ``id`` and the AEAD nonce length. The three share
    one HKDF-Extract (:func:`_hkdf_extract`).
    """
    aead = ctx.aead
    alg, key_bytes, iv_bytes = aead.id, aead.key_bytes, aead.iv_bytes
    prk = _hkdf_extract(ctx)

    def key(id_: bytes) -> bytes:
        info = kdf_info(id_, ctx.id_context, alg, "Key", key_bytes)
        return _hkdf_expand(ctx, prk, info, key_bytes)

    iv_info = kdf_info(b"", ctx.id_context, alg, "IV", iv_bytes)
    return DerivedKeys(
        sender_key=key(ctx.sender_id),
        recipient_key=key(ctx.recipient_id),
        common_iv=_hkdf_expand(ctx, prk, iv_info, iv_bytes),
    )


__all__ = [
    "DerivedContext",
    "DerivedKeys",
    "build_master_salt",
    "context_parameters",
    "derive_context_parameters",
    "derive_keys",
    "kdf_info",
]
