"""OSCORE Sender Sequence Numbers across reboots (RFC 8613 Appendix B.1.1).

A pure state machine: it decides, the caller stores. Nothing here touches a disk
or a clock.

:class:`SequenceNumberReservation` keeps a (Sender Key, Partial IV) pair from ever
being used twice, even across crashes (RFC 8613 Appendix B.1.1). It works with a
*high-water mark* ``M`` kept in persistent storage, with the invariant "no number
``>= M`` has ever been used". Numbers are handed out in chunks of ``K``: when the
next number reaches the mark, :meth:`~SequenceNumberReservation.next` returns a new
mark ``n + K`` that the caller must write durably, and confirm with
:meth:`~SequenceNumberReservation.confirm_persisted`, before it may use ``n``.
After a restart, a new reservation starts at the stored mark; at most ``K``
numbers are skipped. This is the Appendix B.1.1 procedure with the stored value
already advanced by ``K`` (so ``F`` is 0). Until a returned mark is confirmed, no
further number is issued: a failed write can never lead to reuse.

:class:`SequenceBlocks` is the same rule for numbers reserved in blocks by a shared
store (several processes may hold one context, as AS processes sharing a database
do): the store hands out ``[end - count, end)`` atomically and durably, every block
above every block reserved before, and numbers are taken from the current block
only; past its end, :meth:`~SequenceBlocks.next` asks for another one.

The replay window of a received Partial IV is aiocoap's own (RFC 8613 §7.4);
:mod:`keybound.coap.oscore_contexts` saves and restores it.
"""

from __future__ import annotations

from .errors import CapacityExceeded

#: Largest Sender Sequence Number (RFC 8613 §7.2.1: 40 bits).
MAX_SEQUENCE_NUMBER = 2**40 - 1
#: Largest chunk of sequence numbers reserved by one write.
MAX_CHUNK = 2**20


class SequenceNumberExhausted(CapacityExceeded):
    """the OSCORE Sender Sequence Number space is exhausted; a new context is needed"""


def _check_seqno(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer")
    if not 0 <= value <= MAX_SEQUENCE_NUMBER + 1:
        raise ValueError(f"{name} must be between 0 and 2**40")
    return value


class SequenceNumberReservation:
    """Hands out Sender Sequence Numbers in chunks backed by a persisted mark (RFC 8613 B.1.1).

    ``persisted_mark`` is the value last written durably (0 for a fresh context);
    the first number issued is that mark. ``chunk`` is ``K``: one write per ``K``
    numbers, at most ``K`` numbers lost per crash.
    """

    def __init__(self, persisted_mark: int, chunk: int = 64) -> None:
        self._durable = _check_seqno(persisted_mark, "persisted_mark")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= MAX_CHUNK:
            raise ValueError(f"chunk must be between 1 and {MAX_CHUNK}")
        self._chunk = chunk
        self._next = self._durable
        self._pending: int | None = None

    @property
    def durable_mark(self) -> int:
        """The mark known to be persisted: numbers from here on were never used."""
        return self._durable

    @property
    def pending_mark(self) -> int | None:
        """A mark returned by :meth:`next` and not yet confirmed, if any."""
        return self._pending

    @property
    def peek(self) -> int:
        """The number the next call to :meth:`next` would return."""
        return self._next

    def next(self) -> tuple[int, int | None]:
        """Reserve the next number: ``(seqno, mark_to_persist or None)``.

        With a mark, the caller must persist it and call :meth:`confirm_persisted`
        before sending anything with ``seqno``. Raises
        :class:`SequenceNumberExhausted` past 2**40 - 1 and :class:`RuntimeError`
        while a mark is still unconfirmed.
        """
        if self._pending is not None:
            raise RuntimeError(
                f"sequence number mark {self._pending} must be persisted and confirmed first"
            )
        seqno = self._next
        if seqno > MAX_SEQUENCE_NUMBER:
            raise SequenceNumberExhausted()
        self._next = seqno + 1
        if seqno < self._durable:
            return seqno, None
        mark = min(seqno + self._chunk, MAX_SEQUENCE_NUMBER + 1)
        self._pending = mark
        return seqno, mark

    def confirm_persisted(self, mark: int) -> None:
        """Record that ``mark`` (returned by :meth:`next`) is durably stored."""
        if self._pending is None or mark != self._pending:
            raise RuntimeError(f"mark {mark} was not requested")
        self._durable = mark
        self._pending = None


class SequenceBlocks:
    """Sender Sequence Numbers taken from blocks a store reserved durably (RFC 8613 B.1.1).

    Nothing is issued before the first block arrives. :meth:`next` returns the
    next number of the current block, or ``None`` when it is used up: the caller
    then reserves a block (durably, committed before it returns) and hands it to
    :meth:`add_block`. Block sizes double from ``first_chunk`` to ``max_chunk``,
    so a busy context writes rarely and a restart skips at most ``max_chunk``.
    """

    def __init__(self, first_chunk: int = 16, max_chunk: int = 4096) -> None:
        if not 1 <= first_chunk <= max_chunk <= MAX_CHUNK:
            raise ValueError(f"chunks must satisfy 1 <= first <= max <= {MAX_CHUNK}")
        self._next = 0
        self._end = 0
        self._chunk = first_chunk
        self._max_chunk = max_chunk

    @property
    def chunk(self) -> int:
        """How many numbers the next block should hold."""
        return self._chunk

    @property
    def peek(self) -> int:
        """The number :meth:`next` returns next, if the current block has one."""
        return self._next

    def next(self) -> int | None:
        """The next number of the current block, ``None`` once it is used up."""
        if self._next >= self._end:
            return None
        seqno = self._next
        if seqno > MAX_SEQUENCE_NUMBER:
            raise SequenceNumberExhausted()
        self._next = seqno + 1
        return seqno

    def add_block(self, end: int, count: int) -> None:
        """Take ``[end - count, end)``, durably reserved, as the current block.

        A block must lie above every number issued before: a store that handed
        out an overlapping one is refused, never used.
        """
        start = end - count
        if isinstance(end, bool) or not isinstance(end, int) or count < 1 or start < self._next:
            raise RuntimeError(f"block [{start}, {end}) overlaps numbers already used")
        self._next, self._end = start, end
        self._chunk = min(self._chunk * 2, self._max_chunk)


__all__ = [
    "MAX_SEQUENCE_NUMBER",
    "SequenceBlocks",
    "SequenceNumberExhausted",
    "SequenceNumberReservation",
]
