"""The Authorization Server on its store: the records a request needs in, the token out.

:mod:`keybound.core.authz_server` checks requests and makes tokens from the
records it is given and touches no store. :class:`AuthzService` is the one
place that talks to the :class:`~keybound.core.authz_store.AuthzStore` for it:
for a token request it reads the client's and the RS's record, takes a
sequence number for an RS without a clock (RFC 9200 §5.10.3), lets the core
make the token and records it; for an introspection request it reads the
resource servers and the token's record. Store reads come before the
cryptography and the one write after it.

Its calls block (a database round trip, an SQLite commit): the bindings run
them off the event loop (``asyncio.to_thread``). Token requests go through
:meth:`AuthzService.issue_token_batched`: the requests that meet on the event loop
share one hop to a worker thread and one commit of their records
(:class:`~keybound.coap.token_writer.Batches`), each answered only once its record is
committed. It is safe to share between
threads, which is why it lives here and not in the sans-IO core. The CoAP site
and the AS's HTTP front (``keybound.tools.authz_server.http``) share one.

:class:`KeyRing` keeps the parsed keys: each RS's token keys (RFC 9200 §6.1)
are parsed from their COSE_Key bytes once per version and parsed again only
when the RS's record shows other versions (after ``rotate-key``, in this
process or another one sharing the store).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, runtime_checkable

from keybound.core.authz_server import (
    AuthzServerConfig,
    IntrospectionResult,
    TokenGrant,
    TokenRequest,
    TokenResponse,
    authorize,
    introspection_result,
    mint_token,
    on_record_as,
)
from keybound.core.authz_store import AuthzStore, Client, IssuedToken, RsRecord, TokenKey
from keybound.core.errors import KeyboundError
from keybound.core.keys import Key

from .token_writer import Batches, TokenNotRecorded, TokenWriter

__all__ = [
    "CONFIG_CHECK_INTERVAL_S",
    "MAX_CACHED_RECORDS",
    "AuthzService",
    "IssueRequest",
    "KeyRing",
    "RecordCache",
]

R = TypeVar("R")

#: How long issuing may use cached client and RS records without looking at the
#: configuration version: a client removed, or a grant taken away, by any process
#: sharing the store gets no token from a request that starts later than this after
#: the change is committed.
CONFIG_CHECK_INTERVAL_S = 0.1
#: Records kept at most (clients and RSs together); past it the cache starts afresh.
MAX_CACHED_RECORDS = 100_000


@runtime_checkable
class _Versioned(Protocol):
    def config_version(self) -> int: ...


@runtime_checkable
class _RecordsInBatches(Protocol):
    def record_tokens(self, tokens: Sequence[IssuedToken]) -> None: ...


class RecordCache:
    """Client and RS records for issuing, kept while the store's configuration version
    stays the same, looked at every :data:`CONFIG_CHECK_INTERVAL_S` at most.

    Only records found are kept (client IDs and audiences come from requests); at most
    :data:`MAX_CACHED_RECORDS`. ``monotonic`` is the clock (a parameter for tests).
    """

    def __init__(
        self, store: _Versioned, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._version: int | None = None
        self._checked = float("-inf")
        self._clients: dict[str, Client] = {}
        self._servers: dict[str, RsRecord] = {}

    def _fresh(self) -> None:
        now = self._monotonic()
        # read without the lock (one attribute, one float): at worst a thread that saw
        # an older time reads the version once more
        if now - self._checked < CONFIG_CHECK_INTERVAL_S:
            return
        version = self._store.config_version()
        with self._lock:
            self._checked = now
            if version != self._version:
                self._version = version
                self._clients.clear()
                self._servers.clear()

    def _get(self, table: dict[str, R], key: str, load: Callable[[str], R | None]) -> R | None:
        self._fresh()
        found = table.get(key)
        if found is None:
            found = load(key)
            if found is not None:
                with self._lock:
                    if len(self._clients) + len(self._servers) >= MAX_CACHED_RECORDS:
                        self._clients.clear()
                        self._servers.clear()
                    table[key] = found
        return found

    def client(self, client_id: str, load: Callable[[str], Client | None]) -> Client | None:
        """The client's record, cached, or from ``load``."""
        return self._get(self._clients, client_id, load)

    def server(self, audience: str, load: Callable[[str], RsRecord | None]) -> RsRecord | None:
        """The RS of ``audience``, cached, or from ``load``."""
        return self._get(self._servers, audience, load)


