"""The CoAP Resource Server on aiocoap: ``/authz-info`` and protected resources (RFC 9203).

Build a site around a :class:`~keybound.core.resource_server.ResourceServer`, add
resources with the scopes that allow them, and serve::

    rs = ResourceServer(policy)
    site = ResourceServerSite(rs, state=store)
    site.add_protected("/temp", TemperatureResource(), scopes={"GET": ["temp.read"]})
    site.restore()                      # contexts persisted before a restart
    await site.serve(("127.0.0.1", 5683))
    ...
    await site.shutdown()

``/authz-info`` (RFC 9200 §5.10.1, RFC 9203 §4.1-§4.2) takes an unprotected POST
with Content-Format 19 and the map {1: access_token, 40: nonce1, 43:
ace_client_recipientId}, and answers 2.01 with {42: nonce2, 44:
ace_server_recipientId}; the OSCORE context of RFC 9203 §4.3 is installed at run
time. A POST of a new token over that OSCORE context updates the access rights
(RFC 9203 §4.4) and is answered 2.01 without payload.

Errors are rendered as RFC 9200 §5.8.3 error maps with Content-Format 19: a
malformed payload is 4.00, an oversized one 4.13, an invalid token 4.01 (wrapper,
issuer, lifetime), an authentic token with malformed claims 4.00, a token
for another audience 4.03, an unsupported profile 4.00 (incompatible_ace_profiles),
a full token store 5.03. A request to a protected resource without a valid OSCORE
context gets 4.01 with the AS Request Creation Hints (RFC 9200 §5.3); a valid
context whose token does not cover the resource gets 4.03, one whose token covers
the resource but not the method 4.05 (RFC 9200 §5.10.2; the decision is the
core's :class:`~keybound.core.errors.MethodNotAllowed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiocoap
import aiocoap.resource
from aiocoap.numbers.codes import Code

from keybound.core import cbor
from keybound.core.authz_info import NONCE_BYTES
from keybound.core.edhoc_credentials import Ccs
from keybound.core.errors import (
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    KeyboundError,
    PayloadTooLarge,
)
from keybound.core.numbers.ace_parameters import (
    CONTENT_FORMAT_ACE_CBOR,
    AceParameter,
    IntrospectionParameter,
)
from keybound.core.resource_server import (
    MAX_AUTHZ_INFO_BYTES,
    AuthzInfoOutcome,
    Introspect,
    Removal,
    ResourceServer,
)
from keybound.core.scope import RestMethod
from keybound.core.token_store import PersistedContext, StoredToken

from .edhoc_responder import EdhocResponder, EdhocSession
from .errors import error_response
from .input_guards import StrictOscoreSiteWrapper, harden_message_decoding
from .introspection import AsUnreachable, Introspector
from .oscore_contexts import (
    DEFAULT_SEQUENCE_CHUNK,
    ContextTable,
    DurableSecurityContext,
    IndexedCredentialsMap,
)
from .profiles import ContextInstaller
from .state_writer import RsStateStore, StateWriter


@dataclass(frozen=True)
class EdhocIdentity:
    """The RS's EDHOC key (``d`` of P-256) and credential, AUTH_CRED_RS (RFC 9528 §3.5)."""

    private_key: bytes = field(repr=False)
    credential: Ccs


#: Default bound on the body of a request to a protected resource (RFC 7959 §2.9.3).
DEFAULT_MAX_RESOURCE_BODY = 4096

log = logging.getLogger("keybound.rs")


def _security_context(request: aiocoap.Message) -> DurableSecurityContext | EdhocSession | None:
    """The security context of an OSCORE request: the OSCORE profile's, or an EDHOC session's."""
    context = getattr(request.remote, "security_context", None)
    return context if isinstance(context, DurableSecurityContext | EdhocSession) else None


class StaleSession(InvalidToken):
    """An EDHOC session that ended (a newer one, or its token went); not the token's fault."""


class AuthzInfoResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """``/authz-info`` (RFC 9200 §5.10.1, RFC 9203 §4.1, §4.2, §4.4)."""

    def __init__(self, owner: ResourceServerSite) -> None:
        super().__init__()
        self.owner = owner

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        return True  # assembled up to ``max_payload`` by the site's bounded spool

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        owner = self.owner
        peer = str(getattr(request.remote, "hostinfo", "?"))
        try:
            if len(request.payload) > owner.max_payload:
                raise PayloadTooLarge(f"the authz-info payload exceeds {owner.max_payload} bytes")
            if request.opt.content_format not in (None, CONTENT_FORMAT_ACE_CBOR):
                return aiocoap.Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
            return await owner.authz_info(request.payload, _security_context(request), peer)
        except KeyboundError as exc:
            log.info("authz-info from %s rejected: %s", peer, exc)
            return error_response(exc)
        except (ValueError, TypeError) as exc:
            log.info("authz-info from %s rejected: malformed (%s)", peer, type(exc).__name__)
            return error_response(InvalidRequest("malformed authz-info request"))


class GuardedResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """A resource that answers only OSCORE requests whose token allows them (RFC 9200 §5.10.2)."""

    def __init__(self, owner: ResourceServerSite, path: str, inner: Any) -> None:
        super().__init__()
        self.owner = owner
        self.path = path
        self.inner = inner

    async def needs_blockwise_assembly(self, request: aiocoap.Message) -> bool:
        result: bool = await self.inner.needs_blockwise_assembly(request)
        return result

    def get_link_description(self) -> dict[str, Any]:
        described: dict[str, Any] = self.inner.get_link_description()
        return described

    async def render(self, request: aiocoap.Message) -> aiocoap.Message:
        owner = self.owner
        try:
            method = RestMethod.from_coap_code(int(request.code))
        except KeyboundError:
            return aiocoap.Message(code=Code.METHOD_NOT_ALLOWED)
        context = _security_context(request)
        if context is None:
            return owner.unauthorized(method, self.path)
        try:
            entry = owner.entry_for(context)
        except StaleSession as exc:  # the token may be fine: only this session is over
            log.info("%s %s refused: %s", method.name, self.path, exc.description)
            return owner.unauthorized(method, self.path)
        except InvalidToken as exc:
            if context.key_id is not None:
                owner.drop(context.key_id, reason=str(exc))
            return owner.unauthorized(method, self.path)
        try:
            owner.rs.authorize(entry, method, self.path)
        except InsufficientScope as exc:
            log.info("%s %s refused: %s", method.name, self.path, exc.description)
            return error_response(exc)
        response: aiocoap.Message = await self.inner.render(request)
        return response


