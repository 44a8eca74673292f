"""Bounded block-wise request bodies (RFC 7959 §2.3, §2.9.3, §4).

aiocoap reassembles a Block1 upload in each resource's ``Block1Spool`` without
any bound: a peer that never authenticates can make a server keep (and copy) an
arbitrarily large body for as long as it keeps sending blocks, and can keep any
number of such uploads open at once. keybound replaces that spool with a
:class:`BoundedBlock1Spool`, and checks the outer request before OSCORE
(:func:`refuse_oversized`):

* A request whose body would pass the endpoint's bound is refused with 4.13
  Request Entity Too Large carrying a Size1 option with the bound (RFC 7959
  §2.9.3, RFC 7252 §5.9.2.9), at the first block that passes it, before the
  block is stored. A request announcing a larger body in Size1 (RFC 7959 §4) is
  refused at once. The refused upload is forgotten.
* The uploads in progress are counted in an :class:`UploadTracker` shared by
  all resources of one server: at most ``max_per_peer`` per peer address and
  ``max_total`` in all. Another first block is answered 5.03 Service Unavailable
  with Max-Age (RFC 7252 §5.9.3.4) until one completes or times out after
  ``timeout`` seconds (MAX_TRANSMIT_WAIT, RFC 7252 §4.8.2, as aiocoap uses).
* A block that does not continue the upload it belongs to is 4.08 Request
  Entity Incomplete (RFC 7959 §2.9.2).

So a server never holds more than ``max_total`` uploads of at most their
endpoint's bound each.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from aiocoap import error
from aiocoap.blockwise import ContinueException, _extract_block_key
from aiocoap.message import Message
from aiocoap.numbers import codes
from aiocoap.numbers.constants import TransportTuning

from keybound.core.errors import PayloadTooLarge, TemporarilyUnavailable

from .errors import error_response

#: RFC 7252 §4.8.2 MAX_TRANSMIT_WAIT (93 s): how long an idle partial upload is kept.
UPLOAD_TIMEOUT_S: float = float(TransportTuning().MAX_TRANSMIT_WAIT)

#: Bytes an OSCORE request adds to its inner body (RFC 8613 §4, §6: the 8-byte
#: tag, the inner code and the inner options such as Content-Format and Block1).
OSCORE_OVERHEAD = 64


class BodyTooLarge(error.ConstructionRenderableError):  # type: ignore[misc]
    """4.13 with Size1 = the bound (RFC 7959 §2.9.3) and an RFC 9200 §5.8.3 error map."""

    code = codes.REQUEST_ENTITY_TOO_LARGE

    def __init__(self, bound: int) -> None:
        super().__init__(f"request body exceeds {bound} bytes")
        self.bound = bound

    def to_message(self) -> Message:
        return error_response(
            PayloadTooLarge(f"request body exceeds {self.bound} bytes", limit=self.bound)
        )


class TooManyUploads(error.ConstructionRenderableError):  # type: ignore[misc]
    """5.03 with Max-Age: no room for another partial upload now (RFC 7252 §5.9.3.4)."""

    code = codes.SERVICE_UNAVAILABLE

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many block-wise uploads in progress")
        self.retry_after = retry_after

    def to_message(self) -> Message:
        busy = TemporarilyUnavailable(
            "too many block-wise uploads in progress",
            retry_after=max(1, math.ceil(self.retry_after)),
        )
        return error_response(busy, error_map=False)


def peer_of(remote: Any) -> Hashable:
    """The peer's host address (ports are free to change), under an OSCORE address too."""
    underlying = getattr(remote, "underlying_address", None)
    if underlying is not None:
        remote = underlying
    sockaddr = getattr(remote, "sockaddr", None)
    host: Hashable = getattr(remote, "hostinfo", repr(remote))
    if isinstance(sockaddr, tuple) and sockaddr:
        host = sockaddr[0]
    return host


def refuse_oversized(request: Message, bound: int) -> None:
    """Raise :class:`BodyTooLarge` if ``request`` announces or carries more than ``bound`` bytes.

    Size1 in a request announces the whole body (RFC 7959 §4); a Block1 block ends
    at its offset plus its payload (RFC 7959 §2.3).
    """
    size1 = request.opt.size1
    if size1 is not None and size1 > bound:
        raise BodyTooLarge(bound)
    block1 = request.opt.block1
    start = block1.start if block1 is not None else 0
    if start + len(request.payload) > bound:
        raise BodyTooLarge(bound)


