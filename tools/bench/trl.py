"""``keybound bench`` group ``trl``: token revocation lists (RFC 9770), sizes and times.

* ``trl.revoke_to_refusal_ms``: on loopback, an AS (``RunningServer`` over CoAP on
  its SQLite database), an RS site observing the AS's TRL (:class:`TrlWatcher`) and
  a client reading ``/temp`` over OSCORE in a loop, all in this process over UDP;
  the client's token is revoked in the AS database (what ``keybound as revoke``
  does) and the time to the client's first refused request is taken (wall clock;
  the client then starts over with a new token, which the next round revokes).
  The baseline, ``trl.revoke_to_purge_ms``, is the time to the RS's removal of the
  token in the same rounds: the difference is the client's next request.
* ``trl.full_N_bytes`` for N = 1, 10, 100 and 1000 revoked tokens: the payload of a
  full query (§7.1, with the "Cursor" extension) as the AS answers it, against the
  N token hashes (SHA-256, RFC 6920 binary: 33 bytes each) concatenated.
* ``trl.diff_1_bytes``: the Observe notification of one revocation (a diff query
  answer with one entry, §7.2), against the full query of that one hash;
  ``trl.diff_batch_bytes``: a diff answer of MAX_DIFF_BATCH entries of one hash each
  (what a requester catching up gets per exchange), against the full query of them.
* ``trl.purge_1_of_1000_us``: the RS's lookup of the stored tokens a TRL update lists
  (one hash, 1,000 tokens stored, found through the store's hash index), against
  ``trl.purge_scan_1000_us``, hashing every stored token to find it (as the RS did
  before the index).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiocoap

from keybound.coap.client import CoapAceClient, Endpoints, client_context
from keybound.coap.trl_watcher import TrlWatcher, watching
from keybound.core import cwt, trl
from keybound.core.authz_info import NONCE_BYTES
from keybound.core.client_flow import AceClient
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.resource_server import ResourceServer, RsPolicy, scope_tokens
from keybound.core.token import CnfOsc
from keybound.core.token_store import ContextParameters, StoredToken, TokenStore
from keybound.tools.authz_server import provision as as_provision
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    CLIENT_ID,
    HOST,
    ISSUER,
    SCOPE,
    Keys,
    free_udp_port,
    sample_token,
)
from keybound.tools.bench.measure import (
    MICROSECONDS,
    MILLISECONDS,
    Figure,
    Group,
    Measurement,
    Runner,
    size_figure,
)
from keybound.tools.bundles import DeviceBundle, device_bundle, rs_bundle, write_bundle
from keybound.tools.resource_server.daemon import attach_trl_watcher, build_site, load_config

LISTED = (1, 10, 100, 1000)
STORED = 1000
#: revocations timed: quick, full
ROUNDS = (3, 9)
#: the longest one round waits for the RS to act, in seconds
WAIT = 20.0

FIGURES = (
    "trl.revoke_to_refusal_ms",
    *(f"trl.full_{n}_bytes" for n in LISTED),
    "trl.diff_1_bytes",
    "trl.diff_batch_bytes",
    "trl.purge_1_of_1000_us",
)


# ---- sizes ---------------------------------------------------------------------------------


def _hashes(count: int) -> list[bytes]:
    return [trl.response_token_hash(os.urandom(120)) for _ in range(count)]


def _collection(items: int, limits: trl.TrlLimits) -> trl.UpdateCollection:
    collection = trl.UpdateCollection()
    for h in _hashes(items):
        collection = collection.add((), (h,), limits)
    return collection


def size_figures() -> list[Figure]:
    """The full and diff answers' payloads, as :func:`keybound.core.trl.answer` gives them."""
    limits = trl.TrlLimits()
    figures = []
    for n in LISTED:
        hashes = _hashes(n)
        full = trl.full_query(hashes, _collection(1, limits))
        figures.append(
            size_figure(f"trl.full_{n}_bytes", full, b"".join(hashes), f"trl.hashes_{n}_bytes")
        )
    one = _collection(1, limits)
    (listed,) = one.items[0].added
    diff_1 = trl.answer(["diff=1"], lambda: [listed], one, limits)
    full_1 = trl.full_query([listed], one)
    figures.append(size_figure("trl.diff_1_bytes", diff_1, full_1, "trl.full_of_it_bytes"))
    batch = _collection(limits.max_diff_batch, limits)
    in_batch = [h for item in batch.items for h in item.added]
    diff_batch = trl.answer(["diff=0"], lambda: in_batch, batch, limits)
    figures.append(
        size_figure(
            "trl.diff_batch_bytes",
            diff_batch,
            trl.full_query(in_batch, batch),
            "trl.full_of_them_bytes",
        )
    )
    return figures


