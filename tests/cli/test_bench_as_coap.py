"""``as.coap_token_rps``: the token side and the bare side from the same clients, each
client its own OSCORE context and socket, so that as many requests are in flight as the
figure says (aiocoap's client keeps one confirmable exchange per server: NSTART = 1)."""

from __future__ import annotations

import asyncio
import gc
import tempfile
from pathlib import Path

from keybound.tools.bench import authz_server as as_bench
from keybound.tools.bench.measure import PROCESS_CPU, Runner, Timer


def test_token_rate_comes_from_every_client_against_the_bare_server() -> None:
    runner = Runner(Timer(0.2, rounds=3), quick=True)
    with as_bench.provisioned_as() as setup, tempfile.TemporaryDirectory() as tmp:
        pair = asyncio.run(as_bench._coap_rates(setup, runner, Path(tmp)))
        gc.collect()  # aiocoap's file-backed contexts write their state when collected
        with setup.store.engine.connect() as conn:
            clients = conn.exec_driver_sql(
                "SELECT DISTINCT client_id FROM keybound_tokens"
            ).scalars()
            issued_to = set(clients)
    assert len(pair.ratios) == 3
    assert pair.clock == PROCESS_CPU
    assert pair.candidate.median > 0
    assert pair.baseline.median > 0
    expected = {as_bench.CLIENT} | {
        f"{as_bench.CLIENT}-coap-{n}" for n in range(1, as_bench.CONCURRENCY)
    }
    assert issued_to == expected  # every client of the figure got tokens over UDP
