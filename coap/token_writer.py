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

:class:`Batches` is the same idea one step earlier, on the event loop: the requests
that meet there are handed to one worker thread together, which issues all of their
tokens and commits all of their rows in one transaction. No thread blocks waiting for
another's commit, so a commit takes every request in flight, however few threads the
executor has (the AS's ``/token`` over CoAP and over HTTP, through
:meth:`keybound.coap.authz_service.AuthzService.issue_token_batched`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from keybound.core.authz_store import AuthzStoreError, IssuedToken

__all__ = [
    "DEFAULT_GATHER_TURNS",
    "DEFAULT_MAX_BATCH",
    "MAX_BATCH_ROWS",
    "Batches",
    "TokenNotRecorded",
    "TokenWriter",
]

#: The most rows one commit writes; the rest wait for the next (bounds a statement).
MAX_BATCH_ROWS = 256
#: Items one :class:`Batches` batch takes at most (one thread hop, one commit).
DEFAULT_MAX_BATCH = 64
#: Event-loop turns a batch waits at most for more items before it starts, as long as
#: every turn brings one (a group commit's delay, counted in turns, not seconds).
DEFAULT_GATHER_TURNS = 16

T = TypeVar("T")
R = TypeVar("R")


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


class Batches(Generic[T, R]):
    """Items submitted on one event loop, handed to ``run`` in batches in a worker thread.

    ``run`` takes a batch and returns one result per item, in order (it blocks: it runs
    in ``asyncio.to_thread``). The items submitted while a batch runs wait and form the
    next one (at most ``max_batch``; an item alone is a batch of one). Before a batch
    starts, the event loop runs on while each of its turns brings another item,
    ``gather_turns`` turns at most, so that work already on its way (datagrams read,
    coroutines about to submit) joins it rather than wait for the next. When ``run``
    raises, every item of its batch gets that exception. Use from one event loop.
    """

    def __init__(
        self,
        run: Callable[[Sequence[T]], Sequence[R]],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        gather_turns: int = DEFAULT_GATHER_TURNS,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._run = run
        self.max_batch = max_batch
        self.gather_turns = gather_turns
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining = False
        self._drainer: asyncio.Future[None] | None = None
        #: batches run so far (each one thread hop)
        self.batches = 0

    async def submit(self, item: T) -> R:
        """``item``'s result, from the batch it joins."""
        result: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, result))
        if not self._draining:
            self._draining = True
            self._drainer = asyncio.ensure_future(self._drain())
        return await result

    async def _gather(self) -> None:
        """Let the event loop run while each of its turns brings more items (at most
        ``gather_turns`` turns, until a batch is full). An item alone waits one turn."""
        for _turn in range(self.gather_turns):
            before = len(self._waiting)
            if before >= self.max_batch:
                return
            await asyncio.sleep(0)  # one turn of the loop
            if len(self._waiting) == before:
                return

    async def _drain(self) -> None:
        """Run the waiting items, batch after batch, until none waits."""
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                await self._gather()
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                items = [item for item, _result in batch]
                try:
                    results = await asyncio.to_thread(self._run, items)
                except Exception as exc:
                    for _item, result in batch:
                        if not result.done():  # its caller may have been cancelled
                            result.set_exception(exc)
                else:
                    if len(results) != len(batch):
                        error = RuntimeError(f"{len(results)} results for {len(batch)} items")
                        for _item, result in batch:
                            if not result.done():
                                result.set_exception(error)
                    else:
                        for (_item, result), value in zip(batch, results, strict=True):
                            if not result.done():
                                result.set_result(value)
                finally:
                    self.batches += 1
                batch = []
        finally:
            self._draining = False
            for _item, result in [*batch, *self._waiting]:
                result.cancel()  # only when the event loop itself cancelled this task
            self._waiting.clear()
