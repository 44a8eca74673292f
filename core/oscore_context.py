"""OSCORE sequence numbers across reboots and the replay window (RFC 8613 §7.4, Appendix B.1).

Pure state machines: they decide, the caller stores. Nothing here touches a disk
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

:class:`ReplayWindow` is the sliding window of received Partial IVs of RFC 8613
§7.4 (default 32 entries, as in DTLS). After a reboot that lost the window, it is
*uninitialised*: every request needs a freshness proof by the Echo option (RFC 8613
Appendix B.1.2, RFC 9175) before the window is set from that request.
"""

from __future__ import annotations

from typing import ClassVar

from .errors import CapacityExceeded, KeyboundError

#: Largest Sender Sequence Number (RFC 8613 §7.2.1: 40 bits).
MAX_SEQUENCE_NUMBER = 2**40 - 1
#: Default replay window size (RFC 8613 §7.4).
DEFAULT_REPLAY_WINDOW = 32
#: Largest replay window keybound accepts (the window is a bitmap of this many bits).
MAX_REPLAY_WINDOW = 1024
#: Largest chunk of sequence numbers reserved by one write.
MAX_CHUNK = 2**20


class SequenceNumberExhausted(CapacityExceeded):
    """the OSCORE Sender Sequence Number space is exhausted; a new context is needed"""


class ReplayDetected(KeyboundError):
    """the OSCORE Partial IV was already received or is older than the replay window"""

    ace_code = None
    coap_code = (4, 1)
    http_status = 401


class EchoRequired(ReplayDetected):
    """the replay window is not initialised since a reboot; freshness must be proven by Echo"""


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


class ReplayWindow:
    """Sliding replay window over received Partial IVs (RFC 8613 §7.4).

    ``top`` is the highest Partial IV accepted; bit ``i`` of the bitmap stands for
    ``top - i``. A Partial IV is fresh if it is above ``top``, or inside the window
    with its bit clear. The window must only be updated after the request has been
    verified: use :meth:`check` before decryption and :meth:`update` after, or
    :meth:`check_and_update` when both happen together.
    """

    size: int
    _top: int
    _bitmap: int
    _initialised: bool

    DEFAULT_SIZE: ClassVar[int] = DEFAULT_REPLAY_WINDOW

    def __init__(self, size: int = DEFAULT_REPLAY_WINDOW, *, initialised: bool = True) -> None:
        if (
            isinstance(size, bool)
            or not isinstance(size, int)
            or not 1 <= size <= MAX_REPLAY_WINDOW
        ):
            raise ValueError(f"replay window size must be between 1 and {MAX_REPLAY_WINDOW}")
        self.size = size
        self._top = -1
        self._bitmap = 0
        self._initialised = initialised

    @classmethod
    def after_reboot(cls, size: int = DEFAULT_REPLAY_WINDOW) -> ReplayWindow:
        """A window whose state was lost: requests need Echo (RFC 8613 Appendix B.1.2)."""
        return cls(size, initialised=False)

    @property
    def needs_echo(self) -> bool:
        """True until :meth:`initialise_from_verified` was called after a reboot."""
        return not self._initialised

    @property
    def top(self) -> int:
        """The highest Partial IV accepted so far, -1 if none."""
        return self._top

    def _fresh(self, piv: int) -> bool:
        if piv > self._top:
            return True
        offset = self._top - piv
        return offset < self.size and not (self._bitmap >> offset) & 1

    def check(self, piv: int) -> None:
        """Raise :class:`ReplayDetected` (or :class:`EchoRequired`) unless ``piv`` is fresh."""
        piv = _check_seqno(piv, "Partial IV")
        if piv > MAX_SEQUENCE_NUMBER:
            raise ValueError("Partial IV must be at most 2**40 - 1")
        if not self._initialised:
            raise EchoRequired()
        if not self._fresh(piv):
            if piv <= self._top - self.size:
                raise ReplayDetected("Partial IV is older than the replay window")
            raise ReplayDetected("Partial IV was already received")

    def update(self, piv: int) -> None:
        """Mark a verified ``piv`` as received; raises if it is not fresh."""
        self.check(piv)
        if piv > self._top:
            shift = piv - self._top
            # A jump of a window or more forgets everything; never build a huge integer.
            kept = (self._bitmap << shift) & ((1 << self.size) - 1) if shift < self.size else 0
            self._bitmap = kept | 1
            self._top = piv
        else:
            self._bitmap |= 1 << (self._top - piv)

    def check_and_update(self, piv: int) -> None:
        """:meth:`check` and :meth:`update` in one step."""
        self.update(piv)

    def initialise_from_verified(self, piv: int) -> None:
        """Set the window from a request whose freshness Echo proved (RFC 8613 B.1.2).

        That Partial IV and every lower one are refused from now on: any of them
        may have been received before the reboot.
        """
        piv = _check_seqno(piv, "Partial IV")
        if piv > MAX_SEQUENCE_NUMBER:
            raise ValueError("Partial IV must be at most 2**40 - 1")
        self._top = piv
        self._bitmap = (1 << self.size) - 1
        self._initialised = True

    def state(self) -> tuple[int, int]:
        """``(top, bitmap)`` for callers that persist the window."""
        return self._top, self._bitmap

    @classmethod
    def from_state(cls, top: int, bitmap: int, size: int = DEFAULT_REPLAY_WINDOW) -> ReplayWindow:
        """Restore a window saved with :meth:`state`."""
        window = cls(size)
        if top != -1:
            _check_seqno(top, "top")
        if isinstance(bitmap, bool) or not isinstance(bitmap, int) or not 0 <= bitmap < 1 << size:
            raise ValueError("bitmap does not fit the window")
        window._top = top
        window._bitmap = bitmap
        return window


__all__ = [
    "DEFAULT_REPLAY_WINDOW",
    "MAX_SEQUENCE_NUMBER",
    "EchoRequired",
    "ReplayDetected",
    "ReplayWindow",
    "SequenceNumberExhausted",
    "SequenceNumberReservation",
]
