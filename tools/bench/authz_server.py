"""``keybound bench`` group ``as``: token requests per second at the Authorization Server.

In process, :meth:`keybound.coap.authz_service.AuthzService.issue_token` answers a token
request against the AS's own storage (:class:`~keybound.tools.authz_server.storage.SqlAuthzStore`
on an SQLite file in a temporary directory, as ``keybound as serve`` runs by
default), recording every token it issues:

* ``as.issue_es256_req_cnf``: the client sends its P-256 public key in
  ``req_cnf``; the token is a COSE_Sign1 (ES256) with ``cnf`` COSE_Key.
* ``as.issue_osc``: no key from the client; the AS draws OSCORE input material
  and the token is a COSE_Encrypt0 (AES-CCM-16-64-128) around the AS's Sign1
  (RFC 9203 §3.2, RFC 8392 Appendix A.6).
* ``as.issue_osc_no_clock``: the same for an RS without a clock, so the AS
  also takes the next ``exi`` sequence number of the audience from its store
  (RFC 9200 §5.10.3).

These are read against ``as.floor``: the raw work that no AS can avoid for
the nested token, as one function: cbor2 ``dumps`` of the claims, an ECDSA
P-256 signature, AES-CCM encryption of claims and signature, and the durable
write of the token's record (one SQLite ``INSERT`` and ``COMMIT``, WAL and
``synchronous=FULL``, in the same temporary directory). The floor itself is
read against the bare ECDSA signature. ``as.issue_durable_over_stubbed`` is
``as.issue_osc`` against the same AS whose store is stubbed (records read once
and kept, sequence numbers counted in memory, tokens not recorded), one request
at a time, so every token is a commit of its own; ``as.issue_no_clock_durable_over_stubbed``
is the same for ``as.issue_osc_no_clock`` (one more commit per token: its ``exi``
number). All of these are timed in paired rounds on the thread's CPU clock: what
``fsync`` waits for the disk is not counted, the figure's ``cpu_share`` shows how
much of the wall time that left.

``as.issue_durable_over_stubbed_concurrent`` and
``as.issue_no_clock_durable_over_stubbed_concurrent`` are the same two pairs with
:data:`CONCURRENCY` issuances in flight on one event loop, each through
:meth:`~keybound.coap.authz_service.AuthzService.issue_token_batched` as the HTTP
front runs them (the CoAP site's ``/token`` batches the same way): the requests that
meet there share one hop to a worker thread and one commit of their rows
(:class:`keybound.coap.token_writer.Batches`), the stubbed side the same hops with
nothing to write; tokens per second of the process's CPU time (every thread), in
paired rounds.

Over CoAP, ``as.coap_token_rps`` is POST ``/token`` through the AS's real
site (``keybound.coap.authz_server_site``: contexts derived on first use by
``kid``, sequence state in the database, the token records committed before the
answers), from :data:`CONCURRENCY` clients, each a provisioned client of the AS
with its own client-AS OSCORE context and its own socket, the token as in
``as.issue_osc``; against ``as.coap_bare_oscore_rps``: a bare aiocoap OSCORE
server (:class:`aiocoap.oscore_sitewrapper.OscoreSiteWrapper`, one static
context per client in aiocoap's ``CredentialsMap``) whose resource answers a POST
of the same payload with 2.01 and as many bytes as the AS's answer, from the same
clients. aiocoap's client keeps one confirmable exchange per server at a time
(NSTART = 1, RFC 7252 §4.7), so one client, as before, put one request in flight
however many callers it had: here each client has one in flight, :data:`CONCURRENCY`
in all. Servers and clients share one event loop in this process, on loopback;
the rates are per second of the process's CPU time, in paired rounds.

``as.startup_10000_clients`` and ``as.startup_100000_clients`` are the wall time
until the AS's CoAP site is built (``build_site``: the index of every peer's ``kid``
read; contexts are derived on their first request) over a store with that many
OSCORE clients (:data:`STARTUP_CLIENTS`, written by one bulk ``INSERT``), against
the same over the store with one client, one start-up each. Provisioning that many
clients takes seconds, so ``--quick`` skips them; an AS that cannot start is
reported as a skip with the error.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
import aiocoap.resource
import cbor2
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from sqlalchemy import insert

from keybound.coap.authz_server_site import build_site
from keybound.coap.authz_service import AuthzService
from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.core.authz_server import AuthzServerConfig, TokenRequest
from keybound.core.authz_store import AuthzStore, OscoreContext, RsRecord
from keybound.core.keys import Key
from keybound.core.numbers.ace_parameters import AceParameter
from keybound.core.oscore_derivation import DerivedContext
from keybound.tools.authz_server.provision import (
    add_clients,
    add_resource_server,
    as_config,
    init_issuer,
)
from keybound.tools.authz_server.schema import clients_table, oscore_columns
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    HOST,
    ISSUER,
    Keys,
    client_oscore_context,
    free_udp_port,
)
from keybound.tools.bench.measure import (
    MILLISECONDS,
    REQUESTS_PER_SECOND,
    TOKENS_PER_SECOND,
    Figure,
    Group,
    Measurement,
    Paired,
    Runner,
    Skipped,
)
from keybound.tools.bench.oscore import bare_oscore_pair

FIGURES = (
    "as.issue_es256_req_cnf",
    "as.issue_osc",
    "as.issue_osc_no_clock",
    "as.issue_durable_over_stubbed",
    "as.issue_durable_over_stubbed_concurrent",
    "as.issue_no_clock_durable_over_stubbed",
    "as.issue_no_clock_durable_over_stubbed_concurrent",
    "as.floor",
    "as.coap_token_rps",
    "as.startup_10000_clients",
    "as.startup_100000_clients",
)
#: Clients provisioned for the ``as.startup_*_clients`` figures (a full run only: seconds).
STARTUP_CLIENTS = (10_000, 100_000)
#: The audience of the benchmark's RS without a clock.
NO_CLOCK_AUDIENCE = "rs-no-clock.example"
#: The scope the benchmark's client is granted and asks for.
AS_SCOPE = "read"
CLIENT = "bench-client"
#: CoAP clients, each with one request in flight, for the token and the bare rates alike;
#: also the in-process issuances at once of the ``*_concurrent`` figures.
CONCURRENCY = 8
ACE_CBOR = 19
_ECDSA = ec.ECDSA(hashes.SHA256())


@dataclass
class ProvisionedAs:
    """An AS store with resource servers ``AUDIENCE`` and ``NO_CLOCK_AUDIENCE`` and one client."""

    store: SqlAuthzStore
    config: AuthzServerConfig
    rs: RsRecord
    client: OscoreContext
    state_dir: Path

    def token_key(self) -> Key:
        """The AS-RS token key, as the RS bundle carries it."""
        current = self.rs.token_key
        return Key.from_cose_key(current.key).with_kid(current.kid)


@contextmanager
def provisioned_as() -> Iterator[ProvisionedAs]:
    """A fresh AS in a temporary directory, closed and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        store = SqlAuthzStore.init(f"sqlite:///{Path(tmp) / 'as.db'}")
        try:
            init_issuer(store, ISSUER)
            rs = add_resource_server(store, "bench-rs", AUDIENCE, [AS_SCOPE], has_clock=True)
            add_resource_server(
                store, "bench-rs-no-clock", NO_CLOCK_AUDIENCE, [AS_SCOPE], has_clock=False
            )
            grants = {AUDIENCE: [AS_SCOPE], NO_CLOCK_AUDIENCE: [AS_SCOPE]}
            client = add_clients(store, [CLIENT], grants)[0]
            assert client.oscore is not None
            yield ProvisionedAs(store, as_config(store), rs, client.oscore, Path(tmp) / "state")
        finally:
            store.close()


