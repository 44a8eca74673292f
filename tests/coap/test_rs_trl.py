"""An RS that follows the AS's token revocation list (RFC 9770) over CoAP and OSCORE:
a revoked token stops working at once, without introspection, and stays refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiocoap
import pytest

from keybound.coap.authz_service import AuthzService
from keybound.coap.client import CoapAceClient, Endpoints, client_context
from keybound.coap.resource_server_site import ResourceServerSite
from keybound.coap.trl_watcher import TrlWatcher, watching
from keybound.core import cbor, trl
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.authz_server import TokenRequest
from keybound.core.authz_store import IssuedToken
from keybound.core.client_flow import AceClient
from keybound.core.errors import KeyboundError
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import DeviceBundle
from keybound.tools.demo import provision
from keybound.tools.resource_server.daemon import (
    RsConfig,
    attach_trl_watcher,
    build_site,
    load_config,
)
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
    full, diff = seen["queries"]
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


async def _post_tokens(
    service: AuthzService, coap: aiocoap.Context, config: RsConfig, rs_port: int, count: int
) -> None:
    """``count`` tokens of sensor-1 issued by the AS and posted to the RS."""
    for n in range(count):
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


@dataclass
class _World:
    """An AS on ``as_port`` (``authz``: the running one), an RS site following its TRL."""

    workdir: Path
    as_port: int
    rs_port: int
    config: RsConfig
    store: SqlAuthzStore
    site: ResourceServerSite
    watcher: TrlWatcher
    service: AuthzService
    coap: aiocoap.Context
    authz: RunningServer = field(init=False)

    def __post_init__(self) -> None:
        self.authz = self.new_as()

    def new_as(self) -> RunningServer:
        return RunningServer(
            self.store, coap=("127.0.0.1", self.as_port), state_dir=self.workdir / "as-state"
        )

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT):
            while not check():
                await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def _world(
    workdir: Path,
    limits: trl.TrlLimits | None = None,
    before: Callable[[SqlAuthzStore, RsConfig], None] | None = None,
) -> AsyncIterator[_World]:
    """An AS and an RS observing its TRL, in this process over UDP, for the block;
    ``before`` changes the AS database before either starts."""
    as_port, rs_port = free_udp_port(), free_udp_port()
    rs_toml, _device = provision(workdir, as_port, rs_port)
    rs_toml.write_text(rs_toml.read_text() + '[trl]\nmode = "observe"\n')
    config = load_config(rs_toml)
    store = SqlAuthzStore.open(f"sqlite:///{workdir / 'as.db'}")
    if limits is not None:
        store.trl_limits = limits
    if before is not None:
        before(store, config)
    site = build_site(config)
    coap = await aiocoap.Context.create_client_context()
    watcher = attach_trl_watcher(site, config)
    assert watcher is not None
    service = AuthzService(store, as_config(store))
    world = _World(workdir, as_port, rs_port, config, store, site, watcher, service, coap)
    try:
        await world.authz.start()
        await site.serve(("127.0.0.1", rs_port))
        async with watching(watcher):
            yield world
    finally:
        await coap.shutdown()
        await site.shutdown()
        await world.authz.stop()
        store.close()


async def _offline_scenario(
    workdir: Path, limits: trl.TrlLimits | None = None
) -> dict[str, object]:
    """Four tokens at the RS, one revoked while it is online; the AS goes away, the
    other three are revoked, it comes back."""
    async with _world(workdir, limits) as w:
        w.watcher.reregister = 0.5  # an AS that restarted is noticed within half a second
        site, store, watcher = w.site, w.store, w.watcher
        await _post_tokens(w.service, w.coap, w.config, w.rs_port, 4)
        assert len(site.rs.store) == 4
        await w.until(lambda: watcher.observing and watcher.updates >= 2)
        first, *others = store.list_tokens("sensor-1")
        store.revoke(first.cti)  # while online: the RS gets a cursor
        await w.until(lambda: len(site.rs.store) == 3)
        await w.authz.stop()  # the RS is offline from the AS from here on
        for record in others:
            store.revoke(record.cti)
        assert len(site.rs.store) == 3  # nothing reaches the RS meanwhile
        before = (watcher.full_queries, watcher.diff_queries)
        w.authz = w.new_as()
        await w.authz.start()
        await w.until(lambda: not len(site.rs.store))
        return {
            "full": watcher.full_queries - before[0],
            "diff": watcher.diff_queries - before[1],
            "known": len(watcher.known),
        }


def test_an_rs_offline_during_three_revocations_catches_up_with_one_diff_query(
    tmp_path: Path,
) -> None:
    seen = run(_offline_scenario(tmp_path), 120)
    assert seen["known"] == 4
    assert seen["full"] == 0  # the cursor was still in the AS's collection
    assert seen["diff"] == 1  # one diff query from it brought all three


async def _many_scenario(workdir: Path) -> dict[str, object]:
    """An AS keeping few updates (MAX_N 4, MAX_DIFF_BATCH 2): six revocations one after
    the other, then three at once, each reaching the observing RS."""
    async with _world(workdir, trl.TrlLimits(max_n=4, max_diff_batch=2)) as w:
        site, watcher = w.site, w.watcher
        await _post_tokens(w.service, w.coap, w.config, w.rs_port, 9)
        await w.until(lambda: watcher.observing)
        records = w.store.list_tokens("sensor-1")
        for left, record in enumerate(records[:6], start=1):
            w.store.revoke(record.cti)
            await w.until(lambda left=left: len(site.rs.store) == 9 - left)
        queries = watcher.diff_queries
        for record in records[6:]:  # within one look of the AS: one notification
            w.store.revoke(record.cti)
        await w.until(lambda: not len(site.rs.store))
        return {"burst_queries": watcher.diff_queries - queries, "known": len(watcher.known)}


def test_observation_keeps_up_beyond_max_diff_batch_and_with_bursts(tmp_path: Path) -> None:
    """Each notification brings the newest update (``diff=1``); more revocations than
    MAX_DIFF_BATCH, and several between two notifications, all reach the RS."""
    seen = run(_many_scenario(tmp_path), 120)
    assert seen["known"] == 9
    assert seen["burst_queries"] in (1, 2)  # the gap is caught up from the cursor


def test_beyond_the_history_kept_the_rs_catches_up_with_a_full_query(tmp_path: Path) -> None:
    """The bound on the history for diff queries (MAX_N): a cursor older than what the AS
    keeps gets ``cursor`` null and ``more`` true, and the RS asks a full query (§8.2.3).
    Here the AS keeps 2 updates per device and the RS misses three while offline."""
    seen = run(_offline_scenario(tmp_path, trl.TrlLimits(max_n=2, max_diff_batch=2)), 120)
    assert seen["known"] == 4
    assert seen["diff"] >= 1  # from its cursor first
    assert seen["full"] == 1  # then the whole list, once


LARGE = 1000


def _revoked_elsewhere(store: SqlAuthzStore, config: RsConfig) -> None:
    """``LARGE`` revoked tokens of sensor-1 for this RS (hashes only: never posted)."""
    now = int(time.time())
    for n in range(LARGE):
        cti = b"large-%d" % n
        store.record_token(
            IssuedToken(
                cti=cti, client_id="sensor-1", audience=config.bundle.audience,
                scope="temp.read", format="cwt", iat=now, exp=now + 3600,
                token_hash=trl.response_token_hash(cti),
            )
        )  # fmt: skip
        store.revoke(cti, now=now)


async def _large_scenario(workdir: Path) -> dict[str, object]:
    async with _world(workdir, before=_revoked_elsewhere) as w:
        await w.until(lambda: w.watcher.observing)
        seen: dict[str, object] = {"known": len(w.watcher.known), "full": w.watcher.full_queries}
        too_large = cbor.dumps({0: [bytes(33)] * (trl.MAX_RESPONSE_BYTES // 35 + 1), 2: 0})
        try:
            w.watcher.apply(too_large)
        except KeyboundError as exc:
            seen["refused"] = exc.description
        seen["known_after"] = len(w.watcher.known)
        return seen


def test_a_large_trl_reaches_the_rs_and_a_too_large_answer_is_refused(tmp_path: Path) -> None:
    """The TRL's size: 1000 hashes for one RS come in one full query (about 35 KB, CoAP
    block-wise under OSCORE); an answer above MAX_RESPONSE_BYTES is refused and what the
    RS knew stays."""
    seen = run(_large_scenario(tmp_path), 180)
    assert seen["known"] == LARGE
    assert seen["full"] == 1
    assert "exceeds" in str(seen["refused"])
    assert seen["known_after"] == LARGE


async def _unobserved_scenario(workdir: Path) -> dict[str, object]:
    async with _world(workdir) as w:
        w.watcher.unobserved_poll = 0.1
        site, watcher = w.site, w.watcher
        await _post_tokens(w.service, w.coap, w.config, w.rs_port, 1)
        await w.until(lambda: watcher.unobserved)
        (record,) = w.store.list_tokens("sensor-1")
        w.store.revoke(record.cti)
        await w.until(lambda: not len(site.rs.store))
        asked = watcher.full_queries + watcher.diff_queries
        await w.until(lambda: watcher.full_queries + watcher.diff_queries > asked)
        return {"observing": watcher.observing, "asked": asked}


def test_past_the_observer_bound_the_rs_asks_at_intervals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An AS that keeps no more observations (MAX_OBSERVERS, here 0) answers without
    Observe: the RS says so once and asks again every ``unobserved_poll`` seconds, and a
    revocation still reaches it."""
    from keybound.coap import trl_resource

    monkeypatch.setattr(trl_resource, "MAX_OBSERVERS", 0)
    caplog.set_level("INFO", logger="keybound")
    seen = run(_unobserved_scenario(tmp_path), 90)
    assert seen["observing"] is False
    assert seen["asked"] >= 2  # asked again at intervals, and it goes on asking
    warned = [r.getMessage() for r in caplog.records if r.name == "keybound.rs.trl"]
    assert warned == ["the AS keeps no more observations: asking every 0.1 s"]
