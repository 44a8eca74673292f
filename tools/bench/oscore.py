"""``keybound bench`` group ``oscore``: protected GETs per second against plain CoAP.

Servers on 127.0.0.1 serve the same ``GET /temp`` (a short payload);
:data:`CLIENTS` aiocoap clients, each with its own OSCORE context and socket,
send to them with :data:`CONCURRENCY` requests in flight in all, everything in
one event loop in this process:

* keybound's Resource Server (:class:`~keybound.coap.resource_server_site.ResourceServerSite`,
  contexts in memory): each client POSTs its own access token (COSE_Encrypt0
  with ``cnf.osc``) to ``/authz-info`` and derives its context (RFC 9203
  §4.3); every GET is then OSCORE-protected and passes the RS's scope check.
* a bare aiocoap OSCORE server: :class:`aiocoap.oscore_sitewrapper.OscoreSiteWrapper`
  with one static context per client, aiocoap's own file-backed context,
  derived the same way.
* a plain aiocoap server, no OSCORE.
* at scale, keybound's RS holding :data:`SCALE_CONTEXTS` contexts (the tokens
  POSTed in process, then one client's over UDP), the clients' GETs going to
  the last ones installed, against the same RS holding the clients' contexts
  only.
* latency at scale: :data:`CROWD` more clients, each with its own context and
  socket, all sending at once (each :data:`CROWD_REQUESTS` GETs one after the
  other) to the RS holding :data:`SCALE_CONTEXTS` contexts, against the same
  clients sending to an RS holding their contexts only; the figure is the 99th
  percentile of the wall-clock latencies of a round.

The client's OSCORE context is the same class for every protected server
(keybound's in-memory context), so the protected rates differ by the server
side only. Each figure is timed with its baseline in paired rounds, the rates
per second of the process's CPU time: ``oscore.rs_protected_get_rps`` against
the bare aiocoap OSCORE server (a ratio below 1: keybound's RS is slower),
``oscore.bare_aiocoap_oscore_rps`` against the plain server and
``oscore.rs_get_rps_10000_contexts`` against the RS with few contexts.
``oscore.rs_p99_200_clients_10000_contexts`` is timed in paired rounds too, on the
wall clock (a latency is what a client waits), against
``oscore.rs_p99_200_clients_200_contexts``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiocoap
import aiocoap.resource
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core import cwt
from keybound.core.authz_info import NONCE_BYTES, AuthzInfoRequest, AuthzInfoResponse
from keybound.core.keys import Key
from keybound.core.oscore_derivation import DerivedContext, derive_context_parameters
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.resource_server import ResourceServer, RsPolicy, scope_tokens
from keybound.core.token import CnfOsc
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    CLIENT_ID,
    HOST,
    SCOPE,
    client_oscore_context,
    free_udp_port,
    sample_token,
)
from keybound.tools.bench.measure import (
    MILLISECONDS,
    REQUESTS_PER_SECOND,
    WALL,
    Figure,
    Group,
    Measurement,
    Paired,
    Runner,
    load_average,
)
from keybound.tools.bench.resource_server import drive, quiet_rs

FIGURES = (
    "oscore.rs_protected_get_rps",
    "oscore.bare_aiocoap_oscore_rps",
    "oscore.rs_get_rps_10000_contexts",
    "oscore.rs_p99_200_clients_10000_contexts",
)
CONCURRENCY = 8
#: Clients, each with its own context; one per request in flight, since an aiocoap
#: client keeps one confirmable exchange per server at a time (NSTART = 1, RFC 7252
#: §4.7), so fewer clients would put fewer than CONCURRENCY requests in flight.
CLIENTS = CONCURRENCY
#: Contexts the RS holds for the scale figure.
SCALE_CONTEXTS = 10_000
PAYLOAD = b"21.50"
#: Clients sending at once for the latency figure, and the GETs each sends per round.
CROWD = 200
CROWD_REQUESTS = 2
#: The percentile of a round's latencies the latency figure reports.
PERCENTILE = 99
#: The RS's Recipient ID for the bare server (the RS picks its own).
BARE_SERVER_ID = b"\x00"


class Temperature(aiocoap.resource.Resource):  # type: ignore[misc]
    """``GET /temp``: a short reading."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=PAYLOAD)