# ---- the RS's purge lookup -----------------------------------------------------------------


def _filled_store(keys: Keys) -> tuple[TokenStore, bytes]:
    """A token store of ``STORED`` tokens and the hash of one of them."""
    rs = ResourceServer(
        RsPolicy(
            audience=AUDIENCE,
            as_uri="coap://as.example/token",
            token_keys=(keys.as_rs,),
            issuer=ISSUER,
            resources=scope_tokens({"/temp": {"GET": [SCOPE]}}),
            capacity=STORED,
        )
    )
    now = int(time.time())
    wanted = b""
    for n in range(STORED):
        material = OscoreInputMaterial(id=n.to_bytes(2, "big"), ms=os.urandom(16))
        token = dataclasses.replace(sample_token(CnfOsc(material), now=now), cti=os.urandom(16))
        raw = cwt.encode(token, cwt.Encrypt0(keys.as_rs), random_bytes=os.urandom)
        verified = rs.verify(raw, now=now, monotonic=0.0)
        context = ContextParameters(
            os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES), CLIENT_ID, n.to_bytes(2, "big")
        )
        rs.store.put(StoredToken(verified, context))
        wanted = trl.response_token_hash(raw)
    return rs.store, wanted


def purge_figure(runner: Runner, keys: Keys) -> Figure:
    store, wanted = _filled_store(keys)
    listed = frozenset({wanted})

    def indexed() -> object:
        return store.key_ids_of(listed)

    def scan() -> object:
        return [e.key_id for e in store if trl.response_token_hash(e.verified.raw) in listed]

    if indexed() != scan() or len(store.key_ids_of(listed)) != 1:
        raise RuntimeError("the hash index and the scan disagree")
    pair = runner.compare("trl.purge_1_of_1000_us", indexed, scan)
    return Figure.paired("trl.purge_1_of_1000_us", pair, MICROSECONDS, "trl.purge_scan_1000_us")


# ---- revocation to refusal ----------------------------------------------------------------


def _provision(workdir: Path, as_port: int, rs_port: int) -> tuple[Path, Path]:
    store = SqlAuthzStore.init(f"sqlite:///{workdir / 'as.db'}")
    try:
        as_base, rs_uri = f"coap://{HOST}:{as_port}", f"coap://{HOST}:{rs_port}"
        issuer = as_provision.init_issuer(store, as_base)
        rs = as_provision.add_resource_server(store, "bench-rs", rs_uri, [SCOPE])
        (device,) = as_provision.add_clients(store, ["bench-1"], {rs_uri: [SCOPE]})
        write_bundle(workdir / "rs-bundle.json", rs_bundle(rs, issuer, as_base=as_base))
        bundle = device_bundle(
            "bench-1", as_base=as_base, rs_uri=rs_uri, audience=rs_uri, scope=SCOPE,
            oscore=device.oscore,
        )  # fmt: skip
        write_bundle(workdir / "bench-1.json", bundle)
    finally:
        store.close()
    (workdir / "rs.toml").write_text(
        f'bundle = "rs-bundle.json"\nlisten = "{HOST}:{rs_port}"\nstate = "rs-state.db"\n'
        f'[trl]\nmode = "observe"\n[resources."/temp"]\nGET = ["{SCOPE}"]\n'
    )
    return workdir / "rs.toml", workdir / "bench-1.json"