def client_security_context(ctx: OscoreContext) -> DurableSecurityContext:
    """The client's side of its provisioned client-AS context, in memory."""
    return client_oscore_context(
        DerivedContext(
            master_secret=ctx.master_secret,
            master_salt=ctx.master_salt,
            id_context=ctx.id_context,
            sender_id=ctx.sender_id,
            recipient_id=ctx.recipient_id,
        )
    )


class _Answer(aiocoap.resource.Resource):  # type: ignore[misc]
    """A trivial resource: 2.01 with a fixed payload to any POST."""

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.payload = payload

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CREATED, payload=self.payload)


class _StubbedStore:
    """``store`` with its storage stubbed: records read once, nothing written.

    Client and RS records are fetched from ``store`` the first time and kept;
    ``exi`` sequence numbers are counted in memory; issued tokens are not
    recorded. Everything else goes to ``store``.
    """

    def __init__(self, store: AuthzStore) -> None:
        self._store = store
        self._clients: dict[str, Any] = {}
        self._servers: dict[str, Any] = {}
        self._sequences: dict[str, int] = {}

    def get_client(self, client_id: str) -> Any:
        if client_id not in self._clients:
            self._clients[client_id] = self._store.get_client(client_id)
        return self._clients[client_id]

    def get_resource_server_by_audience(self, audience: str) -> Any:
        if audience not in self._servers:
            self._servers[audience] = self._store.get_resource_server_by_audience(audience)
        return self._servers[audience]

    def next_sequence(self, audience: str) -> int:
        self._sequences[audience] = self._sequences.get(audience, 0) + 1
        return self._sequences[audience]

    def record_token(self, record: object) -> None:
        """Not recorded: the storage is what is left out."""

    def record_tokens(self, records: object) -> None:
        """Not recorded either (the group commit's write, :mod:`keybound.coap.token_writer`)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _durable_write(where: Path) -> Callable[[bytes, bytes], None]:
    """One token record made durable: INSERT and COMMIT, WAL and ``synchronous=FULL``."""
    db = sqlite3.connect(where / "floor.db", isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE tokens (cti BLOB PRIMARY KEY, token BLOB NOT NULL)")

    def write(cti: bytes, token: bytes) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO tokens VALUES (?, ?)", (cti, token))
        db.execute("COMMIT")

    return write


def _floor(keys: Keys, where: Path) -> tuple[Callable[[], object], Callable[[], object]]:
    """(the floor of a nested token with its durable record, the bare ECDSA signature)."""
    private = keys.as_signing.private
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    secret = keys.as_rs.secret
    assert secret is not None
    ccm = AESCCM(secret, tag_length=8)
    claims = keys.osc_token(now=int(time.time())).to_cwt_claims()
    nonce = bytes(13)
    to_sign = cbor2.dumps(claims)
    write = _durable_write(where)

    def floor() -> object:
        payload = cbor2.dumps(claims)
        signature = private.sign(payload, _ECDSA)
        token = ccm.encrypt(nonce, payload + signature, b"")
        write(os.urandom(16), token)
        return token

    def sign() -> object:
        return private.sign(to_sign, _ECDSA)

    return floor, sign


def _issue(service: AuthzService, request: TokenRequest) -> Callable[[], object]:
    def run() -> object:
        return service.issue_token(
            request,
            now=int(time.time()),
            random_bytes=os.urandom,
        )

    return run


def _coap_clients(setup: ProvisionedAs) -> list[OscoreContext]:
    """The OSCORE contexts of :data:`CONCURRENCY` clients of the AS: the benchmark's
    client and more provisioned like it (each client its own context at the AS)."""
    grants = {AUDIENCE: [AS_SCOPE], NO_CLOCK_AUDIENCE: [AS_SCOPE]}
    names = [f"{CLIENT}-coap-{i}" for i in range(1, CONCURRENCY)]
    added = [new.oscore for new in add_clients(setup.store, names, grants)]
    contexts = [setup.client, *(ctx for ctx in added if ctx is not None)]
    assert len(contexts) == CONCURRENCY
    return contexts


def _pooled(
    clients: list[aiocoap.Context], uri: str, body: bytes, expected: aiocoap.numbers.codes.Code
) -> Callable[[], Awaitable[bytes]]:
    """POST ``body`` to ``uri`` from a client of ``clients`` that has no request under way.

    aiocoap's client keeps one confirmable exchange per server at a time (NSTART = 1,
    RFC 7252 §4.7), so the requests in flight at once are as many as the clients
    sending: with no more callers at once than clients, every caller finds one free.
    """
    free = list(clients)

    async def send() -> bytes:
        client = free.pop()
        try:
            message = aiocoap.Message(
                code=aiocoap.POST, uri=uri, payload=body, content_format=ACE_CBOR
            )
            response = await client.request(message).response
        finally:
            free.append(client)
        if response.code != expected:
            raise RuntimeError(f"{uri}: {response.code} {response.payload!r}")
        answer: bytes = response.payload
        return answer

    return send


def _issue_batched(service: AuthzService, request: TokenRequest) -> Callable[[], Awaitable[object]]:
    """One issuance off the event loop, in a batch with those that meet it, as the
    sites run it."""

    async def run() -> object:
        return await service.issue_token_batched(
            request, now=int(time.time()), random_bytes=os.urandom
        )

    return run


async def _concurrent_issuing(
    runner: Runner,
    sides: list[tuple[str, str, TokenRequest]],
    durable: AuthzService,
    stubbed: AuthzService,
) -> list[Figure]:
    """For each ``(name, baseline name, request)``: tokens per second of the process's CPU
    time with :data:`CONCURRENCY` issuances in flight, ``durable`` against ``stubbed``."""
    figures = []
    for name, baseline_name, request in sides:
        rate = await runner.compare_rates(
            name,
            _issue_batched(durable, request),
            _issue_batched(stubbed, request),
            concurrency=CONCURRENCY,
            waits=True,
        )
        figures.append(Figure.paired(name, rate, TOKENS_PER_SECOND, baseline_name))
    return figures


async def _coap_rates(setup: ProvisionedAs, runner: Runner, tmp: Path) -> Paired:
    """POST /token over OSCORE against POST to a bare aiocoap OSCORE resource, per CPU second.

    :data:`CONCURRENCY` clients, each with its own socket and OSCORE context (at the AS,
    a provisioned client each; at the bare server, a static context each), one request
    in flight each.
    """
    contexts = _coap_clients(setup)
    as_port = free_udp_port()
    site, credentials = build_site(setup.store, setup.config, setup.state_dir)
    bind = HOST
    as_server = await aiocoap.Context.create_server_context(site, bind=(bind, as_port))
    bare_server: aiocoap.Context | None = None
    clients: list[aiocoap.Context] = []
    try:
        for _ in range(CONCURRENCY):
            clients.append(await aiocoap.Context.create_client_context())
        base = f"coap://{bind}:{as_port}"
        for client, context in zip(clients, contexts, strict=True):
            client.client_credentials[f"{base}/*"] = client_security_context(context)
        body = cbor2.dumps(
            {AceParameter.AUDIENCE.value: AUDIENCE, AceParameter.SCOPE.value: AS_SCOPE}
        )
        token = _pooled(clients, f"{base}/token", body, aiocoap.CREATED)
        answers = await asyncio.gather(*(token() for _ in clients))  # each must succeed first
        bare_port = free_udp_port()  # asked for just before its bind: less time to lose it
        bare_credentials = CredentialsMap()
        bare_site = aiocoap.resource.Site()
        bare_site.add_resource(["token"], _Answer(bytes(len(answers[0]))))
        for n, client in enumerate(clients):
            # the server tells its contexts apart by their Recipient IDs: ID2 (RFC 9203 §4.3)
            bare_context, bare_client = bare_oscore_pair(
                tmp / f"bare-{n}", server_id=b"s" + bytes([n])
            )
            bare_credentials[f":client-{n}"] = bare_context
            client.client_credentials[f"coap://{bind}:{bare_port}/*"] = bare_client
        bare_server = await aiocoap.Context.create_server_context(
            OscoreSiteWrapper(bare_site, bare_credentials), bind=(bind, bare_port)
        )
        bare = _pooled(clients, f"coap://{bind}:{bare_port}/token", body, aiocoap.CREATED)
        await asyncio.gather(*(bare() for _ in clients))
        return await runner.compare_rates(
            "as.coap_token_rps", token, bare, concurrency=CONCURRENCY, waits=True
        )
    finally:
        for client in clients:
            await client.shutdown()
        if bare_server is not None:
            await bare_server.shutdown()
        await as_server.shutdown()
        credentials.close()


def _startup_ms(store: SqlAuthzStore, where: Path) -> float:
    """Wall ms to build the AS's CoAP site over ``store`` (state in ``where``), then close it."""
    start = time.perf_counter()
    _site, credentials = build_site(store, as_config(store), where)
    elapsed = (time.perf_counter() - start) * 1000
    credentials.close()
    return elapsed


