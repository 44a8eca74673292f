"""Follow the AS's token revocation list over HTTP (RFC 9770), for an API that checks
JWT access tokens itself.

:class:`TrlFollower` asks the AS's ``GET /revoke/trl`` with the RS's Basic credentials
(the RS bundle's name and ``introspection.http_secret``): a full query first, then diff
queries with the "Cursor" extension, a full query again when the AS says updates were
lost (``cursor`` null, ``more`` true, §8.2.3) and every ``full_every`` seconds (§10:
a requester should not rely on diff queries alone). :meth:`TrlFollower.is_revoked`
answers for a token from both of its RFC 9770 hashes (§4.3.2).

What it knows is bounded (:data:`MAX_REVOKED` hashes, the oldest dropped first, as
§10.1 allows under memory limits), and so is each answer it reads
(:data:`keybound.core.trl.MAX_RESPONSE_BYTES`: a full query of up to about 14,900
hashes). While the AS cannot be reached, or answers more than that, it keeps what it
had and tries again (§10: no conclusion is drawn from a failed request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from keybound.core import trl
from keybound.core.errors import KeyboundError
from keybound.core.numbers.trl import MEDIA_TYPE_ACE_TRL_CBOR

log = logging.getLogger("keybound.http.trl")

#: revoked token hashes kept; more drop the oldest
MAX_REVOKED = 100_000


class TrlFollower:
    """The revoked token hashes the AS lists for one RS, kept current by polling."""

    def __init__(
        self,
        trl_url: str,
        name: str,
        secret: str,
        *,
        interval: float = 5.0,
        full_every: float = 3600.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_revoked: int = MAX_REVOKED,
    ) -> None:
        self.max_revoked = max_revoked
        self.trl_url = trl_url
        self._auth = httpx.BasicAuth(name, secret)
        self.interval = interval
        self.full_every = full_every
        self._client = client
        self._clock = clock
        self._revoked: dict[bytes, None] = {}  # insertion-ordered: oldest first
        self.cursor: int | None = None
        self._last_full: float | None = None
        self.refreshes = 0

    @property
    def revoked(self) -> frozenset[bytes]:
        return frozenset(self._revoked)

    def is_revoked(self, token: str | bytes) -> bool:
        """Whether the TRL lists ``token`` (a compact JWT), by either of its hashes."""
        text = token.encode("ascii") if isinstance(token, str) else bytes(token)
        if len(text) > trl.MAX_TOKEN_BYTES:
            return False  # refused by the verifier anyway
        return any(h in self._revoked for h in trl.rs_jwt_token_hashes(text))

    def _apply(self, update: trl.TrlUpdate) -> None:
        if update.full_set is not None:
            self._revoked = dict.fromkeys(sorted(update.full_set))
        else:
            # A hash leaves the list when its token has expired (§5.1): a JWT past its
            # ``exp`` is refused by the verifier without it.
            for removed, added in update.diffs:
                for h in removed:
                    self._revoked.pop(h, None)
                for h in added:
                    self._revoked.setdefault(h, None)
        while len(self._revoked) > self.max_revoked:
            del self._revoked[next(iter(self._revoked))]
        self.cursor = update.cursor

    async def _get(self, client: httpx.AsyncClient, query: tuple[str, ...]) -> trl.TrlUpdate:
        params = {name: value for name, _, value in (q.partition("=") for q in query)}
        response = await client.get(self.trl_url, params=params, auth=self._auth)
        if response.status_code != 200:
            raise OSError(f"the TRL answered {response.status_code}")
        if response.headers.get("content-type", "").split(";")[0] != MEDIA_TYPE_ACE_TRL_CBOR:
            raise OSError("the TRL answered with another content type")
        return trl.read_response(response.content)

    async def refresh(self) -> None:
        """One exchange (or a few, while ``more`` says so) with the AS."""
        async with contextlib.AsyncExitStack() as stack:
            client = self._client
            if client is None:
                client = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))
            now = self._clock()
            due = self._last_full is None or now - self._last_full >= self.full_every
            flow = trl.catch_up(self.cursor, full=due)
            query = next(flow)
            while True:
                update = await self._get(client, query)
                self._apply(update)
                if query == trl.FULL_QUERY:
                    self._last_full = now
                try:
                    query = flow.send(update)
                except StopIteration:
                    break
        self.refreshes += 1

    async def run(self) -> None:
        """Refresh every ``interval`` seconds until cancelled."""
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except (OSError, httpx.HTTPError, KeyboundError) as exc:
                log.warning("cannot read the token revocation list: %s", exc)
            await asyncio.sleep(self.interval)


@contextlib.asynccontextmanager
async def following(follower: TrlFollower) -> Any:
    """Run :meth:`TrlFollower.run` for the duration of the block."""
    task = asyncio.create_task(follower.run())
    try:
        yield follower
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["MAX_REVOKED", "TrlFollower", "following"]