def _free_port() -> int:
    """A port free for both UDP and TCP (aiocoap's server binds both)."""
    for _ in range(100):
        port = free_udp_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((HOST, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free for both UDP and TCP")


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT):
        while not check():
            await asyncio.sleep(0.001)


async def _one_round(
    client: CoapAceClient, store: SqlAuthzStore, watcher: TrlWatcher
) -> tuple[float, float]:
    """(revocation to purge, revocation to refusal) of the client's current token, in ms."""
    reply = await client.request("GET", "temp")
    if not reply.success:
        raise RuntimeError(f"the client was refused before the revocation: {reply}")
    if client.flow.grant is None:
        raise RuntimeError("the client holds no token")
    current = store.get_token_by_hash(trl.response_token_hash(client.flow.grant.access_token))
    if current is None:
        raise RuntimeError("the AS has no record of the client's token")
    purged = watcher.purged
    seen = len(client.exchanges)
    started = time.perf_counter()
    await asyncio.to_thread(store.revoke, current.cti)
    purge_ms: float | None = None
    refusal_ms: float | None = None
    async with asyncio.timeout(WAIT):
        while refusal_ms is None:
            if purge_ms is None and watcher.purged > purged:
                purge_ms = (time.perf_counter() - started) * 1e3
            await client.request("GET", "temp")
            for send, answer in client.exchanges[seen:]:
                if send.security == "rs" and answer.code == (4, 1):
                    refusal_ms = (time.perf_counter() - started) * 1e3
                    break
            seen = len(client.exchanges)
    if purge_ms is None:  # the purge came within the refused request's exchange
        purge_ms = refusal_ms
    return purge_ms, refusal_ms


async def _revocations(workdir: Path, rounds: int) -> tuple[list[float], list[float]]:
    as_port, rs_port = _free_port(), _free_port()
    rs_toml, device_path = _provision(workdir, as_port, rs_port)
    config = load_config(rs_toml)
    store = SqlAuthzStore.open(f"sqlite:///{workdir / 'as.db'}")
    authz = RunningServer(store, coap=(HOST, as_port), state_dir=workdir / "as-state")
    await authz.start()
    site = build_site(config)
    await site.serve((HOST, rs_port))
    watcher = attach_trl_watcher(site, config)
    if watcher is None:
        raise RuntimeError("the bench RS does not follow the TRL")
    coap = await aiocoap.Context.create_client_context()
    purges: list[float] = []
    refusals: list[float] = []
    try:
        async with watching(watcher):
            device = DeviceBundle.read(device_path)
            client = CoapAceClient(
                coap,
                AceClient(audience=device.audience, scope=device.scope, random_bytes=os.urandom),
                Endpoints(device.as_uri, f"coap://{HOST}:{rs_port}"),
                client_context(device.as_context),
                on_step=lambda _line: None,
            )
            await client.request("GET", "temp")
            await _until(lambda: watcher.observing)
            for _ in range(rounds):
                purge_ms, refusal_ms = await _one_round(client, store, watcher)
                purges.append(purge_ms)
                refusals.append(refusal_ms)
    finally:
        await coap.shutdown()
        await site.shutdown()
        await authz.stop()
        store.close()
    return purges, refusals


def refusal_figure(runner: Runner) -> Figure:
    runner.on_step("trl.revoke_to_refusal_ms")
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as directory:
        purges, refusals = asyncio.run(
            _revocations(Path(directory), ROUNDS[0] if runner.quick else ROUNDS[1])
        )
    return Figure.of(
        "trl.revoke_to_refusal_ms",
        Measurement.of_samples(refusals),
        MILLISECONDS,
        Measurement.of_samples(purges),
        "trl.revoke_to_purge_ms",
    )


def run(runner: Runner) -> list[Figure]:
    keys = Keys.generate()
    figures = [refusal_figure(runner)]
    runner.on_step("trl sizes")
    figures.extend(size_figures())
    figures.append(purge_figure(runner, keys))
    return figures


GROUP = Group(
    name="trl",
    title="Token revocation lists (RFC 9770): revocation to refusal, list sizes, RS purge",
    figures=FIGURES,
    run=run,
    steps=3,
)

__all__ = ["FIGURES", "GROUP", "purge_figure", "refusal_figure", "run", "size_figures"]