def _bulk_clients(store: SqlAuthzStore, count: int) -> None:
    """``count`` OSCORE clients (distinct IDs, random keys) in one multi-row INSERT:
    the fixture, not the figure, so it skips what ``add_clients`` checks one by one."""
    now = int(time.time())
    rows = []
    for i in range(count):
        context = OscoreContext(
            master_secret=os.urandom(16),
            sender_id=b"c" + i.to_bytes(4, "big"),
            recipient_id=b"AS",
            master_salt=os.urandom(8),
        )
        rows.append({"client_id": f"client-{i}", "created": now, **oscore_columns(context)})
    with store.engine.begin() as conn:
        conn.execute(insert(clients_table), rows)


def _startup(runner: Runner, tmp: Path) -> list[Figure]:
    """The ``as.startup_*_clients`` figures against a start-up with one client; none in
    ``--quick``."""
    names = FIGURES[-len(STARTUP_CLIENTS) :]
    if runner.quick:
        for name in names:
            runner.skip(name, "a full run only: provisioning the clients takes seconds")
        return []
    figures = []
    stores: list[SqlAuthzStore] = []
    try:
        for name, count in [("as.startup_1_client", 1), *zip(names, STARTUP_CLIENTS, strict=True)]:
            if count > 1:
                runner.on_step(name)
            store = SqlAuthzStore.init(f"sqlite:///{tmp / f'startup-{count}.db'}")
            stores.append(store)
            init_issuer(store, ISSUER)
            add_resource_server(store, "bench-rs", AUDIENCE, [AS_SCOPE])
            _bulk_clients(store, count)
        one = Measurement.exact(_startup_ms(stores[0], tmp / "state-1"))
        for name, store in zip(names, stores[1:], strict=True):
            many = _startup_ms(store, tmp / f"state-{name}")
            figures.append(
                Figure.of(name, Measurement.exact(many), MILLISECONDS, one, "as.startup_1_client")
            )
    except OSError as err:  # e.g. "Too many open files"
        for name in names[len(figures) :]:
            runner.skipped.append(Skipped(name, f"the AS did not start: {err}"))
    finally:
        for store in stores:
            store.close()
    return figures


