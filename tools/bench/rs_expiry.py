"""``rs.expiry_1000_longest_silence``: the RS's event loop while 1,000 tokens expire at once.

A Resource Server site with its SQLite state in a temporary directory (on the
disk, ``synchronous=FULL``) holds 1,000 tokens that expire at the same moment;
its clock is moved past their ``exp`` and the expiry runs, as the site's timer
runs it, while a task on the same loop notes the longest gap between two of its
turns. That gap is the time a client's request would wait unanswered. The
baseline, ``rs.expiry_1000_durable``, is the time from the start of the expiry
to the deletion being durable: the silence should be a small share of it, the
disk work happening on the writer thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import time

from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core import cwt
from keybound.core.authz_info import NONCE_BYTES, AuthzInfoRequest
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.resource_server import ResourceServer, RsPolicy, scope_tokens
from keybound.core.token import CnfOsc
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    CLIENT_ID,
    ISSUER,
    LIFETIME,
    SCOPE,
    Keys,
    sample_token,
)
from keybound.tools.bench.measure import MILLISECONDS, Figure, Measurement, Runner
from keybound.tools.resource_server.state import SqliteRsState

EXPIRING = 1000
NAME = f"rs.expiry_{EXPIRING}_longest_silence"
BASELINE = f"rs.expiry_{EXPIRING}_durable"


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def _one_round(keys: Keys, directory: str) -> tuple[float, float]:
    """(longest silence, time until durable) of one expiry of ``EXPIRING`` tokens, in ms."""
    clock = _Clock()
    policy = RsPolicy(
        audience=AUDIENCE,
        as_uri="coap://as.example/token",
        token_keys=(keys.as_rs,),
        issuer=ISSUER,
        resources=scope_tokens({"/temp": {"GET": [SCOPE]}}),
        capacity=EXPIRING + 1,
    )
    state = SqliteRsState(os.path.join(directory, "rs.sqlite"))
    site = ResourceServerSite(
        ResourceServer(policy), state=state, wall_clock=clock, monotonic=clock
    )
    try:
        state.db.execute("PRAGMA synchronous=OFF")  # filling is not what is measured
        for _ in range(EXPIRING):
            material = OscoreInputMaterial(id=os.urandom(3), ms=os.urandom(16))
            token = dataclasses.replace(
                sample_token(CnfOsc(material), now=int(clock.now)), cti=os.urandom(16)
            )
            raw = cwt.encode(token, cwt.Encrypt0(keys.as_rs), random_bytes=os.urandom)
            payload = AuthzInfoRequest(raw, os.urandom(NONCE_BYTES), CLIENT_ID).encode()
            await site.post_token(payload, "bench")
        state.db.execute("PRAGMA synchronous=FULL")
        clock.now += LIFETIME + 60

        longest = 0.0
        running = True

        async def ticker() -> None:
            nonlocal longest
            last = time.perf_counter()
            while running:
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest = max(longest, now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        start = time.perf_counter()
        gone = await site.expire()
        durable = time.perf_counter() - start
        running = False
        await task
        if gone != EXPIRING:
            raise RuntimeError(f"{gone} of {EXPIRING} tokens expired")
        return longest * 1e3, durable * 1e3
    finally:
        await site.shutdown()


def expiry_figure(runner: Runner, keys: Keys) -> Figure:
    """The longest event-loop silence while ``EXPIRING`` tokens expire at once."""
    runner.on_step(NAME)
    silences: list[float] = []
    durables: list[float] = []
    for _ in range(1 if runner.quick else 3):
        with tempfile.TemporaryDirectory(prefix="keybound-bench-") as directory:
            silence, durable = asyncio.run(_one_round(keys, directory))
        silences.append(silence)
        durables.append(durable)
    return Figure.of(
        NAME,
        Measurement.of_samples(silences),
        MILLISECONDS,
        Measurement.of_samples(durables),
        BASELINE,
    )


__all__ = ["BASELINE", "EXPIRING", "NAME", "expiry_figure"]
