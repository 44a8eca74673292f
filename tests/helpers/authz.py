"""Helpers for the Authorization Server tests: stores, provisioning, OSCORE clients."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from keybound.coap.token_writer import TokenWriter
from keybound.core.authz_store import IssuedToken
from keybound.tools.authz_server.provision import (
    add_clients,
    add_resource_server,
    init_issuer,
    new_introspection_secret,
)
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import device_bundle, rs_bundle

ISSUER = "coap://as.example"


def provision(url: str, *, as_base: str = "coap://127.0.0.1:5683") -> dict[str, Any]:
    """An AS with a clock RS ``temp``, a no-clock RS ``door``, and clients."""
    store = SqlAuthzStore.init(url)
    init_issuer(store, ISSUER)
    temp = add_resource_server(store, "temp-rs", "temp", ["read", "write"], has_clock=True)
    door = add_resource_server(store, "door-rs", "door", ["open"], has_clock=False)
    sensor = add_clients(store, ["sensor-1"], {"temp": ["read"], "door": ["open"]})[0]
    web = add_clients(store, ["web-1"], {"temp": ["read", "write"]}, http_secret=True)[0]
    issuer = store.get_issuer()
    assert issuer is not None
    assert sensor.oscore is not None
    return {
        "store": store,
        "temp": temp,
        "door": door,
        "temp_bundle": rs_bundle(
            temp,
            issuer,
            as_base=as_base,
            introspection_secret=new_introspection_secret(store, "temp-rs"),
        ),
        "door_bundle": rs_bundle(
            door,
            issuer,
            as_base=as_base,
            introspection_secret=new_introspection_secret(store, "door-rs"),
        ),
        "sensor": sensor,
        "sensor_bundle": device_bundle(
            "sensor-1",
            as_base=as_base,
            rs_uri="coap://127.0.0.1:5684",
            audience="temp",
            scope="read",
            oscore=sensor.oscore,
        ),
        "web": web,
    }


def client_context_dir(oscore: dict[str, Any], where: Path) -> Path:
    """An aiocoap client context directory from a bundle's OSCORE JSON."""
    where.mkdir(parents=True, exist_ok=True)
    secret = {
        "secret_hex": oscore["master_secret"],
        "salt_hex": oscore["master_salt"],
        "sender-id_hex": oscore["sender_id"],
        "recipient-id_hex": oscore["recipient_id"],
    }
    if oscore.get("id_context"):
        secret["id-context_hex"] = oscore["id_context"]
    (where / "secret.json").write_text(json.dumps(secret))
    return where


HttpScenario = Callable[[httpx.AsyncClient, dict[str, Any]], Awaitable[None]]


def run_http_as(
    url: str,
    tmp_path: Path,
    scenario: HttpScenario,
    *,
    provisioner: Callable[[str], dict[str, Any]] | None = None,
    **options: Any,
) -> None:
    """Provision an AS at ``url`` (with ``provisioner``, by default :func:`provision`),
    serve its HTTP front on a free port of 127.0.0.1 (a real uvicorn; ``options`` for
    :class:`RunningServer`), run ``scenario(client, setup)`` with an httpx client on it,
    and stop it."""
    from keybound.tools.authz_server.server import RunningServer
    from tests.helpers.ports import free_port

    setup = (provisioner or provision)(url)
    store = setup["store"]
    port = free_port(socket.SOCK_STREAM)

    async def main() -> None:
        server = RunningServer(
            store, http=("127.0.0.1", port), state_dir=tmp_path / "state", **options
        )
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                await scenario(client, setup)
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    finally:
        store.close()


class CountingStore(SqlAuthzStore):
    """The AS's SQL store, counting the transactions that record tokens."""

    transactions: list[int]

    def record_tokens(self, tokens: Sequence[IssuedToken]) -> None:
        self.transactions.append(len(tokens))  # the attempt, before the commit
        super().record_tokens(tokens)


def provision_counting(url: str) -> dict[str, Any]:
    """:func:`provision` at ``url``, its ``store`` reopened as a :class:`CountingStore`
    (no transaction counted yet); the caller closes it."""
    setup = provision(url)
    setup["store"].close()
    store = CountingStore.open(url)
    store.transactions = []
    setup["store"] = store
    return setup


def refuse_inserts(store: SqlAuthzStore) -> None:
    """Make every token INSERT of ``store`` fail (an SQLite trigger ``refuse_tokens``)."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_tokens BEFORE INSERT ON keybound_tokens "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )


def gated_writer(store: SqlAuthzStore, queued: int) -> TokenWriter:
    """A writer on ``store`` whose first commit starts once ``queued`` more rows wait,
    so the rows of the concurrent callers behind it meet in the next commit."""
    writer: TokenWriter
    first = threading.Event()

    def write_many(tokens: Sequence[IssuedToken]) -> None:
        if not first.is_set():
            first.set()
            deadline = time.monotonic() + 30
            while writer.waiting < queued:
                assert time.monotonic() < deadline, "the other callers did not queue"
                time.sleep(0.001)
        store.record_tokens(tokens)

    writer = TokenWriter(write_many)
    return writer