def temperature_site() -> aiocoap.resource.Site:
    site = aiocoap.resource.Site()
    site.add_resource(["temp"], Temperature())
    return site


def resource_server(
    token_keys: tuple[Key, ...],
    *,
    as_public_keys: tuple[Key, ...] = (),
    audience: str = AUDIENCE,
    scope: str = SCOPE,
    capacity: int = 1000,
) -> ResourceServerSite:
    """keybound's RS site, contexts in memory, serving ``GET /temp`` to ``scope``."""
    policy = RsPolicy(
        audience=audience,
        as_uri=f"coap://{HOST}/token",
        token_keys=token_keys,
        as_public_keys=as_public_keys,
        resources=scope_tokens({}),
        capacity=capacity,
    )
    site = ResourceServerSite(ResourceServer(policy))
    site.add_protected("/temp", Temperature(), scopes={"GET": [scope]})
    return site


def bare_server_context(derived: DerivedContext, where: Path) -> FilesystemSecurityContext:
    """aiocoap's own server context for ``derived`` (the RS's side), in ``where``."""
    where.mkdir(parents=True)
    settings = {
        "secret_hex": derived.master_secret.hex(),
        "salt_hex": derived.master_salt.hex(),
        "sender-id_hex": derived.sender_id.hex(),
        "recipient-id_hex": derived.recipient_id.hex(),
    }
    if derived.id_context is not None:
        settings["id-context_hex"] = derived.id_context.hex()
    (where / "settings.json").write_text(json.dumps(settings))
    return FilesystemSecurityContext(str(where))


def bare_oscore_pair(
    where: Path, client_id: bytes = CLIENT_ID, server_id: bytes = BARE_SERVER_ID
) -> tuple[FilesystemSecurityContext, DurableSecurityContext]:
    """A bare aiocoap server context in ``where`` and the client's side of it.

    Both come from fresh OSCORE input material through the RFC 9203 §4.3
    derivation, as a context set up by ``/authz-info`` would.
    """
    material = OscoreInputMaterial(id=os.urandom(3), ms=os.urandom(16))
    n1, n2 = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    server = bare_server_context(
        derive_context_parameters(material, n1, n2, client_id, server_id, role="rs"), where
    )
    client = client_oscore_context(
        derive_context_parameters(material, n1, n2, client_id, server_id)
    )
    return server, client


async def establish(
    client: aiocoap.Context, port: int, token: bytes, material: OscoreInputMaterial
) -> DerivedContext:
    """POST the token to ``/authz-info``; the client's derived parameters (RFC 9203 §4.3)."""
    nonce1 = os.urandom(NONCE_BYTES)
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"coap://{HOST}:{port}/authz-info",
        payload=AuthzInfoRequest(token, nonce1, CLIENT_ID).encode(),
        content_format=19,
    )
    response = await client.request(request).response
    if response.code != aiocoap.CREATED:
        raise RuntimeError(f"/authz-info: {response.code} {response.payload!r}")
    answer = AuthzInfoResponse.decode(response.payload)
    return derive_context_parameters(
        material,
        nonce1,
        answer.nonce2,
        CLIENT_ID,
        answer.server_recipient_id,
        role="client",
    )


def _get(clients: list[aiocoap.Context], port: int) -> Callable[[], Awaitable[None]]:
    """A GET /temp from the next of ``clients`` in turn."""
    uri = f"coap://{HOST}:{port}/temp"
    turn = itertools.cycle(clients)

    async def send() -> None:
        client = next(turn)
        response = await client.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
        if response.code != aiocoap.CONTENT or response.payload != PAYLOAD:
            raise RuntimeError(f"{uri}: {response.code} {response.payload!r}")

    return send


def _token(token_key: Key) -> tuple[bytes, OscoreInputMaterial]:
    """A fresh access token (its own ``cti`` and input material) for the RS, and the material."""
    material = OscoreInputMaterial(id=os.urandom(6), ms=os.urandom(16))
    token = dataclasses.replace(
        sample_token(CnfOsc(material), now=int(time.time())), cti=os.urandom(16)
    )
    return cwt.encode(token, cwt.Encrypt0(token_key), random_bytes=os.urandom), material


