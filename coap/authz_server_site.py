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

The contexts are kept in :class:`AsServerCredentials`, looked up by ``kid`` in a
dict. A request naming a ``kid`` it does not hold makes it read the store again
(at most once a second, for peers provisioned while the AS runs); that reading,
and the lock files of new contexts, run in a worker thread, never on the event
loop. The requests' own store work (:class:`~keybound.coap.authz_service.AuthzService`)
runs in worker threads too.

Sequence numbers (RFC 8613 Appendix B.1): each server context is an
:class:`aiocoap.oscore.FilesystemSecurityContext` whose keys come from the
store (no secrets are written to disk) while its ``sequence.json`` (next
sender sequence number, persisted ahead in growing chunks, and the replay
window) lives in ``STATE_DIR/oscore/<fingerprint>``. The fingerprint hashes
the context's parameters, so a re-provisioned client starts a fresh window.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
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
    parse_cbor_introspection_request,
    parse_cbor_token_request,
)
from keybound.core.authz_store import AuthzStore, OscoreContext
from keybound.core.errors import (
    InvalidClient,
    InvalidRequest,
    KeyboundError,
    PayloadTooLarge,
)
from keybound.core.numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR

from .errors import error_response
from .input_guards import StrictOscoreSiteWrapper, harden_message_decoding
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


class StoredServerContext(oscore.FilesystemSecurityContext):  # type: ignore[misc]
    """An AS-side OSCORE context whose parameters come from the store.

    The AS sends with the record's ``recipient_id`` and receives with its
    ``sender_id`` (the record names the peer's side, see
    :class:`keybound.core.authz_store.OscoreContext`). ``principal`` is who
    the peer is: ``("client", client_id)`` or ``("rs", name)``.
    """

    def __init__(self, basedir: Path, record: OscoreContext, principal: tuple[str, str]) -> None:
        self._record = record
        self.principal = principal
        basedir.mkdir(mode=0o700, parents=True, exist_ok=True)
        super().__init__(str(basedir))

    def _load(self) -> None:
        record = self._record
        self.alg_aead = oscore.algorithms[oscore.DEFAULT_ALGORITHM]
        self.hashfun = oscore.hashfunctions[oscore.DEFAULT_HASHFUNCTION]
        self.sender_id = record.recipient_id
        self.recipient_id = record.sender_id
        self.id_context = record.id_context
        self.derive_keys(record.master_salt, record.master_secret)
        self.recipient_replay_window = oscore.ReplayWindow(
            oscore.DEFAULT_WINDOWSIZE, self._replay_window_changed
        )
        state = Path(self.basedir) / "sequence.json"
        try:
            persisted = json.loads(state.read_text())
        except FileNotFoundError:
            self.sender_sequence_number = 0
            self.recipient_replay_window.initialize_empty()
            self.replay_window_persisted = True
            return
        self.sender_sequence_number = int(persisted["next-to-send"])
        received = persisted.get("received", "unknown")
        if received == "unknown":
            self.replay_window_persisted = False  # Echo recovery, RFC 8613 Appendix B.1.2
        else:
            self.recipient_replay_window.initialize_from_persisted(received)
            self.replay_window_persisted = True

    def unprotect(self, protected_message: Any, request_id: Any = None) -> Any:
        """aiocoap's unprotection; a request refused as a replay is logged (see
        :func:`_log_replay`) before aiocoap answers it 4.01 "Replay detected"."""
        try:
            return super().unprotect(protected_message, request_id)
        except oscore.ReplayError as exc:
            if self.recipient_replay_window.is_initialized():  # a number seen before
                _log_replay(self, protected_message, exc)
            raise

    def close(self) -> None:
        """Persist the sequence number and replay window and release the lock."""
        if self.lockfile is not None:
            self._destroy()


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
    """A directory name that changes whenever any parameter of the context changes."""
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


_Wanted = dict[str, tuple[OscoreContext, tuple[str, str]]]


def _kid_of(unprotected: dict[int, Any]) -> tuple[Any, Any]:
    """What a request's context is looked up by: its ``kid`` and ``kid context``."""
    return unprotected.get(oscore.COSE_KID), unprotected.get(oscore.COSE_KID_CONTEXT)


