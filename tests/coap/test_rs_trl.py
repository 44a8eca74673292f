"""An RS that follows the AS's token revocation list (RFC 9770) over CoAP and OSCORE:
a revoked token stops working at once, without introspection, and stays refused."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import aiocoap
import pytest

from keybound.coap.authz_service import AuthzService
from keybound.coap.client import CoapAceClient, Endpoints, client_context
from keybound.coap.trl_watcher import watching
from keybound.core import trl
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.authz_server import TokenRequest
from keybound.core.client_flow import AceClient
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import DeviceBundle
from keybound.tools.demo import provision
from keybound.tools.resource_server.daemon import attach_trl_watcher, build_site, load_config
from tests.helpers.ports import free_udp_port
from tests.helpers.rs import run

WAIT = 20.0  # the longest the test waits for the RS to act (never a sleep to wait)


async def _scenario(workdir: Path, trl_table: str = 'mode = "observe"') -> dict[str, object]:
    as_port, rs_port = free_udp_port(), free_udp_port()
    rs_toml, device_path = provision(workdir, as_port, rs_port)
    rs_toml.write_text(rs_toml.read_text() + f"[trl]\n{trl_table}\n")
    config = load_config(rs_toml)
    poll = config.trl_interval if config.trl == "poll" else None
    store = SqlAuthzStore.open(f"sqlite:///{workdir / 'as.db'}")
    authz = RunningServer(store, coap=("127.0.0.1", as_port), state_dir=workdir / "as-state")
    await authz.start()
    site = build_site(config)
    await site.serve(("127.0.0.1", rs_port))
    watcher = attach_trl_watcher(site, config)
    assert watcher is not None
    coap = await aiocoap.Context.create_client_context()
    seen: dict[str, object] = {}
    try:
        async with watching(watcher, poll=poll):
            device = DeviceBundle.read(device_path)
            client = CoapAceClient(
                coap,
                AceClient(audience=device.audience, scope=device.scope, random_bytes=os.urandom),
                Endpoints(device.as_uri, f"coap://127.0.0.1:{rs_port}"),
                client_context(device.as_context),
            )
            seen["first"] = str(await client.request("GET", "temp"))
            assert client.flow.grant is not None
            token = client.flow.grant.access_token
            async with asyncio.timeout(WAIT):
                while watcher.updates < 2:  # caught up, and the observation answered
                    await asyncio.sleep(0.01)
            assert len(site.rs.store) == 1
            (issued,) = store.list_tokens("sensor-1")
            started = time.monotonic()
            store.revoke(issued.cti)  # as `keybound as revoke` in another process would
            async with asyncio.timeout(WAIT):
                while len(site.rs.store):
                    await asyncio.sleep(0.005)
            seen["revoke_to_purge_s"] = time.monotonic() - started
            seen["known"] = trl.response_token_hash(token) in watcher.known
            post = AuthzInfoRequest(token, os.urandom(8), b"\x33").encode()
            again = aiocoap.Message(
                code=aiocoap.POST, uri=f"coap://127.0.0.1:{rs_port}/authz-info", payload=post,
                content_format=19,
            )  # fmt: skip
            seen["repost"] = str((await coap.request(again).response).code).split()[0]
            seen["after"] = str(await client.request("GET", "temp"))  # starts over: new token
            seen["tokens"] = len(store.list_tokens("sensor-1"))
            if poll is not None:  # the next polls ask from the cursor the revocation gave
                async with asyncio.timeout(WAIT):
                    while watcher.diff_queries < 2:
                        await asyncio.sleep(0.01)
            seen["queries"] = (watcher.full_queries, watcher.diff_queries)
        saved = config.state.with_name(config.state.name + ".trl.json")
        seen["saved"] = saved.exists() and saved.stat().st_mode & 0o077 == 0
    finally:
        await coap.shutdown()
        await site.shutdown()
        await authz.stop()
        store.close()
    return seen


def test_a_revoked_token_stops_working_at_once_and_stays_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="keybound")
    seen = run(_scenario(tmp_path), 90)
    # Followed by observation, each query under the RS's OSCORE context: never refused.
    trl_log = [r for r in caplog.records if r.name == "keybound.rs.trl"]
    assert [r.getMessage() for r in trl_log if r.levelno >= logging.WARNING] == []
    observing = "observing the token revocation list (cursor None)"
    assert [r.getMessage() for r in trl_log] == [observing]
    notified = [r for r in caplog.records if "TRL version" in r.getMessage()]
    assert notified, "the AS notified no observer"
    assert str(seen["first"]).startswith("2.05"), seen
    assert seen["known"] is True
    assert seen["repost"] == "4.01"  # its hash is known: refused at /authz-info
    assert str(seen["after"]).startswith("2.05"), seen  # the client started over
    assert seen["tokens"] == 2
    assert seen["saved"] is True
    print(f"revocation to purge: {seen['revoke_to_purge_s']:.3f} s")


def test_an_rs_that_polls_with_diff_queries_purges_a_revoked_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``[trl] mode = "poll"``: no observation, a diff query from the cursor each interval."""
    caplog.set_level("INFO", logger="keybound")
    seen = run(_scenario(tmp_path, 'mode = "poll"\ninterval = 0.1'), 90)
    assert not [r for r in caplog.records if "TRL version" in r.getMessage()]  # no observer
    assert [r.getMessage() for r in caplog.records if r.name == "keybound.rs.trl"] == []  # polls
    full, diff = seen["queries"]  # type: ignore[misc]
    assert full >= 1  # while the RS has no cursor (nothing listed for it yet)
    assert diff >= 2  # from the first revocation on, diff queries from the cursor
    assert seen["known"] is True
    assert seen["repost"] == "4.01"
    assert str(seen["after"]).startswith("2.05"), seen
    assert seen["tokens"] == 2
    print(f"revocation to purge (polling every 0.1 s): {seen['revoke_to_purge_s']:.3f} s")


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ('mode = "sometimes"', "trl.mode must be off, observe or poll"),
        ('mode = "poll"\ninterval = 0.01', "trl.interval must be 0.1 to 3600 seconds"),
        ('mode = "poll"\ninterval = "5"', "trl.interval must be 0.1 to 3600 seconds"),
        ('mode = "poll"\nintervall = 5', "did you mean 'interval'"),
    ],
)
def test_a_wrong_trl_table_is_refused(tmp_path: Path, table: str, says: str) -> None:
    from keybound.tools.resource_server.daemon import ConfigError

    rs_toml, _device = provision(tmp_path, free_udp_port(), free_udp_port())
    rs_toml.write_text(rs_toml.read_text() + f"[trl]\n{table}\n")
    with pytest.raises(ConfigError, match=says):
        load_config(rs_toml)


