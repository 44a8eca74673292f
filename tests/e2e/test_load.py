"""Load on 127.0.0.1: many OSCORE clients at one RS; two AS processes on one PostgreSQL.

CI mode: 50 clients x 10 OSCORE requests, zero errors, the RS under
``RS_RSS_LIMIT_KIB``. ``python -m tests.helpers.soak soak --clients 200 --requests
50`` is the long mode.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiocoap
import pytest
from sqlalchemy import create_engine, text

from tests.helpers import soak
from tests.helpers.ports import free_udp_port

CLIENTS, REQUESTS = 50, 10
RS_RSS_LIMIT_KIB = 160 * 1024


def test_rs_holds_concurrent_clients(tmp_path: Path) -> None:
    fleet = soak.Fleet(tmp_path)
    fleet.provision()
    try:
        rs = fleet.start_rs()
        errors, elapsed = asyncio.run(asyncio.wait_for(soak.load(fleet, CLIENTS, REQUESTS), 120))
        rss = rs.rss_kib()
        rate = CLIENTS * REQUESTS / elapsed
        print(f"{CLIENTS} clients x {REQUESTS} requests: {errors} errors, "
              f"{rate:.0f} requests/s, RS RSS {rss} KiB")  # fmt: skip
        assert errors == 0
        assert rss < RS_RSS_LIMIT_KIB
        assert not soak.log_problems(rs.log_text())
    finally:
        fleet.stop()


async def _tokens(fleet: soak.Fleet, base: str, client_id: str, count: int) -> None:
    client = await aiocoap.Context.create_client_context()
    try:
        client.client_credentials[f"{base}/*"] = fleet.client_context(client_id)
        for _ in range(count):
            request = aiocoap.Message(
                code=aiocoap.POST, uri=f"{base}/token", content_format=19,
                payload=b"\xa2\x05\x64door\x09\x64open",
            )  # fmt: skip
            response = await client.request(request).response
            assert int(response.code) == 0x41, response.payload
    finally:
        await client.shutdown()


@pytest.mark.postgres
def test_two_as_processes_on_one_postgresql(tmp_path: Path, pg_url: str) -> None:
    """Two AS processes share one PostgreSQL schema (a throw-away one, from ``pg_url``)."""
    url = pg_url
    per_client = 40
    fleet = soak.Fleet(tmp_path, clients=4, db=url)
    fleet.provision()
    try:
        second_port = free_udp_port()
        fleet.start_as()
        fleet.start_as(second_port, name="as2")
        bases = [fleet.as_base, f"coap://127.0.0.1:{second_port}"]

        async def one_process() -> float:
            started = time.monotonic()
            await asyncio.gather(*(_tokens(fleet, bases[0], f"client-{i}", per_client)
                                   for i in (0, 1)))  # fmt: skip
            return time.monotonic() - started

        async def two_processes() -> float:
            started = time.monotonic()
            await asyncio.gather(*(_tokens(fleet, bases[i % 2], f"client-{i + 2}", per_client)
                                   for i in (0, 1)))  # fmt: skip
            return time.monotonic() - started

        one = asyncio.run(asyncio.wait_for(one_process(), 120))
        two = asyncio.run(asyncio.wait_for(two_processes(), 120))
        count = 2 * per_client
        print(f"token requests/s: one AS {count / one:.0f}, two AS processes {count / two:.0f}")
    finally:
        fleet.stop()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT cti, sequence FROM keybound_tokens WHERE audience = 'door'")
            ).fetchall()
    finally:
        engine.dispose()
    assert len(rows) == 4 * per_client
    assert len({row[0] for row in rows}) == len(rows), "a cti was issued twice"
    assert len({row[1] for row in rows}) == len(rows), "a sequence number was issued twice"