class AsServerCredentials(CredentialsMap):  # type: ignore[misc]
    """The AS's server contexts, looked up by ``kid`` (and ``kid context``) in a dict.

    Contexts of clients and resource servers added while the AS runs are
    picked up on the first request that names an unknown ``kid`` (at most once
    a second): :meth:`ensure` reads the store and opens the new contexts in a
    worker thread before the request is unprotected; :meth:`find_oscore` only
    looks up.
    """

    def __init__(self, store: AuthzStore, state_dir: Path) -> None:
        super().__init__()
        self._store = store
        self._state_dir = state_dir / "oscore"
        self._by_kid: dict[tuple[bytes, bytes | None], StoredServerContext] = {}
        self._by_fingerprint: dict[str, StoredServerContext] = {}
        self._last_refresh = 0.0
        self._refreshing: asyncio.Future[None] | None = None
        self._closed = False
        self.refresh()

    def _wanted(self) -> _Wanted:
        """The contexts the store holds, by fingerprint (reads the store: blocks)."""
        wanted: _Wanted = {}
        for client in self._store.list_clients():
            if client.oscore is not None:
                wanted[context_fingerprint(client.oscore)] = (
                    client.oscore,
                    ("client", client.client_id),
                )
        for rs in self._store.list_resource_servers():
            if rs.introspection_context is not None:
                wanted[context_fingerprint(rs.introspection_context)] = (
                    rs.introspection_context,
                    ("rs", rs.name),
                )
        return wanted

    def _open(self, wanted: _Wanted, held: frozenset[str]) -> dict[str, StoredServerContext]:
        """Open the contexts of ``wanted`` not in ``held`` (state files and locks: blocks)."""
        opened: dict[str, StoredServerContext] = {}
        for fingerprint, (record, who) in wanted.items():
            if fingerprint in held:
                continue
            try:
                opened[fingerprint] = StoredServerContext(
                    self._state_dir / fingerprint, record, who
                )
            except Exception as exc:  # a locked or damaged state directory: skip this peer
                log.error("cannot load the OSCORE context of %s %s: %s", *who, exc)
        return opened

    def _install(
        self, wanted: _Wanted, opened: dict[str, StoredServerContext]
    ) -> list[StoredServerContext]:
        """Put the new contexts in place; returns the removed ones, still to close."""
        if self._closed:  # a refresh that ended after close(): keep nothing open
            return list(opened.values())
        stale = [
            self._by_fingerprint.pop(fingerprint)
            for fingerprint in list(self._by_fingerprint)
            if fingerprint not in wanted
        ]
        for fingerprint, ctx in self._by_fingerprint.items():
            ctx.principal = wanted[fingerprint][1]
        self._by_fingerprint.update(opened)
        self._by_kid = {
            (ctx.recipient_id, ctx.id_context): ctx for ctx in self._by_fingerprint.values()
        }
        self.clear()
        for fingerprint, ctx in self._by_fingerprint.items():
            self[":" + fingerprint] = ctx
        return stale

    def refresh(self) -> None:
        """Bring the contexts in line with the store (new, changed, removed peers); blocks."""
        self._last_refresh = time.monotonic()
        wanted = self._wanted()
        opened = self._open(wanted, frozenset(self._by_fingerprint))
        for ctx in self._install(wanted, opened):
            ctx.close()

    async def _refresh_off_loop(self) -> None:
        self._last_refresh = time.monotonic()
        wanted = await asyncio.to_thread(self._wanted)
        opened = await asyncio.to_thread(self._open, wanted, frozenset(self._by_fingerprint))
        stale = self._install(wanted, opened)
        for ctx in stale:
            await asyncio.to_thread(ctx.close)

    async def _refresh_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._refresh_off_loop()

    async def ensure(self, unprotected: dict[int, Any]) -> None:
        """Before a request is unprotected: for an unknown ``kid``, read the store again
        without blocking the event loop, at most once a second and one refresh at a time.

        Within a second of the last refresh the request waits for the next one (shared
        by every request waiting): a device registered a moment ago is served on its
        first request, and unknown kids still cost one store read a second at most.
        """
        if _kid_of(unprotected) in self._by_kid:
            return
        if self._refreshing is None or self._refreshing.done():
            wait = _REFRESH_INTERVAL_S - (time.monotonic() - self._last_refresh)
            self._refreshing = asyncio.ensure_future(
                self._refresh_after(wait) if wait > 0 else self._refresh_off_loop()
            )
        try:
            await asyncio.shield(self._refreshing)
        except Exception:
            log.exception("cannot read the OSCORE contexts from the store")

    def find_oscore(self, unprotected: dict[int, Any]) -> StoredServerContext:
        found = self._by_kid.get(_kid_of(unprotected))
        if found is None:
            raise KeyError("no OSCORE context for this kid")
        return found

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        return {kid for kid, context in self._by_kid if context is None}

    def close(self) -> None:
        """Persist every context's state (RFC 8613 Appendix B.1) and release the locks."""
        self._closed = True
        for ctx in self._by_fingerprint.values():
            ctx.close()
        self._by_fingerprint.clear()
        self._by_kid.clear()
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
            # The store may block (SQLite commits, a PostgreSQL round trip): keep the
            # event loop free for other requests while it works.
            return await asyncio.to_thread(self.handle, principal, _check_body(request))
        except KeyboundError as err:
            log.info("%s %s refused: %s", principal[0], principal[1], err)
            return error_response(err)
        except Exception:
            log.exception("internal error answering %s %s", *principal)
            return aiocoap.Message(code=aiocoap.INTERNAL_SERVER_ERROR)

    @abc.abstractmethod
    def handle(self, principal: tuple[str, str], payload: bytes) -> aiocoap.Message:
        """Answer an OSCORE-authenticated request from ``principal`` (kind, name)."""


class TokenResource(_AceResource):
    """``/token`` (RFC 9200 §5.8) for clients authenticated by their OSCORE context."""

    def handle(self, principal: tuple[str, str], payload: bytes) -> aiocoap.Message:
        kind, client_id = principal
        if kind != "client":
            raise InvalidClient("this context does not belong to a client")
        request = parse_cbor_token_request(payload, client_id)
        response = self.service.issue_token(
            request, now=self.clock(), random_bytes=self.random_bytes
        )
        record = response.record
        log.info(
            "issued token %s to %s for %s, scope %r, %s",
            record.cti.hex(),
            client_id,
            record.audience,
            record.scope,
            f"exp {record.exp}" if record.exp is not None else f"exi {record.exi}",
        )
        return _ace_response(aiocoap.CREATED, response.to_cbor_map())


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
    reads the store and opens the OSCORE state: call it before serving, or in a
    worker thread.
    """
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
    answering = service if service is not None else AuthzService(store, config)
    site = aiocoap.resource.Site()
    credentials = AsServerCredentials(store, Path(state_dir))
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
