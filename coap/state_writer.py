"""The RS's state store protocol, and its writer: one worker thread, so the event loop never waits.

:class:`RsStateStore` is the durable storage of the RS (the records are the core's,
:mod:`keybound.core.token_store`); only this binding calls it.

Every write of an :class:`RsStateStore` is a
synchronous commit (``synchronous=FULL`` in the SQLite store). Made on the event
loop, a thousand of them, one per expired token, kept the RS from answering
anything for about 20 s. :class:`StateWriter` runs every call on a single worker
thread, in the order the calls were made (one thread, one FIFO queue), so:

* writes a response depends on are awaited (:meth:`StateWriter.run`): the
  response goes out after they are durable, and the loop serves other requests
  meanwhile;
* writes nothing waits for (the deletion of expired or dropped tokens) are
  queued (:meth:`StateWriter.submit`) and batched by the caller into one
  transaction (:meth:`RsStateStore.delete_contexts`);
  a crash before they commit loses nothing: a restart refuses the expired tokens
  again and deletes them then;
* the Sender Sequence Number mark, which must be durable before the response
  that uses a number of the new chunk (RFC 8613 Appendix B.1.1), is written
  through the blocking methods of the store protocol, which wait for the worker:
  it still reaches the disk, after every write queued before it, before the
  response is protected. That happens once per chunk of numbers.

The writer itself implements the store protocol with blocking calls, so code
that needs a durable write at once (the sequence number marks, startup) uses it
as the store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import ParamSpec, Protocol, TypeVar

from keybound.core.token_store import PersistedContext, PersistedState, ShutdownRecord

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("keybound.rs.state")


class RsStateStore(Protocol):
    """Durable storage of the RS (implemented over SQLite by ``keybound.tools``).

    Every method must be durable when it returns: the RS answers only afterwards.
    The RS calls them off its event loop, on one worker thread, in order.

    Replay windows (RFC 8613 Appendix B.1.2) are kept only across a clean
    shutdown: :meth:`save_clean_shutdown` stores the windows and then the clean
    shutdown marker, and :meth:`clear_clean_shutdown`, called at startup before
    anything is served, removes both. After a crash there is no marker, and the
    restarted RS rebuilds its windows through Echo.
    """

    def load(self) -> PersistedState: ...

    def put_context(self, record: PersistedContext) -> None: ...

    def delete_context(self, key_id: bytes) -> None: ...

    def delete_contexts(self, key_ids: Sequence[bytes]) -> None:
        """Delete the contexts of all ``key_ids`` in one transaction (expiry removes many)."""
        ...

    def put_sender_mark(self, key_id: bytes, mark: int) -> None: ...

    def put_exi_sequence_mark(self, mark: int) -> None: ...

    def save_clean_shutdown(self, records: Iterable[ShutdownRecord]) -> None:
        """Replace the saved windows by ``records``, then write the clean shutdown marker."""
        ...

    def clear_clean_shutdown(self) -> None:
        """Remove the clean shutdown marker and the saved windows."""
        ...

    def close(self) -> None: ...


class StateWriter:
    """Runs an :class:`RsStateStore`'s calls in order on one worker thread."""

    def __init__(self, store: RsStateStore) -> None:
        self.store = store
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="keybound-rs-state"
        )
        #: How many calls reached the worker (each is one transaction of the store).
        self.calls = 0
        self._last: concurrent.futures.Future[object] | None = None

    def submit(
        self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(*args)`` after every call queued before; a failure is logged."""

        def call() -> T:
            self.calls += 1
            return fn(*args, **kwargs)

        future = self._worker.submit(call)
        future.add_done_callback(_log_failure)
        self._last = future  # type: ignore[assignment]
        return future

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args)`` on the worker, after every earlier call; the loop stays free."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def wait(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args)`` on the worker, after every earlier call, blocking until it is done."""
        return self.submit(fn, *args, **kwargs).result()

    async def drain(self) -> None:
        """Wait until every call queued so far is done (failed ones included)."""
        last = self._last
        if last is not None:
            await asyncio.wait([asyncio.wrap_future(last)])

    # -- the store protocol, blocking (durable when it returns) --

    def load(self) -> PersistedState:
        return self.wait(self.store.load)

    def put_context(self, record: PersistedContext) -> None:
        self.wait(self.store.put_context, record)

    def delete_context(self, key_id: bytes) -> None:
        self.wait(self.store.delete_context, key_id)

    def delete_contexts(self, key_ids: Sequence[bytes]) -> None:
        self.wait(self.store.delete_contexts, key_ids)

    def put_sender_mark(self, key_id: bytes, mark: int) -> None:
        self.wait(self.store.put_sender_mark, key_id, mark)

    def put_exi_sequence_mark(self, mark: int) -> None:
        self.wait(self.store.put_exi_sequence_mark, mark)

    def save_clean_shutdown(self, records: Iterable[ShutdownRecord]) -> None:
        self.wait(self.store.save_clean_shutdown, list(records))

    def clear_clean_shutdown(self) -> None:
        self.wait(self.store.clear_clean_shutdown)

    def close(self) -> None:
        """Finish the queued calls, close the store, stop the worker."""
        try:
            self.wait(self.store.close)
        finally:
            self._worker.shutdown(wait=True)


def _log_failure(future: concurrent.futures.Future[T]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("RS state write failed: %s", future.exception())


__all__ = ["RsStateStore", "StateWriter"]