@dataclass
class _Upload:
    peer: Hashable
    message: Message
    touched: float


class UploadTracker:
    """The partial Block1 uploads of one server, bounded per peer and in total."""

    def __init__(
        self,
        *,
        max_per_peer: int = 4,
        max_total: int = 64,
        timeout: float = UPLOAD_TIMEOUT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_peer < 1 or max_total < max_per_peer:
            raise ValueError("need 1 <= max_per_peer <= max_total")
        self.max_per_peer = max_per_peer
        self.max_total = max_total
        self.timeout = timeout
        self.monotonic = monotonic
        self._uploads: dict[Hashable, _Upload] = {}

    def __len__(self) -> int:
        self._prune()
        return len(self._uploads)

    def held_bytes(self) -> int:
        """The body bytes held by the partial uploads in progress."""
        self._prune()
        return sum(len(upload.message.payload) for upload in self._uploads.values())

    def count_for(self, peer: Hashable) -> int:
        """The partial uploads in progress from ``peer``."""
        self._prune()
        return sum(1 for upload in self._uploads.values() if upload.peer == peer)

    def _prune(self) -> None:
        deadline = self.monotonic() - self.timeout
        for key in [k for k, u in self._uploads.items() if u.touched < deadline]:
            del self._uploads[key]

    def start(self, key: Hashable, peer: Hashable, first: Message) -> None:
        """Begin an upload (a block 0 replaces the same upload's earlier attempt)."""
        self._uploads.pop(key, None)
        self._prune()
        if len(self._uploads) >= self.max_total or self.count_for(peer) >= self.max_per_peer:
            oldest = min(upload.touched for upload in self._uploads.values())
            raise TooManyUploads(oldest + self.timeout - self.monotonic())
        self._uploads[key] = _Upload(peer, first, self.monotonic())

    def get(self, key: Hashable) -> Message | None:
        upload = self._uploads.get(key)
        if upload is None or upload.touched < self.monotonic() - self.timeout:
            self._uploads.pop(key, None)
            return None
        upload.touched = self.monotonic()
        return upload.message

    def finish(self, key: Hashable) -> None:
        self._uploads.pop(key, None)


class BoundedBlock1Spool:
    """A drop-in for aiocoap's ``Block1Spool`` that bounds the body and the uploads.

    Install it with :func:`bound_uploads`. aiocoap calls :meth:`feed_and_take`
    for every request to a resource that wants block-wise assembly.
    """

    def __init__(self, max_body: int, tracker: UploadTracker) -> None:
        self.max_body = max_body
        self.tracker = tracker

    def feed_and_take(self, req: Message) -> Message:
        """Return the whole request, or raise 2.31 Continue / 4.08 / 4.13 / 5.03."""
        block1 = req.opt.block1
        key = (id(self), _extract_block_key(req))
        try:
            refuse_oversized(req, self.max_body)
        except BodyTooLarge:
            self.tracker.finish(key)  # the upload this block belongs to is over
            raise
        if block1 is None:
            return req
        if block1.block_number == 0:
            self.tracker.finish(key)  # a new first block discards an earlier attempt
            if not block1.more:
                return req
            self.tracker.start(key, peer_of(req.remote), req)
            raise ContinueException(block1)
        assembly = self.tracker.get(key)
        if assembly is None:
            raise error.RequestEntityIncomplete()
        try:
            assembly._append_request_block(req)
        except ValueError:  # a gap or an overlap: this upload cannot be completed
            self.tracker.finish(key)
            raise error.RequestEntityIncomplete() from None
        except error.RenderableError:
            self.tracker.finish(key)
            raise
        if block1.more:
            raise ContinueException(block1)
        self.tracker.finish(key)
        return assembly


def bound_uploads(resource: Any, max_body: int, tracker: UploadTracker) -> Any:
    """Give an aiocoap resource a :class:`BoundedBlock1Spool`; return the resource.

    aiocoap's ``interfaces.Resource`` keeps its spool in ``_block1``; replacing it
    is the hook aiocoap 0.4 offers for the assembly of request bodies.
    """
    resource._block1 = BoundedBlock1Spool(max_body, tracker)
    return resource


__all__ = [
    "OSCORE_OVERHEAD",
    "UPLOAD_TIMEOUT_S",
    "BodyTooLarge",
    "BoundedBlock1Spool",
    "TooManyUploads",
    "UploadTracker",
    "bound_uploads",
    "peer_of",
    "refuse_oversized",
]
