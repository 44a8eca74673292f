"""The Authorization Server's CoAP endpoints on aiocoap: ``/token`` and ``/introspect``.

``/token`` (RFC 9200 §5.8) and ``/introspect`` (RFC 9200 §5.9) take
``application/ace+cbor`` (Content-Format 19) requests protected with OSCORE
(RFC 8613): each client's token requests with the client-AS context from
provisioning (RFC 9203 §3.1), each resource server's introspection requests
with its own context. The peer's identity is the context that unprotected the
request; an unprotected request, or one for an unknown context, is 4.01.

Answers: 2.01 with Content-Format 19 on success; on an error the CBOR error
map of RFC 9200 §5.8.3 (``error`` 30, ``error_description`` 31) with the
error's CoAP code (4.00 for most, 4.01 ``invalid_client``, 4.13 for an
oversized body). An unknown audience, ``access_denied`` over HTTP, is sent as
``invalid_request`` here: the ACE error registry (RFC 9200 §8.4) has no
``access_denied``.

The contexts are derived lazily (:class:`AsServerCredentials`): start-up reads only
an index of every peer's ``kid`` (one query, no file per peer); a context is derived
on the first request that names its ``kid``, in a worker thread. A request naming a
``kid`` the index does not hold makes it read the store again (at most once a
second, for peers provisioned while the AS runs), never on the event loop. The
requests' own store work (:class:`~keybound.coap.authz_service.AuthzService`) runs
in worker threads too: token requests in batches (:class:`TokenResource`), one
thread hop and one commit of their records per batch.

Sequence numbers (RFC 8613 Appendix B.1) are kept in the AS's database
(:class:`~keybound.core.authz_store.OscoreStateStore`), per context by a
fingerprint of its parameters (a re-provisioned client starts afresh):

* Sender Sequence Numbers are taken from blocks the database reserves and commits
  before any number of a block is used (:class:`~keybound.core.oscore_sequence.SequenceBlocks`);
  blocks of AS processes sharing the database never overlap, and a restart, even after
  ``kill -9``, starts above every block reserved before. The AS's answers mostly reuse
  the request's nonce; its own numbers protect Observe notifications, one write per block.
* Replay windows (RFC 8613 §7.4) live in memory only. A context never used before
  starts with an empty window; any other context (after a restart, or while another
  process holds it) starts without one, and its first request is answered 4.01 with
  an Echo option (RFC 8613 Appendix B.1.2, RFC 9175), which aiocoap's client and the
  firmware answer by sending again: one round trip per peer and restart, and no write
  per request.

Contexts of a state directory of an earlier keybound (``STATE_DIR/oscore/<fingerprint>``,
a ``sequence.json`` and a lock file per context) are read once, when the database has
no row for the context yet: the database starts at the file's next number.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
from aiocoap import oscore
from aiocoap.credentials import CredentialsMap
from aiocoap.transports.oscore import OSCOREAddress

from keybound.coap.authz_service import AuthzService
from keybound.core import cbor
from keybound.core.authz_server import (
    MAX_REQUEST_BYTES,
    AuthzServerConfig,
    TokenResponse,
    parse_cbor_introspection_request,
    parse_cbor_token_request,
)
from keybound.core.authz_store import AuthzStore, IssuedToken, OscoreContext, OscoreStateStore
from keybound.core.errors import (
    InvalidClient,
    InvalidRequest,
    KeyboundError,
    PayloadTooLarge,
)
from keybound.core.numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR
from keybound.core.oscore_sequence import SequenceBlocks

from .errors import error_response
from .input_guards import StrictOscoreSiteWrapper, harden_message_decoding
from .token_writer import DEFAULT_GATHER_TURNS, DEFAULT_MAX_BATCH, Batches
from .trl_resource import TRL_PATH, TrlResource

__all__ = [
    "AsOscoreSite",
    "AsServerCredentials",
    "IntrospectResource",
    "StoredServerContext",
    "TokenResource",
    "build_site",
]

log = logging.getLogger("keybound.as.coap")

_REFRESH_INTERVAL_S = 1.0


class StoredServerContext(
    oscore.CanProtect,  # type: ignore[misc]
    oscore.CanUnprotect,  # type: ignore[misc]
    oscore.SecurityContextUtils,  # type: ignore[misc]
):
    """An AS-side OSCORE context whose parameters come from the store.

    The AS sends with the record's ``recipient_id`` and receives with its
    ``sender_id`` (the record names the peer's side, see
    :class:`keybound.core.authz_store.OscoreContext`). ``principal`` is who
    the peer is: ``("client", client_id)`` or ``("rs", name)``. ``key`` names
    its sequence state in ``state``; ``fresh`` says nothing was ever received
    under these keys (the replay window starts empty; otherwise through Echo).
    """

    def __init__(
        self,
        record: OscoreContext,
        principal: tuple[str, str],
        *,
        key: str,
        state: OscoreStateStore,
        fresh: bool,
    ) -> None:
        self.record = record
        self.principal = principal
        self.key = key
        self._state = state
        self._blocks = SequenceBlocks()
        self.alg_aead = oscore.algorithms[oscore.DEFAULT_ALGORITHM]
        self.hashfun = oscore.hashfunctions[oscore.DEFAULT_HASHFUNCTION]
        self.sender_id = record.recipient_id
        self.recipient_id = record.sender_id
        self.id_context = record.id_context
        self.derive_keys(record.master_salt, record.master_secret)
        self.recipient_replay_window = oscore.ReplayWindow(
            oscore.DEFAULT_WINDOWSIZE, _window_changed
        )
        if fresh:
            self.recipient_replay_window.initialize_empty()
        self.echo_recovery = secrets.token_bytes(8)

    @property
    def sender_sequence_number(self) -> int:
        """The number the next message sent with this context would take."""
        return self._blocks.peek

    def new_sequence_number(self) -> int:
        """A Sender Sequence Number never used before, also by another process or before
        a crash: a new block is reserved and committed first when the current one is
        used up (RFC 8613 Appendix B.1.1). That write blocks, once per block."""
        seqno = self._blocks.next()
        if seqno is None:
            count = self._blocks.chunk
            self._blocks.add_block(self._state.reserve_oscore_sequence(self.key, count), count)
            seqno = self._blocks.next()
            assert seqno is not None
        if seqno >= oscore.MAX_SEQNO:
            raise oscore.ContextUnavailable("Sequence number too large, context is exhausted.")
        return seqno

    def post_seqnoincrease(self) -> None:
        """Unused: :meth:`new_sequence_number` reserves before it hands a number out."""

    def unprotect(self, protected_message: Any, request_id: Any = None) -> Any:
        """aiocoap's unprotection; a request refused as a replay is logged (see
        :func:`_log_replay`) before aiocoap answers it 4.01 "Replay detected"."""
        try:
            return super().unprotect(protected_message, request_id)
        except oscore.ReplayError as exc:
            if self.recipient_replay_window.is_initialized():  # a number seen before
                _log_replay(self, protected_message, exc)
            raise


def _window_changed() -> None:
    """The replay window is not persisted (see the module's text): nothing to write."""


#: One replay line per peer at most this often; the others are counted into it.
_REPLAY_LOG_INTERVAL_S = 60.0
_replays: dict[tuple[str, str], tuple[float, int]] = {}


def _log_replay(ctx: StoredServerContext, message: Any, exc: Exception) -> None:
    """Log a request refused as a replay (RFC 8613 §7.4) with what it likely means.

    A peer whose requests are replays, again and again, restarted its sequence
    numbers under the same keys: its state was lost (a device whose flash was
    erased and given the same bundle again) or its bundle runs on two devices.
    It can only come back with new keys, which the line names. The check runs
    before decryption, so anyone naming the peer's ``kid`` can cause the line;
    it is rate-limited per peer.
    """
    option = bytes(message.opt.oscore or b"")
    piv = int.from_bytes(option[1 : 1 + (option[0] & 7)], "big") if option else None
    kind, name = ctx.principal
    now = time.monotonic()
    last, suppressed = _replays.get(ctx.principal, (-_REPLAY_LOG_INTERVAL_S, 0))
    if now - last < _REPLAY_LOG_INTERVAL_S:
        _replays[ctx.principal] = (last, suppressed + 1)
        return
    _replays[ctx.principal] = (now, 0)
    fix = (
        f"give it new keys: keybound as client rekey {name}, and flash the new bundle"
        if kind == "client"
        else "register it again with new keys"
    )
    more = f" ({suppressed} more since the last such line)" if suppressed else ""
    log.warning(
        "%s %s: OSCORE replay: request with Partial IV %s refused (%s)%s; its sequence "
        "numbers restarted under the same keys (state lost, e.g. an erased flash given the "
        "same bundle, or one bundle on two devices): %s",
        kind,
        name,
        piv,
        exc,
        more,
        fix,
    )


def context_fingerprint(record: OscoreContext) -> str:
    """A name of the context's state that changes whenever any parameter changes."""
    material = cbor.dumps(
        [
            record.master_secret,
            record.master_salt,
            record.sender_id,
            record.recipient_id,
            record.id_context,
        ]
    )
    return hashlib.sha256(b"keybound-as-oscore\x00" + material).hexdigest()[:24]


_Kid = tuple[bytes, bytes | None]


def _kid_of(unprotected: dict[int, Any]) -> tuple[Any, Any]:
    """What a request's context is looked up by: its ``kid`` and ``kid context``."""
    return unprotected.get(oscore.COSE_KID), unprotected.get(oscore.COSE_KID_CONTEXT)


def _legacy_mark(state_dir: Path, fingerprint: str) -> int | None:
    """The next number of an earlier keybound's ``sequence.json`` for the context, if any."""
    try:
        persisted = json.loads((state_dir / fingerprint / "sequence.json").read_text())
    except FileNotFoundError:
        return None
    mark = int(persisted["next-to-send"])
    if mark < 0:
        raise ValueError(f"{fingerprint}: a negative next-to-send")
    return mark


class AsServerCredentials(CredentialsMap):  # type: ignore[misc]
    """The AS's server contexts, looked up by ``kid`` (and ``kid context``), derived lazily.

    :meth:`ensure` runs before a request is unprotected: for a ``kid`` of the index
    it derives the context in a worker thread (once; concurrent requests share the
    work); for a ``kid`` the index lacks it reads the store's index again (at most
    once a second), which is how peers added while the AS runs are found, and
    changed or removed ones dropped. :meth:`find_oscore` only looks up.
    """

    def __init__(self, store: AuthzStore, state: OscoreStateStore, state_dir: Path) -> None:
        super().__init__()
        self._store = store
        self._state = state
        self._legacy_dir = state_dir / "oscore"
        self._index: dict[_Kid, tuple[str, str]] = {}
        self._loaded: dict[_Kid, StoredServerContext] = {}
        self._loading: dict[_Kid, asyncio.Future[None]] = {}
        self._last_refresh = 0.0
        self._refreshing: asyncio.Future[None] | None = None
        self._closed = False
        self.refresh()

    @property
    def loaded(self) -> dict[_Kid, StoredServerContext]:
        """The contexts derived so far, by ``kid`` and ``kid context`` (a copy)."""
        return dict(self._loaded)

    def _read_index(self) -> tuple[dict[_Kid, tuple[str, str]], set[_Kid]]:
        """The store's index, and the held contexts it changed (reads the store: blocks)."""
        index: dict[_Kid, tuple[str, str]] = {}
        changed: set[_Kid] = set()
        held = self._loaded
        for kind, name, record in self._state.list_oscore_peers():
            kid = (record.sender_id, record.id_context)
            index[kid] = (kind, name)
            ctx = held.get(kid)
            if ctx is not None and (ctx.record != record or ctx.principal != (kind, name)):
                changed.add(kid)
        return index, changed

    def _install_index(self, index: dict[_Kid, tuple[str, str]], changed: set[_Kid]) -> None:
        self._index = index
        for kid in [k for k in self._loaded if k in changed or k not in index]:
            del self._loaded[kid]  # nothing to release: the state is in the database

    def refresh(self) -> None:
        """Read the store's index again (new, changed, removed peers); blocks."""
        self._last_refresh = time.monotonic()
        self._install_index(*self._read_index())

    async def _refresh_off_loop(self) -> None:
        self._last_refresh = time.monotonic()
        self._install_index(*await asyncio.to_thread(self._read_index))

    async def _refresh_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._refresh_off_loop()

    def _derive(self, kid: _Kid, principal: tuple[str, str]) -> StoredServerContext | None:
        """The context of ``kid`` from the store, its sequence state started (blocks)."""
        kind, name = principal
        record: OscoreContext | None
        if kind == "client":
            client = self._store.get_client(name)
            record = None if client is None else client.oscore
        else:
            rs = self._store.get_resource_server(name)
            record = None if rs is None else rs.introspection_context
        if record is None or (record.sender_id, record.id_context) != kid:
            return None  # changed since the index was read: the next refresh sees it
        key = context_fingerprint(record)
        legacy = _legacy_mark(self._legacy_dir, key)
        created = self._state.start_oscore_state(key, mark=legacy or 0)
        return StoredServerContext(
            record, principal, key=key, state=self._state, fresh=created and legacy is None
        )

    async def _load(self, kid: _Kid, principal: tuple[str, str]) -> None:
        try:
            ctx = await asyncio.to_thread(self._derive, kid, principal)
        except Exception:
            log.exception("cannot load the OSCORE context of %s %s", *principal)
            return
        if self._closed or self._index.get(kid) != principal:
            return
        if ctx is None:  # removed or re-keyed: unknown until the next (rate-limited) read
            del self._index[kid]
        else:
            self._loaded.setdefault(kid, ctx)

    async def _ensure_loaded(self, kid: _Kid) -> None:
        principal = self._index.get(kid)
        if principal is None or kid in self._loaded:
            return
        loading = self._loading.get(kid)
        if loading is None or loading.done():
            loading = self._loading[kid] = asyncio.ensure_future(self._load(kid, principal))
            loading.add_done_callback(lambda _done: self._loading.pop(kid, None))
        await asyncio.shield(loading)

    async def ensure(self, unprotected: dict[int, Any]) -> None:
        """Before a request is unprotected: derive the context of a ``kid`` of the index
        off the event loop; for an unknown ``kid``, read the store again first, at most
        once a second and one read at a time.

        Within a second of the last read the request waits for the next one (shared
        by every request waiting): a device registered a moment ago is served on its
        first request, and unknown kids still cost one store read a second at most.
        """
        kid = _kid_of(unprotected)
        if kid in self._loaded:
            return
        if kid not in self._index:
            if self._refreshing is None or self._refreshing.done():
                wait = _REFRESH_INTERVAL_S - (time.monotonic() - self._last_refresh)
                self._refreshing = asyncio.ensure_future(
                    self._refresh_after(wait) if wait > 0 else self._refresh_off_loop()
                )
            try:
                await asyncio.shield(self._refreshing)
            except Exception:
                log.exception("cannot read the OSCORE contexts from the store")
                return
        await self._ensure_loaded(kid)

    def find_oscore(self, unprotected: dict[int, Any]) -> StoredServerContext:
        found = self._loaded.get(_kid_of(unprotected))
        if found is None:
            raise KeyError("no OSCORE context for this kid")
        return found

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        return {kid for kid, context in self._index if context is None}

    def close(self) -> None:
        """Forget the contexts; their sequence state is already durable in the store."""
        self._closed = True
        self._loaded.clear()
        self._index.clear()
        self.clear()


class AsOscoreSite(StrictOscoreSiteWrapper):
    """The OSCORE site wrapper that lets :class:`AsServerCredentials` learn of new peers
    (off the event loop) before a request naming an unknown ``kid`` is unprotected."""

    def __init__(self, inner_site: Any, server_credentials: AsServerCredentials) -> None:
        super().__init__(inner_site, server_credentials)
        self._as_credentials = server_credentials

    async def render_to_pipe(self, pipe: Any) -> None:
        request = pipe.request
        unprotected: dict[int, Any] | None = None
        # A malformed OSCORE option is the wrapper's to refuse (4.02).
        with contextlib.suppress(
            oscore.NotAProtectedMessage, oscore.DecodeError, IndexError, ValueError
        ):
            unprotected = oscore.verify_start(request)
        if unprotected is not None:
            await self._as_credentials.ensure(unprotected)
        await super().render_to_pipe(pipe)


def _principal(request: aiocoap.Message) -> tuple[str, str] | None:
    remote = request.remote
    if not isinstance(remote, OSCOREAddress):
        return None
    ctx = remote.security_context
    principal = getattr(ctx, "principal", None)
    return principal if isinstance(principal, tuple) else None


def _ace_response(code: aiocoap.numbers.codes.Code, body: dict[int, object]) -> aiocoap.Message:
    return aiocoap.Message(
        code=code, payload=cbor.dumps(body), content_format=CONTENT_FORMAT_ACE_CBOR
    )


def _check_body(request: aiocoap.Message) -> bytes:
    fmt = request.opt.content_format
    if fmt is not None and int(fmt) != CONTENT_FORMAT_ACE_CBOR:
        raise InvalidRequest("Content-Format must be application/ace+cbor (19)")
    if len(request.payload) > MAX_REQUEST_BYTES:
        raise PayloadTooLarge(f"request body larger than {MAX_REQUEST_BYTES} bytes")
    return bytes(request.payload)


def _internal_error() -> aiocoap.Message:
    return aiocoap.Message(code=aiocoap.INTERNAL_SERVER_ERROR)


class _AceResource(aiocoap.resource.Resource):  # type: ignore[misc]
    """An ACE endpoint behind OSCORE; aiocoap's Resource is already an ABC."""

    def __init__(
        self,
        service: AuthzService,
        *,
        clock: Callable[[], int] = lambda: int(time.time()),
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        super().__init__()
        self.service = service
        self.clock = clock
        self.random_bytes = random_bytes

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        principal = _principal(request)
        if principal is None:
            return error_response(InvalidClient("the request must be protected with OSCORE"))
        try:
            return await self.answer(principal, _check_body(request))
        except KeyboundError as err:
            log.info("%s %s refused: %s", principal[0], principal[1], err)
            return error_response(err)
        except Exception:
            log.exception("internal error answering %s %s", *principal)
            return _internal_error()

    async def answer(self, principal: tuple[str, str], payload: bytes) -> aiocoap.Message:
        """:meth:`handle` in a worker thread: the store may block (SQLite commits, a
        PostgreSQL round trip), the event loop stays free for other requests."""
        return await asyncio.to_thread(self.handle, principal, payload)

    @abc.abstractmethod
    def handle(self, principal: tuple[str, str], payload: bytes) -> aiocoap.Message:
        """Answer an OSCORE-authenticated request from ``principal`` (kind, name)."""


#: Token requests answered in one batch at most (one hop to a worker thread, one commit
#: of their records); requests past it wait for the next batch.
MAX_TOKEN_BATCH = DEFAULT_MAX_BATCH

#: Event-loop turns a batch waits at most for more requests before it starts, as long
#: as every turn brings one (a group commit's delay, counted in turns, not seconds).
GATHER_TURNS = DEFAULT_GATHER_TURNS


def _log_issued(client_id: str, record: IssuedToken) -> None:
    if log.isEnabledFor(logging.INFO):  # the line's arguments cost more than the check
        log.info(
            "issued token %s to %s for %s, scope %r, %s",
            record.cti.hex(),
            client_id,
            record.audience,
            record.scope,
            f"exp {record.exp}" if record.exp is not None else f"exi {record.exi}",
        )


class TokenResource(_AceResource):
    """``/token`` (RFC 9200 §5.8) for clients authenticated by their OSCORE context.

    Requests are answered in batches, in a worker thread: the requests that arrive
    while a batch is being answered wait and form the next one (at most
    :data:`MAX_TOKEN_BATCH`; a request alone is a batch of one). Before a batch
    starts, the event loop runs on while each of its turns brings another request,
    :data:`GATHER_TURNS` turns at most, so that requests already received (their
    datagrams read, unprotected) join it rather than wait for the next. A batch issues its
    tokens one after the other, commits all their records in one transaction, and
    only then are its answers sent: no token is answered before its record is
    committed, and when that commit fails none of the batch's tokens is answered
    (5.00, as for any internal error). Refusals are answered as before, each with its
    own error. One thread hop and one commit per batch, where each request took one
    of each (the event loop then reached the group commit of
    :class:`~keybound.coap.token_writer.TokenWriter` one request at a time).
    """

    def __init__(self, service: AuthzService, **kwargs: Any) -> None:
        super().__init__(service, **kwargs)
        self._batches: Batches[tuple[tuple[str, str], bytes], aiocoap.Message] = Batches(
            self.answer_batch, max_batch=MAX_TOKEN_BATCH, gather_turns=GATHER_TURNS
        )
        #: batches answered so far (each one thread hop and at most one commit)
        self.batches = 0

    async def answer(self, principal: tuple[str, str], payload: bytes) -> aiocoap.Message:
        """The answer to ``principal``'s request ``payload``, from the batch it joins
        (:class:`~keybound.coap.token_writer.Batches`: the requests received while a
        batch is answered, and those each turn of the event loop brings before it
        starts, :data:`GATHER_TURNS` turns at most)."""
        return await self._batches.submit((principal, payload))

    def answer_batch(self, batch: Sequence[tuple[tuple[str, str], bytes]]) -> list[aiocoap.Message]:
        """The answers to ``batch`` (client, body) in order; records committed first (blocks)."""
        answers: list[aiocoap.Message | None] = []
        issued: list[tuple[int, str, TokenResponse]] = []
        rows: list[IssuedToken] = []
        for principal, payload in batch:
            recorded: list[IssuedToken] = []
            try:
                response = self.issue(principal, payload, recorded.append)
            except KeyboundError as err:
                log.info("%s %s refused: %s", principal[0], principal[1], err)
                answers.append(error_response(err))
                continue
            except Exception:
                log.exception("internal error answering %s %s", *principal)
                answers.append(_internal_error())
                continue
            issued.append((len(answers), principal[1], response))
            answers.append(None)
            rows += recorded
        if rows:
            try:
                self.service.commit_records(rows)
            except Exception:
                log.exception("cannot record %d issued tokens: none of them is answered", len(rows))
                issued = []
        for where, client_id, response in issued:
            _log_issued(client_id, response.record)
            answers[where] = _ace_response(aiocoap.CREATED, response.to_cbor_map())
        self.batches += 1
        return [_internal_error() if answer is None else answer for answer in answers]

    def issue(
        self,
        principal: tuple[str, str],
        payload: bytes,
        record: Callable[[IssuedToken], None],
    ) -> TokenResponse:
        """The token for ``principal``'s request ``payload``; its record goes to ``record``."""
        kind, client_id = principal
        if kind != "client":
            raise InvalidClient("this context does not belong to a client")
        request = parse_cbor_token_request(payload, client_id)
        return self.service.issue_token(
            request, now=self.clock(), random_bytes=self.random_bytes, record=record
        )

    def handle(self, principal: tuple[str, str], payload: bytes) -> aiocoap.Message:
        """One request as a batch of its own (its answer, an error map or a 5.00)."""
        return self.answer_batch([(principal, payload)])[0]


class IntrospectResource(_AceResource):
    """``/introspect`` (RFC 9200 §5.9) for resource servers over their OSCORE context.

    A resource server learns about tokens for its own audience only.
    """

    def handle(self, principal: tuple[str, str], payload: bytes) -> aiocoap.Message:
        kind, name = principal
        token = parse_cbor_introspection_request(payload)
        audiences: list[str] = []
        if kind == "rs":
            rs = self.service.store.get_resource_server(name)
            if rs is None:
                raise InvalidClient("unknown resource server")
            audiences = [rs.audience]
        else:
            raise InvalidClient("only resource servers may introspect over CoAP")
        result = self.service.introspect(token, now=self.clock(), audiences=audiences)
        log.info("introspection by %s %s: active=%s", kind, name, result.active)
        return _ace_response(aiocoap.CREATED, result.to_cbor_map())


def build_site(
    store: AuthzStore,
    config: AuthzServerConfig,
    state_dir: Path,
    *,
    clock: Callable[[], int] | None = None,
    service: AuthzService | None = None,
    trl: TrlResource | None = None,
) -> tuple[StrictOscoreSiteWrapper, AsServerCredentials]:
    """The AS's root resource (``/token``, ``/introspect``, ``/.well-known/core`` and,
    given ``trl``, the token revocation list ``/revoke/trl`` of RFC 9770) wrapped for
    OSCORE, and the credentials to close on shutdown.

    ``service`` answers the requests (one may be shared with the HTTP front, so
    both use one key ring); by default one on ``store`` and ``config``. This
    reads the store's index of OSCORE peers (one query; contexts are derived on
    their first request): call it before serving, or in a worker thread.
    """
    if not isinstance(store, OscoreStateStore):
        raise TypeError("the AS's CoAP site needs a store that keeps OSCORE sequence state")
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    answering = service if service is not None else AuthzService(store, config)
    site = aiocoap.resource.Site()
    credentials = AsServerCredentials(store, store, Path(state_dir))
    harden_message_decoding()
    root = AsOscoreSite(site, credentials)
    # Bodies are bounded while blocks arrive, not after reassembly (RFC 7959 §2.9.3);
    # .well-known/core takes no body at all.
    wkc = aiocoap.resource.WKCResource(site.get_resources_as_linkheader)
    root.add_bounded([".well-known", "core"], wkc, 0)
    root.add_bounded(["token"], TokenResource(answering, **kwargs), MAX_REQUEST_BYTES)
    introspection = IntrospectResource(answering, **kwargs)
    root.add_bounded(["introspect"], introspection, MAX_REQUEST_BYTES)
    if trl is not None:  # RFC 9770: GET only, no body
        root.add_bounded(list(TRL_PATH), trl, 0)
    return root, credentials
