"""The AS's TRL endpoint (RFC 9770) over CoAP and OSCORE against a real aiocoap server:
full and diff queries, errors as Concise Problem Details, each device seeing its own
part only, and Observe notifications when a token is revoked elsewhere and expires."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
from aiocoap import oscore

from keybound.coap.authz_server_site import build_site
from keybound.coap.trl_resource import TrlResource
from keybound.core import trl
from keybound.core.authz_store import IssuedToken
from keybound.core.numbers.trl import (
    CONTENT_FORMAT_ACE_TRL_CBOR,
    CONTENT_FORMAT_CONCISE_PROBLEM_DETAILS,
    ProblemDetail,
    TrlParameter,
)
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import client_context_dir, provision
from tests.helpers.ports import free_port

FULL, DIFF, CURSOR, MORE = (int(p) for p in TrlParameter)
#: how long a test waits for a notification before it fails (never a sleep to wait)
NOTIFY_TIMEOUT = 20.0


def _use(client: aiocoap.Context, base: str, oscore_json: dict[str, Any], where: Path) -> None:
    ctx = oscore.FilesystemSecurityContext(str(client_context_dir(oscore_json, where)))
    client.client_credentials[f"{base}/*"] = ctx


async def _get(client: aiocoap.Context, uri: str) -> aiocoap.Message:
    return await client.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response


async def _token(client: aiocoap.Context, base: str, audience: str) -> bytes:
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"{base}/token",
        payload=cbor2.dumps({5: audience}),
        content_format=19,
    )
    response = await client.request(request).response
    assert response.code == aiocoap.CREATED, response.payload
    token = cbor2.loads(response.payload)[1]
    assert isinstance(token, bytes)
    return token


def _run(
    url: str, tmp_path: Path, scenario: Any, *, clock: Any = None, max_observers: int | None = None
) -> None:
    setup = provision(url)
    store: SqlAuthzStore = setup["store"]
    port = free_port()
    base = f"coap://127.0.0.1:{port}"

    async def main() -> None:
        options: dict[str, Any] = {} if clock is None else {"clock": clock}
        if max_observers is not None:
            options["max_observers"] = max_observers
        resource = TrlResource(store, **options)
        site, credentials = build_site(store, as_config(store), tmp_path / "state", trl=resource)
        server = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        device = await aiocoap.Context.create_client_context()
        rs = await aiocoap.Context.create_client_context()
        _use(device, base, setup["sensor_bundle"]["as_context"], tmp_path / "device")
        _use(rs, base, setup["temp_bundle"]["introspection"]["oscore"], tmp_path / "rs")
        try:
            await scenario(device, rs, base, setup, resource)
        finally:
            await device.shutdown()
            await rs.shutdown()
            await server.shutdown()
            credentials.close()

    try:
        asyncio.run(main())
    finally:
        store.close()


def _cti(store: SqlAuthzStore, client_id: str) -> bytes:
    (newest,) = store.list_tokens(client_id, limit=1)
    return newest.cti


def test_full_and_diff_queries_for_the_client_and_the_rs(db_url: str, tmp_path: Path) -> None:
    async def scenario(device: Any, rs: Any, base: str, s: dict[str, Any], _: Any) -> None:
        token = await _token(device, base, "temp")
        # RFC 9770 §3: the AS issues 61(16([protected, {}, ciphertext])), kid and IV protected
        assert trl.check_cwt_layout(token) == 16
        empty = await _get(device, f"{base}/revoke/trl")
        assert empty.code == aiocoap.CONTENT
        assert empty.opt.content_format == CONTENT_FORMAT_ACE_TRL_CBOR
        assert cbor2.loads(empty.payload) == {FULL: [], CURSOR: None}

        # Revoked by another process on the same database (keybound as revoke).
        with SqlAuthzStore.open(s["store"].url) as other:
            other.revoke(_cti(other, "sensor-1"))
        expected_hash = trl.response_token_hash(token)
        for who in (device, rs):
            full = await _get(who, f"{base}/revoke/trl")
            assert cbor2.loads(full.payload) == {FULL: [expected_hash], CURSOR: 0}
            diff = await _get(who, f"{base}/revoke/trl?diff=0")
            assert cbor2.loads(diff.payload) == {
                DIFF: [[[], [expected_hash]]],
                CURSOR: 0,
                MORE: False,
            }
            resumed = await _get(who, f"{base}/revoke/trl?diff=0&cursor=0")
            assert cbor2.loads(resumed.payload) == {DIFF: [], CURSOR: 0, MORE: False}

    _run(db_url, tmp_path, scenario)


def test_a_device_is_never_shown_other_devices_hashes(db_url: str, tmp_path: Path) -> None:
    async def scenario(device: Any, rs: Any, base: str, s: dict[str, Any], _: Any) -> None:
        await _token(device, base, "door")  # a token for the other RS
        s["store"].revoke(_cti(s["store"], "sensor-1"))
        mine = cbor2.loads((await _get(device, f"{base}/revoke/trl")).payload)
        assert len(mine[FULL]) == 1
        other_rs = cbor2.loads((await _get(rs, f"{base}/revoke/trl")).payload)
        assert other_rs == {FULL: [], CURSOR: None}  # temp-rs: the token was for door-rs

    _run(db_url, tmp_path, scenario)


def test_query_errors_are_concise_problem_details(db_url: str, tmp_path: Path) -> None:
    async def scenario(device: Any, rs: Any, base: str, s: dict[str, Any], _: Any) -> None:
        cases = {
            "diff=-1": {0: 0},
            "cursor=3": {0: 1},
            "diff=1&cursor=x": {0: 0, 1: None},
            "diff=1&cursor=99999999999": {0: 0, 1: None},
        }
        for query, entry in cases.items():
            response = await _get(device, f"{base}/revoke/trl?{query}")
            assert response.code == aiocoap.BAD_REQUEST, query
            assert response.opt.content_format == CONTENT_FORMAT_CONCISE_PROBLEM_DETAILS
            details = cbor2.loads(response.payload)
            assert details[ProblemDetail.ACE_TRL_ERROR] == entry, query
            assert isinstance(details[ProblemDetail.DETAIL], str)
        await _token(device, base, "temp")
        s["store"].revoke(_cti(s["store"], "sensor-1"))
        beyond = await _get(device, f"{base}/revoke/trl?diff=1&cursor=5")
        assert cbor2.loads(beyond.payload)[ProblemDetail.ACE_TRL_ERROR] == {0: 2}

    _run(db_url, tmp_path, scenario)


def test_without_oscore_the_trl_is_refused(db_url: str, tmp_path: Path) -> None:
    async def scenario(device: Any, rs: Any, base: str, s: dict[str, Any], _: Any) -> None:
        plain = await aiocoap.Context.create_client_context()
        try:
            response = await _get(plain, f"{base}/revoke/trl")
            assert response.code == aiocoap.UNAUTHORIZED
        finally:
            await plain.shutdown()

    _run(db_url, tmp_path, scenario)


def test_observers_are_notified_on_revocation_and_expiry(db_url: str, tmp_path: Path) -> None:
    now = [int(time.time())]  # the token is issued in real time; the watcher sees this clock

    async def scenario(
        device: Any, rs: Any, base: str, s: dict[str, Any], resource: TrlResource
    ) -> None:
        store: SqlAuthzStore = s["store"]
        token = await _token(device, base, "temp")
        request = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/revoke/trl?diff=0", observe=0)
        observed = device.request(request)
        first = await observed.response
        assert cbor2.loads(first.payload) == {DIFF: [], CURSOR: None, MORE: False}
        other_request = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/revoke/trl", observe=0)
        other = rs.request(other_request)  # temp-rs observes the full set
        await other.response
        notifications = aiter(observed.observation)
        rs_notifications = aiter(other.observation)
        async with asyncio.timeout(NOTIFY_TIMEOUT):
            while resource.observer_count < 2:  # both registrations seen by the resource
                await asyncio.sleep(0.01)
        await resource.poll()  # the resource's baseline

        store.revoke(_cti(store, "sensor-1"), now=now[0])
        assert await resource.poll() == 2
        async with asyncio.timeout(NOTIFY_TIMEOUT):
            revoked = await anext(notifications)
            rs_revoked = await anext(rs_notifications)
        h = trl.response_token_hash(token)
        assert cbor2.loads(revoked.payload) == {DIFF: [[[], [h]]], CURSOR: 0, MORE: False}
        assert cbor2.loads(rs_revoked.payload) == {FULL: [h], CURSOR: 0}

        # A change of the TRL that touches no observer's part notifies no one.
        version = store.trl_version()
        store.record_token(
            IssuedToken(
                cti=b"elsewhere",
                client_id="web-1",
                audience="door",
                scope="open",
                format="cwt",
                iat=now[0],
                exp=now[0] + 60,
                token_hash=trl.response_token_hash(b"elsewhere"),
            )
        )
        store.revoke(b"elsewhere", now=now[0])
        assert store.trl_version() > version
        assert await resource.poll() == 0

        now[0] += 4000  # past the token's exp: the watcher takes it off the list
        assert await resource.poll() == 2
        async with asyncio.timeout(NOTIFY_TIMEOUT):
            expired = await anext(notifications)
        assert cbor2.loads(expired.payload) == {
            DIFF: [[[h], []], [[], [h]]],  # newest first: it left the list, it was added
            CURSOR: 1,
            MORE: False,
        }
        observed.observation.cancel()
        other.observation.cancel()

    _run(db_url, tmp_path, scenario, clock=lambda: now[0])


def test_past_the_observer_bound_a_get_is_answered_once_without_observe(
    db_url: str, tmp_path: Path
) -> None:
    """The bound on observations (MAX_OBSERVERS, here 1): a further GET with Observe gets
    its answer without the Observe option and is not kept."""

    async def scenario(
        device: Any, rs: Any, base: str, s: dict[str, Any], resource: TrlResource
    ) -> None:
        def observe(client: Any) -> Any:
            message = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/revoke/trl?diff=1", observe=0)
            return client.request(message)

        first = observe(device)
        answered = await first.response
        assert answered.opt.observe is not None
        async with asyncio.timeout(NOTIFY_TIMEOUT):
            while resource.observer_count < 1:
                await asyncio.sleep(0.01)
        refused = observe(rs)
        once = await refused.response
        assert once.code == aiocoap.CONTENT
        assert cbor2.loads(once.payload) == {DIFF: [], CURSOR: None, MORE: False}
        assert once.opt.observe is None  # answered, not observed
        assert resource.observer_count == 1
        first.observation.cancel()

    _run(db_url, tmp_path, scenario, max_observers=1)


def test_a_requesters_third_observation_ends_its_eldest(db_url: str, tmp_path: Path) -> None:
    """The bound per requester (MAX_OBSERVATIONS_PER_REQUESTER, 2): a device that
    registers again, as after a restart, ends its eldest observation with a last
    notification without Observe, so abandoned ones don't fill MAX_OBSERVERS."""

    async def scenario(
        device: Any, rs: Any, base: str, s: dict[str, Any], resource: TrlResource
    ) -> None:
        def observe() -> Any:
            message = aiocoap.Message(code=aiocoap.GET, uri=f"{base}/revoke/trl?diff=1", observe=0)
            return device.request(message)

        requests = []
        for held in (1, 2, 2):
            request = observe()
            answered = await request.response
            assert answered.opt.observe is not None
            requests.append(request)
            async with asyncio.timeout(NOTIFY_TIMEOUT):
                while resource.observer_count != held:
                    await asyncio.sleep(0.01)
        eldest = requests[0].observation
        async with asyncio.timeout(NOTIFY_TIMEOUT):
            last = [m async for m in eldest]  # ends: the final answer had no Observe
        assert all(m.code == aiocoap.CONTENT for m in last)
        assert resource.observer_count == 2
        assert not requests[1].observation.cancelled
        for request in requests[1:]:
            request.observation.cancel()

    _run(db_url, tmp_path, scenario)