class KeyRing:
    """The parsed token keys of each resource server, newest first, cached by RS name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parsed: dict[str, tuple[tuple[TokenKey, ...], tuple[Key, ...]]] = {}

    def token_keys(self, rs: RsRecord) -> tuple[Key, ...]:
        """``rs``'s token keys, parsed (``kid`` set), in the order of ``rs.token_keys``.

        Parsed once; parsed again when the record's key versions differ from
        those parsed (a rotation).
        """
        cached = self._parsed.get(rs.name)  # one dict read: no lock needed for it
        if cached is not None and (cached[0] is rs.token_keys or cached[0] == rs.token_keys):
            return cached[1]
        parsed = tuple(
            Key.from_cose_key(version.key).with_kid(version.kid) for version in rs.token_keys
        )
        with self._lock:
            self._parsed[rs.name] = (rs.token_keys, parsed)
        return parsed

    def current(self, rs: RsRecord) -> Key:
        """The key new tokens for ``rs`` are encrypted with."""
        return self.token_keys(rs)[0]

    def all_keys(self, servers: Iterable[RsRecord]) -> list[Key]:
        """Every token key of ``servers``; forgets the RSs not among them."""
        listed = list(servers)
        keys = [key for rs in listed for key in self.token_keys(rs)]
        names = {rs.name for rs in listed}
        with self._lock:
            for gone in [name for name in self._parsed if name not in names]:
                del self._parsed[gone]
        return keys

    def invalidate(self, name: str | None = None) -> None:
        """Forget the keys of RS ``name``, or of every RS."""
        with self._lock:
            if name is None:
                self._parsed.clear()
            else:
                self._parsed.pop(name, None)


@dataclass(frozen=True)
class IssueRequest:
    """One token request of a batch (:meth:`AuthzService.issue_batch`), with the
    arguments :meth:`AuthzService.issue_token` takes for it."""

    request: TokenRequest
    now: int
    random_bytes: Callable[[int], bytes]
    client: Client | None = None
    check_grant: Callable[[TokenGrant], None] | None = None


@dataclass
class AuthzService:
    """Token and introspection requests (RFC 9200 §5.8, §5.9) answered from ``store``."""

    store: AuthzStore
    config: AuthzServerConfig
    keys: KeyRing = field(default_factory=KeyRing)
    #: Cached client and RS records (:class:`RecordCache`); made for a store that has a
    #: configuration version, otherwise every request reads the records.
    records: RecordCache | None = None
    writer: TokenWriter | None = None
    _public_key: Key = field(init=False, repr=False)
    #: the batches of :meth:`issue_token_batched`, made on its first call
    _batches: Batches[IssueRequest, TokenResponse | Exception] | None = field(
        default=None, init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._public_key = self.config.public_key
        if self.records is None and isinstance(self.store, _Versioned):
            self.records = RecordCache(self.store)
        if self.writer is None and isinstance(self.store, _RecordsInBatches):
            self.writer = TokenWriter(self.store.record_tokens)

    def issue_token(
        self,
        request: TokenRequest,
        *,
        now: int,
        random_bytes: Callable[[int], bytes],
        client: Client | None = None,
        check_grant: Callable[[TokenGrant], None] | None = None,
        record: Callable[[IssuedToken], None] | None = None,
    ) -> TokenResponse:
        """Validate, authorize and answer a token request, and record the token.

        ``client`` is the record of the client a binding has just authenticated
        (HTTP ``client_secret_basic``), so it is not read again. ``check_grant``
        may refuse the authorized grant (raise a KeyboundError) before anything is
        minted or recorded: a binding's own rule, such as no OSCORE input material
        over plain HTTP. ``record`` takes the token's record instead of the store: the
        caller commits it before it answers (the CoAP site, one commit per batch of
        requests).
        """
        records = self.records
        if client is None or client.client_id != request.client_id:
            client = (
                self.store.get_client(request.client_id)
                if records is None
                else records.client(request.client_id, self.store.get_client)
            )
        rs = None
        if client is not None and request.audience is not None:
            rs = (
                self.store.get_resource_server_by_audience(request.audience)
                if records is None
                else records.server(request.audience, self.store.get_resource_server_by_audience)
            )
        grant = authorize(self.config, request, client=client, rs=rs)
        if check_grant is not None:
            check_grant(grant)
        sequence = self.store.next_sequence(grant.rs.audience) if grant.needs_sequence else None
        response = mint_token(
            self.config,
            grant,
            token_key=self.keys.current(grant.rs),
            now=now,
            random_bytes=random_bytes,
            sequence=sequence,
        )
        if record is not None:
            record(response.record)
        elif self.writer is None:
            self.store.record_token(response.record)
        else:
            self.writer.record(response.record)
        return response

    def commit_records(self, rows: Sequence[IssuedToken]) -> None:
        """Record ``rows``: in one transaction on a store that has ``record_tokens``,
        else one by one (a failure then leaves the rows before it recorded, never
        answered: a token on record that no client holds). Blocks."""
        if isinstance(self.store, _RecordsInBatches):
            self.store.record_tokens(rows)  # one transaction: every row, or none
        else:
            for row in rows:
                self.store.record_token(row)

    def issue_batch(self, batch: Sequence[IssueRequest]) -> list[TokenResponse | Exception]:
        """:meth:`issue_token` for each request of ``batch``, in order, and one commit of
        all their records before any response is returned (blocks).

        Each result is the response or the exception its request raised (a refusal,
        a KeyboundError, is its own); when the commit fails, every token of the batch
        gets :class:`~keybound.coap.token_writer.TokenNotRecorded` instead: none of
        them may be answered.
        """
        results: list[TokenResponse | Exception] = []
        rows: list[IssuedToken] = []
        for item in batch:
            try:
                results.append(
                    self.issue_token(
                        item.request,
                        now=item.now,
                        random_bytes=item.random_bytes,
                        client=item.client,
                        check_grant=item.check_grant,
                        record=rows.append,
                    )
                )
            except Exception as exc:  # this request's own failure: the others go on
                results.append(exc)
        if rows:
            try:
                self.commit_records(rows)
            except Exception as exc:
                lost = TokenNotRecorded(f"the token was not recorded, so it is not issued: {exc}")
                lost.__cause__ = exc
                results = [lost if isinstance(r, TokenResponse) else r for r in results]
        return results

    async def issue_token_batched(
        self,
        request: TokenRequest,
        *,
        now: int,
        random_bytes: Callable[[int], bytes],
        client: Client | None = None,
        check_grant: Callable[[TokenGrant], None] | None = None,
    ) -> TokenResponse:
        """:meth:`issue_token` off the event loop, in a batch with the requests that meet
        it there (:meth:`issue_batch` in a worker thread: one thread hop and one commit
        for them all); returns once its record is committed, raises what
        :meth:`issue_token` would, or :class:`~keybound.coap.token_writer.TokenNotRecorded`
        when the batch's commit failed. Call it from one event loop."""
        if self._batches is None:
            self._batches = Batches(self.issue_batch)
        result = await self._batches.submit(
            IssueRequest(request, now, random_bytes, client, check_grant)
        )
        if isinstance(result, Exception):
            raise result
        return result

    def introspect(
        self,
        token: bytes | str,
        *,
        now: int,
        audiences: Sequence[str] | None = None,
    ) -> IntrospectionResult:
        """Whether ``token`` is active, and its claims (RFC 7662 §2.2, RFC 9200 §5.9.2).

        Inactive when the token does not decode with the AS's keys, was not
        issued by this AS, is not on record, is revoked or has expired.
        ``audiences`` restricts the answer to tokens for those audiences.
        """
        servers = self.store.list_resource_servers()
        try:
            keys = [self._public_key, *self.keys.all_keys(servers)]
        except KeyboundError:  # a token key that does not parse: nothing decodes, as before
            return IntrospectionResult(active=False)
        found = on_record_as(self.config, token, keys)
        if found is None:
            return IntrospectionResult(active=False)
        decoded, key = found
        record = self.store.get_token(key)
        return introspection_result(decoded, record, now=now, audiences=audiences)
