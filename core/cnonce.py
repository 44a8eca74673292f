"""Client nonces of the Resource Server (RFC 9200 §5.3.1).

An RS that requires a ``cnonce`` hands one out in its AS Request Creation Hints
and accepts a token only if it carries a nonce the RS issued, once, within the
nonce's lifetime. The cache of outstanding nonces is bounded: when it is full
the oldest nonce is dropped.
"""

from __future__ import annotations

import hmac

from .errors import InvalidToken


class CnonceCache:
    """Outstanding client nonces (RFC 9200 §5.3.1): bounded, single use, with a lifetime."""

    def __init__(self, capacity: int, lifetime: float) -> None:
        self.capacity = capacity
        self.lifetime = lifetime
        self._issued: dict[bytes, float] = {}

    def issue(self, value: bytes, *, monotonic: float) -> bytes:
        self._purge(monotonic)
        while len(self._issued) >= self.capacity:
            del self._issued[next(iter(self._issued))]  # the oldest goes first
        self._issued[value] = monotonic + self.lifetime
        return value

    def consume(self, value: bytes | None, *, monotonic: float) -> None:
        self._purge(monotonic)
        if value is None:
            raise InvalidToken("the token lacks the cnonce this RS requires", claim="cnonce")
        for known in list(self._issued):
            if hmac.compare_digest(known, value):
                del self._issued[known]
                return
        raise InvalidToken("the token's cnonce is unknown, used or expired", claim="cnonce")

    def _purge(self, monotonic: float) -> None:
        for value, deadline in list(self._issued.items()):
            if monotonic >= deadline:
                del self._issued[value]


__all__ = ["CnonceCache"]
