"""Many tokens expiring at once: one transaction, off the event loop, right state after restart.

A thousand tokens whose rows were deleted one synchronous commit at a time on the
event loop kept the RS silent for seconds. The RS site, serving real CoAP on
127.0.0.1 with its SQLite state, must delete them in one transaction on its
writer thread, keep answering a live client, and restart with only the live
token and its context.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import aiocoap
from aiocoap.numbers.codes import Code

from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.resource_server import ResourceServer, RsPolicy
from keybound.tools.resource_server.state import SqliteRsState
from tests.helpers.ports import free_udp_port
from tests.helpers.rs import (
    AS_URI,
    AUDIENCE,
    ISSUER,
    FakeClock,
    Keys,
    Temperature,
    establish,
    material,
    mint,
    request,
    run,
)

EXPIRING = 1000


class RecordingState(SqliteRsState):
    """The real SQLite store, noting each deletion call and the thread it ran on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.deletions: list[tuple[str, int, int]] = []

    def delete_context(self, key_id: bytes) -> None:
        self.deletions.append(("delete_context", 1, threading.get_ident()))
        super().delete_context(key_id)

    def delete_contexts(self, key_ids: Sequence[bytes]) -> None:
        self.deletions.append(("delete_contexts", len(key_ids), threading.get_ident()))
        super().delete_contexts(key_ids)


def make_site(keys: Keys, state: SqliteRsState, clock: FakeClock) -> ResourceServerSite:
    rs = ResourceServer(
        RsPolicy(
            audience=AUDIENCE,
            as_uri=AS_URI,
            token_keys=(keys.token_key,),
            issuer=ISSUER,
            capacity=EXPIRING + 10,
        )
    )
    site = ResourceServerSite(rs, state=state, wall_clock=clock, monotonic=clock)
    site.add_protected("/temp", Temperature(), scopes={"GET": ["temp.read"]})
    return site


def test_thousand_expiring_tokens_go_in_one_transaction_off_the_loop(tmp_path: Path) -> None:
    keys = Keys()
    clock = FakeClock()
    path = tmp_path / "rs.sqlite"

    async def body() -> None:
        state = RecordingState(path)
        site = make_site(keys, state, clock)
        port = free_udp_port()
        await site.serve(("127.0.0.1", port), expiry_interval=3600)
        client = await aiocoap.Context.create_client_context()
        try:
            mat = material()
            await establish(client, port, mint(keys, mat, lifetime=3600, now=clock.now), mat)
            assert (await request(client, port, aiocoap.GET, "/temp")).code == Code.CONTENT
            # filling the store is not what is tested: skip its fsyncs
            state.db.execute("PRAGMA synchronous=OFF")
            for _ in range(EXPIRING):
                token = mint(keys, material(os.urandom(4)), lifetime=60, now=clock.now)
                payload = AuthzInfoRequest(token, os.urandom(8), b"\x42").encode()
                assert (await site.post_token(payload, "test")).code == Code.CREATED
            state.db.execute("PRAGMA synchronous=FULL")
            assert len(site.rs.store) == EXPIRING + 1

            clock.now += 120
            loop_thread = threading.get_ident()
            assert await site.expire() == EXPIRING
            assert [(name, count) for name, count, _ in state.deletions] == [
                ("delete_contexts", EXPIRING)
            ]
            assert state.deletions[0][2] != loop_thread
            assert len(site.contexts) == 1
            assert (await request(client, port, aiocoap.GET, "/temp")).code == Code.CONTENT
        finally:
            await site.shutdown()

        # restart on the same file: the expired tokens are gone, the live one is back
        reopened = SqliteRsState(path)
        rows = reopened.db.execute("SELECT count(*) FROM contexts").fetchone()[0]
        assert rows == 1
        restarted = make_site(keys, reopened, clock)
        assert restarted.restore() == 1
        await restarted.serve(("127.0.0.1", port), expiry_interval=3600)
        try:
            response = await request(client, port, aiocoap.GET, "/temp")
            assert response.code == Code.CONTENT
            assert response.payload == b"21.50"
        finally:
            await client.shutdown()
            await restarted.shutdown()

    run(body(), timeout=120)