def _fill(rs: ResourceServerSite, token_key: Key, count: int) -> None:
    """Install ``count`` contexts in ``rs``, each POSTed to ``/authz-info`` in process."""
    with quiet_rs():
        for _ in range(count):
            raw, _material = _token(token_key)
            payload = AuthzInfoRequest(raw, os.urandom(NONCE_BYTES), CLIENT_ID).encode()
            response = drive(rs.post_token(payload, "bench"))
            if response.code != aiocoap.CREATED:
                raise RuntimeError(f"/authz-info: {response.code} {response.payload!r}")


async def _connect(clients: list[aiocoap.Context], rs_port: int, token_key: Key) -> None:
    """Each client POSTs its own token to the RS at ``rs_port`` and uses the context."""
    for client in clients:
        raw, material = _token(token_key)
        derived = await establish(client, rs_port, raw, material)
        client.client_credentials[f"coap://{HOST}:{rs_port}/*"] = client_oscore_context(derived)


def _percentile(latencies: list[float]) -> float:
    """The :data:`PERCENTILE` th percentile of ``latencies`` (exclusive method)."""
    return statistics.quantiles(latencies, n=100)[PERCENTILE - 1]


async def _crowd_round(clients: Sequence[aiocoap.Context], uri: str) -> float:
    """Every client sends :data:`CROWD_REQUESTS` GETs to ``uri``, all clients at once;
    the percentile of the latencies, in ms of wall time."""
    latencies: list[float] = []

    async def one(client: aiocoap.Context) -> None:
        for _ in range(CROWD_REQUESTS):
            start = time.perf_counter_ns()
            response = await client.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
            latencies.append((time.perf_counter_ns() - start) / 1e6)
            if response.code != aiocoap.CONTENT or response.payload != PAYLOAD:
                raise RuntimeError(f"{uri}: {response.code} {response.payload!r}")

    await asyncio.gather(*(one(client) for client in clients))
    return _percentile(latencies)


async def compare_latency(
    clients: Sequence[aiocoap.Context], uri: str, baseline_uri: str, *, rounds: int
) -> Paired:
    """The latency percentile of ``clients`` at ``uri`` against ``baseline_uri``, paired.

    One round of each warms up; then each round runs one crowd round on each side,
    the order turning round by round; the same-round ratios are of the percentiles.
    """
    for where in (uri, baseline_uri):
        await _crowd_round(clients, where)
    sides: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            sides[side].append(await _crowd_round(clients, (uri, baseline_uri)[side]))
    return Paired(
        Measurement.of_samples(sides[0]),
        Measurement.of_samples(sides[1]),
        tuple(a / b for a, b in zip(sides[0], sides[1], strict=True)),
        WALL,
        None,
    )


async def _crowd(runner: Runner, token_key: Key, crowded: ResourceServerSite, port: int) -> Paired:
    """:data:`CROWD` clients, each with a context on ``crowded`` (already holding
    :data:`SCALE_CONTEXTS` contexts) and on an RS holding theirs only, paired."""
    few = resource_server((token_key,), capacity=CROWD)
    few_port = free_udp_port()
    await few.serve((HOST, few_port))
    crowd = [await aiocoap.Context.create_client_context() for _ in range(CROWD)]
    try:
        await _connect(crowd, few_port, token_key)
        await _connect(crowd, port, token_key)
        runner.on_step("oscore.rs_p99_200_clients_10000_contexts")
        pair = await compare_latency(
            crowd,
            f"coap://{HOST}:{port}/temp",
            f"coap://{HOST}:{few_port}/temp",
            rounds=runner.timer.rounds,
        )
    finally:
        for client in crowd:
            await client.shutdown()
        await few.shutdown()
    load = load_average()
    return pair if load is None else dataclasses.replace(pair, load=load[0])


