"""Group commit of token records: concurrent issue requests share one commit.

Each issued token is recorded before its answer is sent (RFC 9200 §5.9: what
introspection answers from). One transaction per token makes the commit, not the
token, the unit of work; :class:`TokenWriter` lets the requests that arrive while a
commit is under way wait together, and the next commit writes all of their rows.

There is no writer thread: the first request to find no commit under way leads. It
takes every row waiting (at most :data:`MAX_BATCH_ROWS`), commits them, wakes their
requests, and hands the lead to the oldest request still waiting, so no request
commits for others after its own row is written. :meth:`TokenWriter.record` returns
only once its row is committed; when a commit fails, every request whose row was in
it gets :class:`TokenNotRecorded` (none of those tokens is answered, none is lost
silently), and the requests waiting behind it go on with the next commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from keybound.core.authz_store import AuthzStoreError, IssuedToken

__all__ = ["MAX_BATCH_ROWS", "TokenNotRecorded", "TokenWriter"]

#: The most rows one commit writes; the rest wait for the next (bounds a statement).
MAX_BATCH_ROWS = 256


class TokenNotRecorded(AuthzStoreError):
    """The commit holding this token's record failed: the token must not be answered."""


class _Waiter:
    __slots__ = ("done", "error", "token", "woken")

    def __init__(self, token: IssuedToken) -> None:
        self.token = token
        #: set when its commit is over or the lead is handed to it; made only for a
        #: request that waits (a request that leads at once never needs one)
        self.woken: threading.Event | None = None
        self.done = False
        self.error: BaseException | None = None


class TokenWriter:
    """Record tokens through ``write_many`` (one transaction for all rows given), the
    rows of concurrent callers in one call. Safe to share between threads."""

    def __init__(self, write_many: Callable[[Sequence[IssuedToken]], None]) -> None:
        self._write_many = write_many
        self._lock = threading.Lock()
        self._waiting: list[_Waiter] = []
        self._leading = False
        #: commits made (each a call of ``write_many``), for tests and figures
        self.commits = 0

    @property
    def waiting(self) -> int:
        """Rows waiting for a commit, besides those of a commit under way."""
        with self._lock:
            return len(self._waiting)

    @property
    def committing(self) -> bool:
        """Whether a request leads (a commit is under way or about to start)."""
        with self._lock:
            return self._leading

    def record(self, token: IssuedToken) -> None:
        """Return once ``token``'s row is committed; raise :class:`TokenNotRecorded`
        if the commit holding it failed."""
        waiter = _Waiter(token)
        with self._lock:
            self._waiting.append(waiter)
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                waiter.woken = woken = threading.Event()
        if not lead:
            woken.wait()
        if not waiter.done:  # it leads: first in, or handed the lead
            self._commit_batch()
        if waiter.error is not None:
            raise TokenNotRecorded(
                f"the token was not recorded, so it is not issued: {waiter.error}"
            ) from waiter.error

    def _commit_batch(self) -> None:
        with self._lock:
            batch = self._waiting[:MAX_BATCH_ROWS]
            del self._waiting[:MAX_BATCH_ROWS]
        error: BaseException | None = None
        try:
            self._write_many([w.token for w in batch])
        except BaseException as exc:  # every row of the batch fails with it
            error = exc
        with self._lock:
            self.commits += 1
            following = self._waiting[0] if self._waiting else None
            if following is None:
                self._leading = False
        for w in batch:
            w.error = error
            w.done = True
            if w.woken is not None:
                w.woken.set()
        if following is not None:
            assert following.woken is not None  # it queued behind a lead: it waits
            following.woken.set()
        if not isinstance(error, Exception | None):
            raise error  # KeyboardInterrupt and the like, after every waiter was woken
