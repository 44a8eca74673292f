"""DPoP server state (RFC 9449 §8, §9, §11.1): the ``jti`` replay cache and stateless nonces.

Sans-IO: ``now`` is a parameter. :class:`ReplayCache` is what remembers ``jti``
values for the window in which a proof would be accepted (the caches live in
:mod:`keybound.tools.http.replay_cache`: one in memory, one in a database);
:class:`NonceIssuer` makes nonces the server can check without storing them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Protocol

from .errors import CapacityExceeded, InvalidDPoPProof, UseDPoPNonce


class ReplayedProof(InvalidDPoPProof):
    """the DPoP proof's jti was seen before for this target URI (RFC 9449 §11.1)"""


class ReplayCacheFull(CapacityExceeded):
    """the DPoP replay cache is full of unexpired entries; new proofs are refused"""


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# ---- replay cache (RFC 9449 §11.1) ----------------------------------------------------------


def replay_digest(key: str, jti: str) -> bytes:
    """What a replay cache stores for ``jti`` at target URI ``key``: a SHA-256 digest
    (RFC 9449 §11.1 suggests storing hashes), length-prefixed so no two pairs collide."""
    return hashlib.sha256(
        len(key).to_bytes(4, "big") + key.encode("utf-8") + jti.encode("utf-8")
    ).digest()


class ReplayCache(Protocol):
    """Remembers DPoP proof ``jti`` values per target URI (RFC 9449 §11.1).

    ``check_and_store`` raises :class:`ReplayedProof` when ``(key, jti)`` was
    stored before and has not expired, and otherwise stores it until
    ``expires_at`` (inclusive): :func:`keybound.core.dpop.verify_proof` passes
    ``iat + iat_window``, the last second at which it accepts the proof, so an
    entry lives at least as long as the proof is acceptable. A store that cannot
    take the entry must raise too (for example :class:`ReplayCacheFull`), never
    silently forget it. ``keybound.tools.http.replay_cache.InMemoryReplayCache``
    serves one process; ``keybound.tools.http.replay_cache.SqlReplayCache`` is shared by processes
    (RFC 9449 §11.1: a proof must be refused by every server behind its URI).
    """

    def check_and_store(self, key: str, jti: str, expires_at: int, now: int) -> None: ...


# ---- server nonces (RFC 9449 §8, §9, §11.2) -------------------------------------------------


class NonceChecker(Protocol):
    """Issues and checks server-provided DPoP nonces (RFC 9449 §8, §9)."""

    def issue(self, now: int) -> str: ...

    def check(self, nonce: str | None, now: int) -> None:
        """Raise :class:`UseDPoPNonce` with a fresh nonce unless ``nonce`` is current."""
        ...


_SLOT_BYTES = 8
_TAG_BYTES = 16
#: Slots whose nonces a :class:`NonceIssuer` keeps computed (the current and the previous one).
_RECENT_SLOTS = 4


class NonceIssuer:
    """Stateless DPoP nonces: ``base64url(slot || HMAC-SHA256(secret, slot)[:16])``.

    ``slot`` is ``now // slot_seconds`` as 8 big-endian bytes. A nonce is
    accepted during its slot and the next one, so it lives between
    ``slot_seconds`` and twice that; the server's clock alone decides, which
    bounds proof lifetime even when the client's clock is wrong (RFC 9449
    §11.1, §11.2). Nonces are unpredictable without the secret (RFC 9449 §8);
    use one secret per server, since a nonce must be accepted only by the
    server that issued it (RFC 9449 §9), and at least 32 random bytes.
    """

    def __init__(self, secret: bytes, slot_seconds: int = 60) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if slot_seconds < 1:
            raise ValueError("slot_seconds must be at least 1")
        self._secret = secret
        self.slot_seconds = slot_seconds
        # The nonces of the last few slots, so that a check computes no HMAC:
        # only the server's own clock picks the slots, never a client.
        self._recent: dict[int, str] = {}

    def _nonce_for_slot(self, slot: int) -> str:
        known = self._recent.get(slot)
        if known is not None:
            return known
        slot_bytes = slot.to_bytes(_SLOT_BYTES, "big")
        tag = hmac.new(self._secret, slot_bytes, hashlib.sha256).digest()[:_TAG_BYTES]
        nonce = _b64url_encode(slot_bytes + tag)
        if len(self._recent) >= _RECENT_SLOTS:
            self._recent.clear()
        self._recent[slot] = nonce
        return nonce

    def issue(self, now: int) -> str:
        """The nonce of the current slot."""
        return self._nonce_for_slot(now // self.slot_seconds)

    def check(self, nonce: str | None, now: int) -> None:
        """Accept a nonce of the current or the previous slot, else raise
        :class:`UseDPoPNonce` carrying the current nonce (RFC 9449 §8, §11.3)."""
        if nonce is None:
            raise UseDPoPNonce(
                "the server requires a nonce in the DPoP proof", nonce=self.issue(now)
            )
        # A good nonce is the nonce of the current or the previous slot, byte for byte;
        # both are kept computed. (A client's string may hold lone surrogates.)
        given = nonce.encode("utf-8", "surrogatepass")
        current = now // self.slot_seconds
        for slot in (current, current - 1):
            if hmac.compare_digest(self._nonce_for_slot(slot).encode("ascii"), given):
                return
        raise UseDPoPNonce("the DPoP nonce is stale or invalid", nonce=self.issue(now))


__all__ = [
    "NonceChecker",
    "NonceIssuer",
    "ReplayCache",
    "ReplayCacheFull",
    "ReplayedProof",
    "replay_digest",
]
