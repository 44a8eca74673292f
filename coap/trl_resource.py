"""The AS's TRL endpoint over CoAP (RFC 9770 §6): ``GET /revoke/trl``, observable.

Only registered devices reach it, over their OSCORE context with the AS (§6: the
requester is who the context belongs to, ``client:ID`` or ``rs:NAME``). Each one
gets its own part of the TRL (§5); the answers are :func:`keybound.core.trl.answer`'s.

Changes come from any process sharing the database (``keybound as revoke`` is one):
:meth:`TrlResource.watch` takes expired tokens off the list and looks at the TRL's
version a few times a second, then notifies exactly the observers whose part changed
(RFC 7641 §4.2, RFC 9770 §10). Observers are bounded (:data:`MAX_OBSERVERS`): past
that a GET is answered once, without Observe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiocoap
import aiocoap.resource
from aiocoap.transports.oscore import OSCOREAddress

from keybound.core.authz_store import TrlStore, trl_requester
from keybound.core.errors import InvalidClient, KeyboundError
from keybound.core.numbers.trl import (
    CONTENT_FORMAT_ACE_TRL_CBOR,
    CONTENT_FORMAT_CONCISE_PROBLEM_DETAILS,
)
from keybound.core.trl import TrlQueryError, answer

from .errors import error_response

log = logging.getLogger("keybound.as.trl")

#: the TRL endpoint's path at the AS (RFC 9770 §6; the examples' ``/revoke/trl``)
TRL_PATH = ("revoke", "trl")
#: observations kept at once; more GETs are answered without Observe
MAX_OBSERVERS = 1000
#: observations kept for one requester; a further one ends that requester's eldest (an
#: RS or device that restarted leaves its old registration behind, unanswered)
MAX_OBSERVATIONS_PER_REQUESTER = 2
#: Uri-Query options read from a TRL request (the rest is not looked at)
MAX_QUERY_OPTIONS = 8


def _requester(request: aiocoap.Message) -> str | None:
    remote = request.remote
    if not isinstance(remote, OSCOREAddress):
        return None
    principal = getattr(remote.security_context, "principal", None)
    if not isinstance(principal, tuple) or len(principal) != 2:
        return None
    kind, name = principal
    return trl_requester(kind, name)


class TrlResource(aiocoap.resource.ObservableResource):  # type: ignore[misc]
    """``/revoke/trl`` for registered devices, with full and diff queries and Observe."""

    def __init__(
        self,
        store: TrlStore,
        *,
        clock: Callable[[], int] | None = None,
        max_observers: int | None = None,
        max_per_requester: int = MAX_OBSERVATIONS_PER_REQUESTER,
    ) -> None:
        super().__init__()
        self.max_observers = MAX_OBSERVERS if max_observers is None else max_observers
        self.max_per_requester = max_per_requester
        self.store = store
        self.clock = clock or (lambda: int(time.time()))
        self._observers: dict[Any, str] = {}
        self._marks: dict[str, int] = {}
        self._version = -1

    def get_link_description(self) -> dict[str, Any]:
        link: dict[str, Any] = super().get_link_description()
        link["ct"] = str(CONTENT_FORMAT_ACE_TRL_CBOR)
        return link

    def _answer(self, requester: str, query: list[str]) -> bytes:
        hashes, collection = self.store.trl_view(requester)
        return answer(query, lambda: hashes, collection, self.store.trl_limits)

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        requester = _requester(request)
        if requester is None:
            return error_response(InvalidClient("the TRL is for registered devices over OSCORE"))
        query = [str(q) for q in request.opt.uri_query[:MAX_QUERY_OPTIONS]]
        try:
            payload = await asyncio.to_thread(self._answer, requester, query)
        except TrlQueryError as err:
            log.info("TRL query by %s refused: %s", requester, err.description)
            return aiocoap.Message(
                code=aiocoap.BAD_REQUEST,
                payload=err.problem_details(),
                content_format=CONTENT_FORMAT_CONCISE_PROBLEM_DETAILS,
            )
        except KeyboundError as err:
            return error_response(err)
        return aiocoap.Message(
            code=aiocoap.CONTENT, payload=payload, content_format=CONTENT_FORMAT_ACE_TRL_CBOR
        )

    async def add_observation(self, request: aiocoap.Message, serverobservation: Any) -> None:
        requester = _requester(request)
        if requester is not None:
            self._end_eldest_beyond(requester, self.max_per_requester - 1)
        if requester is None or len(self._observers) >= self.max_observers:
            # answered once, without Observe (aiocoap wants every observation accepted,
            # then deregistered before the answer, to end it cleanly)
            serverobservation.accept(lambda: None)
            serverobservation.deregister()
            return
        self._observers[serverobservation] = requester
        if requester not in self._marks:
            marks = await asyncio.to_thread(self.store.trl_marks, [requester])
            self._marks.setdefault(requester, marks[requester])

        def cancel() -> None:
            self._observers.pop(serverobservation, None)
            if requester not in self._observers.values():
                self._marks.pop(requester, None)

        serverobservation.accept(cancel)

    def _end_eldest_beyond(self, requester: str, keep: int) -> None:
        """End ``requester``'s eldest observations until ``keep`` are left: each gets a
        last notification, the current TRL without Observe (RFC 7641 §3.2), so a peer
        still listening learns it ended and may register again."""
        mine = [o for o, r in self._observers.items() if r == requester]  # oldest first
        for observation in mine[: max(0, len(mine) - keep)]:
            self._observers.pop(observation, None)
            observation.trigger(is_last=True)
            log.info("TRL observation by %s ended: a newer one took its place", requester)

    @property
    def observer_count(self) -> int:
        return len(self._observers)

    def check(self) -> int:
        """Take expired tokens off the TRL; return the TRL's version (blocking: a thread)."""
        self.store.expire_trl(self.clock())
        return self.store.trl_version()

    async def poll(self) -> int:
        """One look at the TRL; notifies the observers whose part changed. Returns how
        many observations were notified."""
        version = await asyncio.to_thread(self.check)
        if version == self._version:
            return 0
        self._version = version
        requesters = sorted(set(self._observers.values()))
        if not requesters:
            return 0
        marks = await asyncio.to_thread(self.store.trl_marks, requesters)
        changed = {r for r in requesters if marks[r] != self._marks.get(r)}
        self._marks.update(marks)
        notified = 0
        for observation, requester in list(self._observers.items()):
            if requester in changed:
                observation.trigger()
                notified += 1
        if notified:
            log.info("TRL version %d: notified %d observation(s)", version, notified)
        return notified

    async def watch(self, interval: float = 0.2) -> None:
        """Poll until cancelled; a failing look is logged and retried."""
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cannot read the TRL; retrying")
            await asyncio.sleep(interval)


__all__ = ["MAX_OBSERVERS", "TRL_PATH", "TrlResource"]