async def _rates(runner: Runner, tmp: Path) -> dict[str, Paired]:
    token_key = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"rs1")
    rs = resource_server((token_key,))
    crowded = resource_server((token_key,), capacity=SCALE_CONTEXTS + CLIENTS + CROWD)
    ports = {name: free_udp_port() for name in ("rs", "crowded", "bare", "plain")}
    bare_credentials = CredentialsMap()
    pairs = [
        bare_oscore_pair(tmp / f"bare{i}", server_id=bytes([0x10 + i])) for i in range(CLIENTS)
    ]
    for i, (server_context, _client_context) in enumerate(pairs):
        bare_credentials[f":client{i}"] = server_context
    del server_context
    servers = [
        await rs.serve((HOST, ports["rs"])),
        await crowded.serve((HOST, ports["crowded"])),
        await aiocoap.Context.create_server_context(
            OscoreSiteWrapper(temperature_site(), bare_credentials),
            bind=(HOST, ports["bare"]),
            transports=["udp6"],
        ),
        await aiocoap.Context.create_server_context(
            temperature_site(), bind=(HOST, ports["plain"]), transports=["udp6"]
        ),
    ]
    clients = [await aiocoap.Context.create_client_context() for _ in range(CLIENTS)]
    try:
        runner.on_step("oscore.contexts")
        _fill(crowded, token_key, SCALE_CONTEXTS - CLIENTS)
        await _connect(clients, ports["rs"], token_key)
        await _connect(clients, ports["crowded"], token_key)  # the last contexts installed
        for client, (_server_context, client_context) in zip(clients, pairs, strict=True):
            client.client_credentials[f"coap://{HOST}:{ports['bare']}/*"] = client_context
        protected, crowded_get, bare, plain = (
            _get(clients, ports[name]) for name in ("rs", "crowded", "bare", "plain")
        )
        for op in (protected, crowded_get, bare, plain):
            for _ in clients:
                await op()  # every request must succeed before it is timed
        return {
            "oscore.rs_protected_get_rps": await runner.compare_rates(
                "oscore.rs_protected_get_rps", protected, bare, concurrency=CONCURRENCY
            ),
            "oscore.bare_aiocoap_oscore_rps": await runner.compare_rates(
                "oscore.bare_aiocoap_oscore_rps", bare, plain, concurrency=CONCURRENCY
            ),
            "oscore.rs_get_rps_10000_contexts": await runner.compare_rates(
                "oscore.rs_get_rps_10000_contexts", crowded_get, protected, concurrency=CONCURRENCY
            ),
            "oscore.rs_p99_200_clients_10000_contexts": await _crowd(
                runner, token_key, crowded, ports["crowded"]
            ),
        }
    finally:
        for client in clients:
            await client.shutdown()
        await rs.shutdown()
        await crowded.shutdown()
        for server in servers[2:]:
            await server.shutdown()


BASELINES = {
    "oscore.rs_protected_get_rps": "oscore.bare_aiocoap_oscore_rps",
    "oscore.bare_aiocoap_oscore_rps": "oscore.plain_get_rps",
    "oscore.rs_get_rps_10000_contexts": "oscore.rs_get_rps_few_contexts",
    "oscore.rs_p99_200_clients_10000_contexts": "oscore.rs_p99_200_clients_200_contexts",
}
UNITS = dict.fromkeys(BASELINES, REQUESTS_PER_SECOND) | {
    "oscore.rs_p99_200_clients_10000_contexts": MILLISECONDS
}


def run(runner: Runner) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        rates = asyncio.run(_rates(runner, Path(tmp)))
        gc.collect()  # aiocoap's file-backed context writes its sequence file when collected
    return [Figure.paired(name, rates[name], UNITS[name], BASELINES[name]) for name in FIGURES]


GROUP = Group(
    name="oscore",
    title="OSCORE GETs: keybound's RS, bare aiocoap OSCORE, plain CoAP; 10,000 contexts",
    figures=FIGURES,
    run=run,
    steps=5,
)

__all__ = [
    "BASELINES",
    "CLIENTS",
    "CONCURRENCY",
    "CROWD",
    "CROWD_REQUESTS",
    "FIGURES",
    "GROUP",
    "SCALE_CONTEXTS",
    "Temperature",
    "bare_oscore_pair",
    "bare_server_context",
    "compare_latency",
    "establish",
    "resource_server",
    "temperature_site",
]