async def _offline_scenario(workdir: Path) -> dict[str, object]:
    """Four tokens at the RS, one revoked while it is online; the AS goes away, the
    other three are revoked, it comes back."""
    as_port, rs_port = free_udp_port(), free_udp_port()
    rs_toml, _device = provision(workdir, as_port, rs_port)
    rs_toml.write_text(rs_toml.read_text() + '[trl]\nmode = "observe"\n')
    config = load_config(rs_toml)
    store = SqlAuthzStore.open(f"sqlite:///{workdir / 'as.db'}")

    def start_as() -> RunningServer:
        return RunningServer(store, coap=("127.0.0.1", as_port), state_dir=workdir / "as-state")

    authz = start_as()
    await authz.start()
    site = build_site(config)
    await site.serve(("127.0.0.1", rs_port))
    watcher = attach_trl_watcher(site, config)
    assert watcher is not None
    watcher.reregister = 0.5  # an AS that restarted is noticed within half a second
    service = AuthzService(store, as_config(store))
    coap = await aiocoap.Context.create_client_context()
    seen: dict[str, object] = {}
    try:
        async with watching(watcher):
            for n in range(4):
                issued = service.issue_token(
                    TokenRequest(client_id="sensor-1", audience=config.bundle.audience),
                    now=int(time.time()),
                    random_bytes=os.urandom,
                )
                post = AuthzInfoRequest(issued.access_token, os.urandom(8), bytes([n])).encode()
                message = aiocoap.Message(
                    code=aiocoap.POST,
                    uri=f"coap://127.0.0.1:{rs_port}/authz-info",
                    payload=post,
                    content_format=19,
                )
                answer = await coap.request(message).response
                assert str(answer.code).startswith("2.01"), answer
            assert len(site.rs.store) == 4
            async with asyncio.timeout(WAIT):
                while watcher.updates < 2:
                    await asyncio.sleep(0.01)
            first, *others = store.list_tokens("sensor-1")
            store.revoke(first.cti)  # while online: the RS gets a cursor
            async with asyncio.timeout(WAIT):
                while len(site.rs.store) != 3:
                    await asyncio.sleep(0.01)
            await authz.stop()  # the RS is offline from the AS from here on
            for record in others:
                store.revoke(record.cti)
            assert len(site.rs.store) == 3  # nothing reaches the RS meanwhile
            before = (watcher.full_queries, watcher.diff_queries)
            authz = start_as()
            await authz.start()
            async with asyncio.timeout(WAIT):
                while len(site.rs.store):
                    await asyncio.sleep(0.01)
            seen["full"] = watcher.full_queries - before[0]
            seen["diff"] = watcher.diff_queries - before[1]
            seen["known"] = len(watcher.known)
    finally:
        await coap.shutdown()
        await site.shutdown()
        await authz.stop()
        store.close()
    return seen


def test_an_rs_offline_during_three_revocations_catches_up_with_one_diff_query(
    tmp_path: Path,
) -> None:
    seen = run(_offline_scenario(tmp_path), 120)
    assert seen["known"] == 4
    assert seen["full"] == 0  # the cursor was still in the AS's collection
    assert seen["diff"] == 1  # one diff query from it brought all three
