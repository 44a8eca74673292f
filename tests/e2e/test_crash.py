"""SIGKILL of the RS during OSCORE traffic and of the AS during token issuance.

RS (RFC 8613 Appendix B.1): no (key, sender ID, Partial IV) repeats on the wire
(every response carries its own Partial IV), no stored token is lost (the old
contexts keep working after Echo), every client recovers. AS: the database
stays consistent and no sequence number is handed out twice for a no-clock RS.
CI mode: 5 kills of the RS, 3 of the AS; ``python -m tests.helpers.soak soak
--kills 20`` is the long mode.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiocoap
import cbor2

from tests.helpers import soak

RS_KILLS = 5
AS_KILLS = 3


def test_rs_sigkill_under_traffic(tmp_path: Path) -> None:
    fleet = soak.Fleet(tmp_path, sequence_chunk=8)
    fleet.provision()
    try:
        rs = fleet.start_rs()
        contexts = [soak.establish_raw(fleet, bytes([0x10 + i]))[0] for i in range(3)]
        seen: set[tuple[bytes, bytes]] = set()
        mid = 0
        for kill in range(RS_KILLS + 1):
            for _ in range(4):
                for index, context in enumerate(contexts):
                    mid += 1
                    assert soak.get_with_recovery(fleet, context, mid), (kill, index)
            for context in contexts:
                for piv in context.response_pivs:
                    key = (bytes(context.recipient_id), piv)
                    assert key not in seen, f"response Partial IV {piv.hex()} reused"
                    seen.add(key)
                context.response_pivs.clear()
            if kill < RS_KILLS:
                rs.kill()
                rs.start(lambda: soak.probe(fleet.rs_port, soak.coap_get("x"), 0.3) is not None)
        state = sqlite3.connect(tmp_path / "rs-state" / "rs-state.db")
        try:
            assert state.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert state.execute("SELECT count(*) FROM contexts").fetchone()[0] == len(contexts)
        finally:
            state.close()
        print(f"{RS_KILLS} SIGKILLs survived, {len(seen)} distinct response Partial IVs")
        assert not soak.log_problems(rs.log_text())
    finally:
        fleet.stop()


def test_as_sigkill_during_issuance(tmp_path: Path) -> None:
    fleet = soak.Fleet(tmp_path)
    fleet.provision()
    issued: list[dict[int, object]] = []

    async def stream(count: int, kill: soak.ServerProcess | None) -> None:
        client = await aiocoap.Context.create_client_context()
        try:
            client.client_credentials[f"{fleet.as_base}/*"] = fleet.client_context("client-0")
            for _ in range(count):
                issued.append(await soak.request_token(client, fleet, soak.NO_CLOCK_AUDIENCE))
            if kill is not None:  # one more request, killed while it is being answered
                request = aiocoap.Message(
                    code=aiocoap.POST, uri=f"{fleet.as_base}/token", content_format=19,
                    payload=cbor2.dumps({5: soak.NO_CLOCK_AUDIENCE, 9: "open"}),
                )  # fmt: skip
                pending = client.request(request).response
                await asyncio.sleep(0.003)
                kill.kill()
                pending.cancel()
        finally:
            await client.shutdown()

    try:
        server = fleet.start_as()
        for _ in range(AS_KILLS):
            asyncio.run(asyncio.wait_for(stream(10, server), 60))
            server.start(lambda: soak.probe(fleet.as_port, soak.coap_get("x"), 0.3) is not None)
        asyncio.run(asyncio.wait_for(stream(10, None), 60))
    finally:
        fleet.stop()
    db = sqlite3.connect(tmp_path / "as.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute(
            "SELECT cti, sequence FROM keybound_tokens WHERE audience = ?",
            (soak.NO_CLOCK_AUDIENCE,),
        ).fetchall()
        counter = db.execute(
            "SELECT value FROM keybound_rs_sequences WHERE audience = ?",
            (soak.NO_CLOCK_AUDIENCE,),
        ).fetchone()
    finally:
        db.close()
    sequences = [row[1] for row in rows]
    assert len(rows) >= len(issued) == 10 * (AS_KILLS + 1)
    assert len(set(sequences)) == len(sequences), "a sequence number was handed out twice"
    assert len({row[0] for row in rows}) == len(rows)
    assert counter is not None
    assert counter[0] >= max(sequences)
    assert all(isinstance(body[1], bytes) for body in issued)
    print(f"{AS_KILLS} AS SIGKILLs survived, {len(rows)} tokens, sequences unique")
