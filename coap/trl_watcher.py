"""The RS follows the AS's token revocation list (RFC 9770) over CoAP and OSCORE.

:class:`TrlWatcher` observes ``GET /revoke/trl?diff=1`` at the AS over the RS's OSCORE
context with the AS (the one introspection uses; one context object, so its sequence
numbers are never reused). On each answer it takes the hashes into the site's
:class:`~keybound.core.trl.KnownHashes` (a token whose hash is known is refused at
``/authz-info`` from then on, and on restore) and removes at once every stored token
whose hash is listed, with its security context (§10.1; OSCORE and EDHOC profile
alike). The known hashes and the cursor are saved after each answer.

Coming back after being offline, it asks a diff query from its cursor first (§8.2.3,
catching up in one exchange when nothing was lost), a full query when the AS says
updates were lost or it has no cursor (:func:`keybound.core.trl.catch_up`), and then
observes again. Where Observe is not wanted, :meth:`TrlWatcher.run` with ``poll``
asks the same diff queries every ``poll`` seconds instead (``[trl] mode = "poll"``).
While the AS cannot be reached it keeps what it knows and tries again (§10: no
conclusion is drawn).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import aiocoap
from aiocoap import error as aiocoap_error

from keybound.core import trl
from keybound.core.errors import KeyboundError
from keybound.core.numbers.trl import CONTENT_FORMAT_ACE_TRL_CBOR

from .oscore_contexts import DurableSecurityContext

if TYPE_CHECKING:
    from .resource_server_site import ResourceServerSite

log = logging.getLogger("keybound.rs.trl")

#: seconds to wait for one answer of the AS
TIMEOUT = 10.0
#: seconds between attempts while the AS cannot be reached (doubling up to RETRY_MAX)
RETRY = 1.0
RETRY_MAX = 60.0
#: seconds an observation is trusted before it is registered again (after a catch-up)
REREGISTER = 60.0
#: seconds between diff queries while the AS answers without keeping the observation
#: (it holds as many as it will: RFC 7641 §4.1)
UNOBSERVED_POLL = 5.0
#: the query observed: the newest update in each notification (see observe_once)
OBSERVE_QUERY = ("diff=1",)


class TrlWatcher:
    """Keeps ``site.rs.revoked`` current and purges listed tokens at once."""

    def __init__(
        self,
        site: ResourceServerSite,
        uri: str,
        context: DurableSecurityContext,
        known: trl.KnownHashes,
        *,
        save: Callable[[trl.KnownHashes], None] | None = None,
        reregister: float = REREGISTER,
    ) -> None:
        self.site = site
        self.reregister = reregister
        self.full_queries = 0
        self.diff_queries = 0
        self.uri = uri
        self.context = context
        self.known = known
        self.save = save
        site.rs.revoked = known
        self._coap: aiocoap.Context | None = None
        self.updates = 0
        self.purged = 0
        #: an observation is registered and answered (logged when it starts, not at
        #: each registration again)
        self.observing = False
        #: the AS answered the last registration without Observe
        self.unobserved = False
        self.unobserved_poll = UNOBSERVED_POLL
        # Tokens restored from the state file that were listed before a restart go now,
        # before the AS is reached again.
        self._purge(known)

    def _purge(self, listed: Iterable[bytes]) -> None:
        """Remove the stored tokens whose hash is ``listed`` (found by the store's hash
        index: the cost grows with the hashes listed, not with the tokens stored)."""
        doomed = self.site.rs.store.key_ids_of(listed)
        for key_id in doomed:
            self.site.drop(key_id, reason="revoked: on the AS's token revocation list")
        self.purged += len(doomed)

    async def _client(self) -> aiocoap.Context:
        if self._coap is None:
            self._coap = await aiocoap.Context.create_client_context()
            # every query of the endpoint (``?diff=1``, ``cursor``) goes under the context
            self._coap.client_credentials[self.uri + "*"] = self.context
        return self._coap

    def apply(self, payload: bytes) -> trl.TrlUpdate:
        """Take one 2.05 payload in: remember its hashes, drop the tokens they name."""
        update = trl.read_response(payload)
        revoked, _numbers = self.known.apply(update)
        if revoked:
            self._purge(revoked)
        if self.save is not None:
            self.save(self.known)
        self.updates += 1
        return update

    def _request(self, query: tuple[str, ...], observe: bool) -> aiocoap.Message:
        message = aiocoap.Message(code=aiocoap.GET, uri=self.uri)
        message.opt.uri_query = tuple(query)
        if observe:
            message.opt.observe = 0
        return message

    async def _ask(self, query: tuple[str, ...]) -> trl.TrlUpdate:
        if query:
            self.diff_queries += 1
        else:
            self.full_queries += 1
        coap = await self._client()
        response = await asyncio.wait_for(
            coap.request(self._request(query, False)).response, TIMEOUT
        )
        return self.apply(self._payload(response))

    @staticmethod
    def _payload(response: aiocoap.Message) -> bytes:
        if response.code != aiocoap.CONTENT:
            raise OSError(f"the TRL answered {response.code}")
        if response.opt.content_format != CONTENT_FORMAT_ACE_TRL_CBOR:
            raise OSError("the TRL answered with another Content-Format")
        return bytes(response.payload)

    async def catch_up(self) -> None:
        """Diff queries from the cursor while ``more``; a full query when needed."""
        flow = trl.catch_up(self.known.cursor)
        query = next(flow)
        while True:
            update = await self._ask(query)
            try:
                query = flow.send(update)
            except StopIteration:
                return

    async def _take_notification(self, payload: bytes) -> None:
        """Apply one answer of the observation; catch up when it does not bring
        everything since the cursor: updates were lost (a full query), the AS has more
        (``more``), or more updates came than the answer carries (a gap in the indexes:
        several revocations between two notifications)."""
        before = self.known.cursor
        update = self.apply(payload)
        if update.needs_full_query:
            await self._ask(trl.FULL_QUERY)
            return
        after, carried = update.cursor, len(update.diffs)
        if before is None:  # nothing was listed for this RS: the indexes start at 0
            gap = after is not None and after + 1 > carried
        else:
            gap = after is None or after < before or after - before > carried
        if update.more or gap:
            self.known.cursor = before
            await self.catch_up()

    async def observe_once(self) -> bool:
        """Catch up, then observe diff notifications until the observation ends or
        ``reregister`` seconds have passed (an AS that restarted meanwhile has lost the
        observation without telling: RFC 7641 §3.3.1, register again).

        The observation asks ``diff=1``: each notification carries the newest update
        of this RS's part, whatever the AS's MAX_DIFF_BATCH (with ``diff=0`` an AS
        holding more than MAX_DIFF_BATCH updates would answer the eldest ones, §8.2.2);
        what came between two notifications is caught up with a diff query from the
        cursor.

        Returns False when the AS answered without Observe (it keeps no more
        observations): the caller asks again later."""
        await self.catch_up()
        coap = await self._client()
        request = coap.request(self._request(OBSERVE_QUERY, True))
        try:
            first = await asyncio.wait_for(request.response, TIMEOUT)
            await self._take_notification(self._payload(first))
            if first.opt.observe is None:
                if self.observing or not self.unobserved:
                    log.warning(
                        "the AS keeps no more observations: asking every %g s",
                        self.unobserved_poll,
                    )
                self.observing, self.unobserved = False, True
                return False
            self.unobserved = False
            if not self.observing:
                log.info("observing the token revocation list (cursor %s)", self.known.cursor)
                self.observing = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.reregister):
                    async for notification in request.observation:
                        await self._take_notification(self._payload(notification))
            return True
        finally:
            if not request.observation.cancelled:
                request.observation.cancel()

    async def run(self, *, poll: float | None = None) -> None:
        """Follow the TRL until cancelled, retrying with back-off when the AS is away:
        by observation, or with ``poll`` (seconds) by diff queries at that interval."""
        delay = RETRY
        while True:
            try:
                if poll is None:
                    observed = await self.observe_once()
                    delay = RETRY
                    if not observed:
                        await asyncio.sleep(self.unobserved_poll)
                    continue  # time to register again: at once
                await self.catch_up()
                delay = RETRY
                await asyncio.sleep(poll)
                continue
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, aiocoap_error.Error, KeyboundError) as exc:
                log.warning("cannot follow the token revocation list: %s", exc)
                self.observing = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)

    async def close(self) -> None:
        if self._coap is not None:
            await self._coap.shutdown()
            self._coap = None


@contextlib.asynccontextmanager
async def watching(watcher: TrlWatcher, *, poll: float | None = None) -> Any:
    """Run :meth:`TrlWatcher.run` for the duration of the block."""
    task = asyncio.create_task(watcher.run(poll=poll))
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await watcher.close()


__all__ = ["TrlWatcher", "watching"]