def run(runner: Runner) -> list[Figure]:
    keys = Keys.generate()
    with provisioned_as() as setup, tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        floor_fn, sign_fn = _floor(keys, Path(tmp))
        key_request = TokenRequest(
            client_id=CLIENT,
            audience=AUDIENCE,
            scope=AS_SCOPE,
            req_cnf=keys.client_pop.public_key(),
        )
        osc_request = TokenRequest(client_id=CLIENT, audience=AUDIENCE, scope=AS_SCOPE)
        no_clock_request = TokenRequest(
            client_id=CLIENT, audience=NO_CLOCK_AUDIENCE, scope=AS_SCOPE
        )
        service = AuthzService(setup.store, setup.config)
        stubbed = AuthzService(_StubbedStore(setup.store), setup.config)
        es256, osc = _issue(service, key_request), _issue(service, osc_request)
        no_clock, osc_stubbed = _issue(service, no_clock_request), _issue(stubbed, osc_request)
        no_clock_stubbed = _issue(stubbed, no_clock_request)
        for issue in (es256, osc, no_clock, osc_stubbed, no_clock_stubbed):
            issue()  # each must succeed before it is timed
        figures = []
        floor = runner.compare("as.floor", floor_fn, sign_fn, waits=True).per_second()
        figures.append(Figure.paired("as.floor", floor, TOKENS_PER_SECOND, "ecdsa_p256.sign"))
        for name, issue in (
            ("as.issue_es256_req_cnf", es256),
            ("as.issue_osc", osc),
            ("as.issue_osc_no_clock", no_clock),
        ):
            issued = runner.compare(name, issue, floor_fn, waits=True).per_second()
            figures.append(Figure.paired(name, issued, TOKENS_PER_SECOND, "as.floor"))
        for name, issue, baseline, baseline_name in (
            ("as.issue_durable_over_stubbed", osc, osc_stubbed, "as.issue_osc_stubbed"),
            (
                "as.issue_no_clock_durable_over_stubbed",
                no_clock,
                no_clock_stubbed,
                "as.issue_osc_no_clock_stubbed",
            ),
        ):
            durable = runner.compare(name, issue, baseline, waits=True).per_second()
            figures.append(Figure.paired(name, durable, TOKENS_PER_SECOND, baseline_name))
        figures += asyncio.run(
            _concurrent_issuing(
                runner,
                [
                    (
                        "as.issue_durable_over_stubbed_concurrent",
                        "as.issue_osc_stubbed_concurrent",
                        osc_request,
                    ),
                    (
                        "as.issue_no_clock_durable_over_stubbed_concurrent",
                        "as.issue_osc_no_clock_stubbed_concurrent",
                        no_clock_request,
                    ),
                ],
                service,
                stubbed,
            )
        )
        rates = asyncio.run(_coap_rates(setup, runner, Path(tmp)))
        gc.collect()  # aiocoap's file-backed context writes its sequence file when collected
        figures.append(
            Figure.paired(
                "as.coap_token_rps", rates, REQUESTS_PER_SECOND, "as.coap_bare_oscore_rps"
            )
        )
        figures += _startup(runner, Path(tmp))
    return figures


GROUP = Group(
    name="as",
    title="the Authorization Server: tokens per second in process and over CoAP+OSCORE",
    figures=FIGURES,
    run=run,
    steps=11,
)

__all__ = [
    "AS_SCOPE",
    "CLIENT",
    "CONCURRENCY",
    "FIGURES",
    "GROUP",
    "NO_CLOCK_AUDIENCE",
    "STARTUP_CLIENTS",
    "ProvisionedAs",
    "client_security_context",
    "provisioned_as",
]