class ResourceServerSite:
    """An aiocoap site serving ``/authz-info`` and protected resources over OSCORE.

    ``state`` persists tokens, contexts and sequence number marks (None keeps
    everything in memory); it is written on one worker thread (``writer``), so
    the event loop never waits for a commit. ``wall_clock``, ``monotonic`` and ``random`` are
    injectable for tests. ``response_partial_iv`` makes every response carry
    the RS's own Partial IV.
    """

    def __init__(
        self,
        rs: ResourceServer,
        *,
        state: RsStateStore | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        random: Callable[[int], bytes] = os.urandom,
        sequence_chunk: int = DEFAULT_SEQUENCE_CHUNK,
        response_partial_iv: bool = False,
        max_payload: int = MAX_AUTHZ_INFO_BYTES,
        introspector: Introspector | None = None,
        introspection_required: bool = False,
        edhoc: EdhocIdentity | None = None,
    ) -> None:
        self.rs = rs
        self.introspector = introspector
        self.introspection_required = introspection_required
        #: the RS's OSCORE context with the AS, once made: introspection and the token
        #: revocation list share this one object (no sequence number used twice)
        self.as_context: DurableSecurityContext | None = None
        self.writer = None if state is None else StateWriter(state)
        #: The store as the site uses it: every call runs on the writer's thread.
        self.state: StateWriter | None = self.writer
        self.wall_clock = wall_clock
        self.monotonic = monotonic
        self.random = random
        self.max_payload = max_payload
        self.site = aiocoap.resource.Site()
        #: Server contexts, found by (kid, kid context) in a dict (RFC 8613 §8.2 step 2).
        self.server_credentials = IndexedCredentialsMap()
        #: The OSCORE profile's security contexts of the stored tokens.
        self.contexts = ContextTable(
            self.server_credentials,
            state=self.writer,
            sequence_chunk=sequence_chunk,
            response_partial_iv=response_partial_iv,
        )
        installers: dict[int, ContextInstaller] = {self.contexts.profile: self.contexts}
        #: The EDHOC profile's Responder and sessions, when the RS has an EDHOC identity.
        self.edhoc: EdhocResponder | None = None
        self.edhoc_profile = EdhocResponder.profile
        if edhoc is not None:
            self.edhoc = EdhocResponder(
                rs,
                self.server_credentials,
                private_key=edhoc.private_key,
                credential=edhoc.credential,
                times=self.times,
                accept_token=self.accept_ead_token,
            )
            installers[self.edhoc.profile] = self.edhoc
        #: Where each ACE profile's security contexts are installed, by profile number.
        self.installers: Mapping[int, ContextInstaller] = installers
        self.root = StrictOscoreSiteWrapper(self.site, self.server_credentials)
        self.root.edhoc = self.edhoc
        #: Partial Block1 uploads, bounded per peer and in total across all resources.
        self.uploads = self.root.uploads
        self.root.add_bounded(["authz-info"], AuthzInfoResource(self), max_payload)
        wkc = aiocoap.resource.WKCResource(self.root.get_resources_as_linkheader)
        self.root.add_bounded([".well-known", "core"], wkc, 0)
        self.protocol: aiocoap.Context | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self._marker_cleared = False

    # -- declarations --

    def add_protected(
        self,
        path: str,
        resource: Any,
        scopes: Mapping[str, Iterable[str]] | None = None,
        *,
        max_body: int = DEFAULT_MAX_RESOURCE_BODY,
    ) -> None:
        """Serve ``resource`` at ``path`` to OSCORE clients whose token allows the request.

        ``scopes`` maps methods to the text scope tokens that allow them, e.g.
        ``{"GET": ["temp.read"], "PUT": ["temp.write"]}`` (AIF scopes need none).
        A request body longer than ``max_body`` bytes is refused with 4.13 and
        Size1 at the first block that passes it (RFC 7959 §2.9.3).
        """
        if not path.startswith("/") or path == "/":
            raise ValueError(f"a resource path starts with / and names a resource: {path!r}")
        if scopes:
            self.rs.declare(path, scopes)
        guarded = GuardedResource(self, path, resource)
        self.root.add_bounded(path[1:].split("/"), guarded, max_body)

    def entry_for(self, context: DurableSecurityContext | EdhocSession) -> StoredToken:
        """The live token behind ``context``; :class:`InvalidToken` if gone or expired.

        An EDHOC session must be the current one of its token (a newer session, or a
        superseding token, ends it: draft-ietf-ace-edhoc-oscore-profile-11 §4.2).
        """
        if isinstance(context, DurableSecurityContext):
            return self.rs.find(context.recipient_id, context.id_context, **self.times())
        if context.key_id is None or context.removed:
            raise StaleSession("no access token for this EDHOC session")
        if self.edhoc is None or self.edhoc.session(context.key_id) is not context:
            raise StaleSession("this EDHOC session is no longer current")
        return self.rs.live(context.key_id, **self.times())

    # -- time --

    def times(self) -> dict[str, Any]:
        """``now`` (None without a clock) and ``monotonic`` for the core calls."""
        now = int(self.wall_clock()) if self.rs.policy.has_clock else None
        return {"now": now, "monotonic": self.monotonic()}

    # -- /authz-info --

    async def authz_info(
        self, payload: bytes, context: DurableSecurityContext | EdhocSession | None, peer: str
    ) -> aiocoap.Message:
        """Run the core's ``/authz-info`` flow, apply its outcome, answer 2.01.

        ``context`` is the OSCORE context the POST came under (an update of access
        rights, RFC 9203 §4.4), None for an unprotected POST (RFC 9203 §4.1). With an
        introspector, the AS is asked about a token that passed the local checks
        (RFC 9200 §5.9). The token, its context and a new exi mark are durable
        before the 2.01.
        """
        flow = self.rs.authz_info(
            payload,
            over=None if context is None else context.key_id,
            random=self.random,
            introspect=self.introspector is not None,
            **self.times(),
        )
        try:
            step = next(flow)
            while True:
                step = flow.send(await self._introspect(step))
        except StopIteration as done:
            outcome: AuthzInfoOutcome = done.value
        await self._apply(outcome, context)
        stored = outcome.stored
        informing = log.isEnabledFor(logging.INFO)  # describe() is not free: only when logged
        if outcome.keeps_context:
            if informing:
                log.info("token updated over OSCORE from %s: %s", peer, stored.verified.describe())
            return aiocoap.Message(code=Code.CREATED)
        if informing:
            log.info(
                "token accepted from %s: %s, context recipient_id=%s%s",
                peer,
                stored.verified.describe(),
                "-" if stored.context is None else stored.context.server_id.hex(),
                " (superseding)" if outcome.superseded is not None else "",
            )
        return aiocoap.Message(
            code=Code.CREATED,
            payload=outcome.response,
            content_format=CONTENT_FORMAT_ACE_CBOR,
        )

    def accept_ead_token(self, token: bytes) -> StoredToken:
        """A token of the EDHOC profile from EDHOC's EAD_3: verified and stored as an
        unprotected ``/authz-info`` POST would be (no introspection: the handshake
        cannot wait for the AS). Its record is queued for the state store, not awaited.
        """
        flow = self.rs.authz_info(
            cbor.dumps({int(AceParameter.ACCESS_TOKEN): token}),
            over=None,
            random=self.random,
            **self.times(),
        )
        try:
            next(flow)
        except StopIteration as done:
            outcome: AuthzInfoOutcome = done.value
        else:  # pragma: no cover - introspection was not asked for
            raise InvalidToken("the token needs introspection")
        if outcome.stored.verified.profile != self.edhoc_profile:
            self.rs.forget(outcome.stored.key_id)
            raise InvalidToken("only a token of the EDHOC profile is taken in EAD_3")
        for key_id in outcome.drop:
            self._remove_contexts(key_id)
        if self.writer is not None:
            if outcome.delete:
                self.writer.submit(self.writer.store.delete_contexts, list(outcome.delete))
            self.writer.submit(self._persist_token, outcome.persist, outcome.exi_mark)
        if log.isEnabledFor(logging.INFO):  # describe() is not free: only when logged
            log.info("token accepted in EDHOC EAD_3: %s", outcome.stored.verified.describe())
        return outcome.stored

    async def post_token(self, payload: bytes, peer: str) -> aiocoap.Message:
        """:meth:`authz_info` for an unprotected POST (RFC 9203 §4.1)."""
        return await self.authz_info(payload, None, peer)

    async def _introspect(self, step: Introspect) -> bool | None:
        """Whether the AS reports ``step.token`` active; None when it cannot be asked.

        The RS validates every token itself first; introspection adds revocation.
        When the AS cannot be reached the token is refused (5.03) if introspection
        is required, and otherwise judged by the local checks alone.
        """
        assert self.introspector is not None  # the flow asks only when there is one
        try:
            answer = await self.introspector.introspect(step.token)
        except AsUnreachable as exc:
            if self.introspection_required:
                raise
            log.warning("introspection unavailable (%s); relying on local validation", exc)
            return None
        return answer[int(IntrospectionParameter.ACTIVE)] is True

    async def _apply(
        self, outcome: AuthzInfoOutcome, context: DurableSecurityContext | EdhocSession | None
    ) -> None:
        """Apply an accepted POST: the one place its security contexts and rows change.

        Evicted and superseded contexts go first (the evicted rows are deleted
        without waiting), then the exi mark (if it moved) and the record are made
        durable, then a new context is installed. A kept context (an update)
        persists the Sender Sequence Number mark it has made durable.
        """
        keeps_context = outcome.keeps_context
        if outcome.evicted or outcome.superseded is not None:
            for key_id in outcome.drop:
                if not (keeps_context and key_id == outcome.stored.key_id):
                    self._remove_contexts(key_id)
        writer = self.writer
        if writer is not None:
            if outcome.evicted:
                writer.submit(writer.store.delete_contexts, list(outcome.delete))
            record = outcome.persist
            if keeps_context and isinstance(context, DurableSecurityContext):
                record = replace(record, sender_mark=context.durable_mark)
            await writer.run(self._persist_token, record, outcome.exi_mark)
        if not keeps_context:
            self.installers[outcome.stored.verified.profile].install(outcome.stored)

    # -- protected resources --

    def unauthorized(self, method: RestMethod, path: str) -> aiocoap.Message:
        """4.01 with the AS Request Creation Hints (RFC 9200 §5.3)."""
        hints = self.rs.creation_hints_for(
            method, path, random=self.random(NONCE_BYTES), monotonic=self.monotonic()
        )
        return aiocoap.Message(
            code=Code.UNAUTHORIZED, payload=hints, content_format=CONTENT_FORMAT_ACE_CBOR
        )

    # -- persistence --

    def _persist_token(self, record: PersistedContext, exi_mark: int | None) -> None:
        """On the writer's thread: the exi mark (if it moved), then the token and context."""
        assert self.writer is not None
        store = self.writer.store
        if exi_mark is not None:
            store.put_exi_sequence_mark(exi_mark)
        store.put_context(record)

    # -- expiry and removal --

    def _installer(self, profile: int) -> ContextInstaller:
        return self.installers[profile]

    def _remove_contexts(self, key_id: bytes) -> None:
        for installer in self.installers.values():
            installer.remove(key_id)

    def _remove(self, removal: Removal) -> None:
        """Remove the contexts of tokens gone from the store; delete their rows in one batch.

        Nothing waits for the deletion: a token whose row outlives a crash is
        refused again when the restarted RS restores it.
        """
        for key_id in removal.key_ids:
            self._remove_contexts(key_id)
        if removal.key_ids and self.writer is not None:
            self.writer.submit(self.writer.store.delete_contexts, list(removal.key_ids))

    def drop(self, key_id: bytes, *, reason: str) -> None:
        """Remove a token and its context (expired, or otherwise gone)."""
        removal = self.rs.forget(key_id)
        self._remove(removal)
        if log.isEnabledFor(logging.INFO):
            for entry in removal.removed:
                log.info("token removed (%s): %s", reason, entry.verified.describe())

    def expire_now(self) -> int:
        """Remove expired tokens and their contexts; return how many went.

        The rows go in one transaction on the writer's thread (queued, not awaited).
        """
        removal = self.rs.expire(**self.times())
        self._remove(removal)
        if log.isEnabledFor(logging.DEBUG):
            for entry in removal.removed:
                log.debug("token expired: %s", entry.verified.describe())
        if removal.removed:
            log.info("%d token(s) expired", len(removal.removed))
        return len(removal.removed)

    async def expire(self) -> int:
        """:meth:`expire_now`, returning once the deletion is durable."""
        count = self.expire_now()
        if self.writer is not None:
            await self.writer.drain()
        return count

    async def _expire_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.expire()

    # -- restart --

    def restore(self) -> int:
        """Re-install the persisted tokens and contexts; return how many came back.

        After a crash, restored contexts resume their Sender Sequence Numbers at the
        persisted mark and answer their first request with Echo (RFC 8613 Appendix
        B.1.1, B.1.2). After a clean shutdown (the store holds the marker written
        by :meth:`shutdown`), their replay windows and exact next Sender Sequence
        Numbers are restored and no Echo is needed.

        The marker is cleared durably before anything is restored or served: if
        this run crashes, the windows saved by the previous run are never trusted.
        """
        if self.state is None:
            return 0
        loaded = self.state.load()
        self._clear_marker()
        self.rs.exi_sequence_mark = loaded.exi_sequence_mark
        count = 0
        refused: list[bytes] = []
        for record in loaded.contexts:
            try:
                entry = self.rs.restore(record, **self.times())
            except KeyboundError as exc:
                refused.append(record.key_id)
                log.info("persisted token not restored: %s", exc)
                continue
            self._installer(entry.verified.profile).install(
                entry,
                sender_mark=record.sender_mark,
                restored=True,
                shutdown=record.shutdown if loaded.clean_shutdown else None,
            )
            count += 1
        if refused:
            self.state.delete_contexts(refused)
        log.info(
            "restored %d token(s) and OSCORE context(s) after %s",
            count,
            "a clean shutdown" if loaded.clean_shutdown else "a crash or first start",
        )
        return count

    def _clear_marker(self) -> None:
        if self.state is not None and not self._marker_cleared:
            self.state.clear_clean_shutdown()
            self._marker_cleared = True

    async def _save_clean_shutdown(self) -> None:
        """Save every context's replay window, then the clean shutdown marker (RFC 8613 B.1.2)."""
        if self.writer is None:
            return
        records = [
            r for installer in self.installers.values() for r in installer.shutdown_records()
        ]
        await self.writer.run(self.writer.store.save_clean_shutdown, records)
        known = sum(1 for record in records if record.replay_window is not None)
        log.info("saved %d replay window(s) of %d context(s)", known, len(records))

    # -- serving --

    async def serve(
        self, bind: tuple[str, int] = ("127.0.0.1", 5683), *, expiry_interval: float = 1.0
    ) -> aiocoap.Context:
        """Bind a UDP server context and start the expiry timer.

        Without a prior :meth:`restore`, the clean shutdown marker is cleared here.
        """
        self._clear_marker()
        harden_message_decoding()  # process-wide and idempotent: see its docstring
        self.protocol = await aiocoap.Context.create_server_context(
            self.root, bind=bind, transports=["udp6"]
        )
        self._expiry_task = asyncio.create_task(self._expire_periodically(expiry_interval))
        return self.protocol

    async def shutdown(self) -> None:
        """Stop serving, save the replay windows with the clean shutdown marker, and close.

        Tokens, contexts and sequence number marks are already durable. Once no
        request can be processed any more, each context's replay window and next
        Sender Sequence Number are saved, and the marker is written last, so the
        next start needs no Echo (RFC 8613 Appendix B.1.2).
        """
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        if self.protocol is not None:
            await self.protocol.shutdown()
            self.protocol = None
        if self.introspector is not None:
            await self.introspector.close()
        if self.state is not None:
            try:
                await self._save_clean_shutdown()
            except Exception:  # the next start then falls back to Echo
                log.exception("replay windows not saved")
            finally:
                self.state.close()


__all__ = [
    "DEFAULT_MAX_RESOURCE_BODY",
    "AuthzInfoResource",
    "EdhocIdentity",
    "GuardedResource",
    "ResourceServerSite",
    "StaleSession",
]
