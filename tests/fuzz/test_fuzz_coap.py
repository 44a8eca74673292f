"""Whole CoAP datagrams, hostile or mangled, against the RS and the AS as real processes.

Properties (RFC 7252, RFC 8613, RFC 9200 §5.8.3): every reply decodes as a CoAP
response and is never 5.xx; a Content-Format 19 error carries an ACE error map
(or the AS Request Creation Hints); no traceback reaches a server's log; each
server's RSS stays bounded; and a legitimate client completes its flow after the
storm. CI mode sends a few thousand datagrams; ``python -m tests.helpers.soak
fuzz`` is the long mode.
"""

from __future__ import annotations

import asyncio
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import soak
from tests.helpers.fuzz import CI_SETTINGS, RSS_GROWTH_LIMIT_KIB, assert_clean, raw_batches

BATCH = 100
EXAMPLES = 10  # per target and kind: 2 x (10 x 100 mutated + 10 x 20 raw) = 2,400 datagrams
#: Hypothesis picks the seed of each batch's mutations (drawing every byte through it is slow).
SEEDS = st.integers(0, 2**32 - 1)
TOTALS: dict[str, soak.FuzzStats] = {"rs": soak.FuzzStats(), "as": soak.FuzzStats()}
RSS_START: dict[str, int] = {}


def _server(fleet: soak.Fleet, name: str) -> soak.ServerProcess:
    return next(server for server in fleet.servers if server.name == name)


def _fuzz(fleet: soak.Fleet, name: str, datagrams: list[bytes]) -> None:
    server = _server(fleet, name)
    RSS_START.setdefault(name, server.rss_kib())
    port = fleet.rs_port if name == "rs" else fleet.as_port
    stats = soak.FuzzStats()
    stats.judge(datagrams, soak.exchange(port, datagrams))
    TOTALS[name].sent += stats.sent
    TOTALS[name].replies += stats.replies
    for code, count in stats.codes.items():
        TOTALS[name].codes[code] = TOTALS[name].codes.get(code, 0) + count
    assert_clean(stats, server)


def test_rs_mutated_datagrams(fleet: soak.Fleet) -> None:
    seeds = soak.rs_seeds(fleet)

    @settings(CI_SETTINGS, max_examples=EXAMPLES)
    @given(SEEDS)
    def check(seed: int) -> None:
        _fuzz(fleet, "rs", soak.fuzz_batch(random.Random(seed), seeds, BATCH))

    check()


def test_rs_raw_datagrams(fleet: soak.Fleet) -> None:
    @settings(CI_SETTINGS, max_examples=EXAMPLES)
    @given(raw_batches)
    def check(datagrams: list[bytes]) -> None:
        _fuzz(fleet, "rs", datagrams)

    check()


def test_as_mutated_token_requests(fleet: soak.Fleet) -> None:
    context = fleet.client_context("client-1")
    seeds = soak.as_seeds(fleet, context)

    @settings(CI_SETTINGS, max_examples=EXAMPLES)
    @given(SEEDS)
    def check(seed: int) -> None:
        _fuzz(fleet, "as", soak.fuzz_batch(random.Random(seed), seeds, BATCH))

    check()


def test_as_raw_datagrams(fleet: soak.Fleet) -> None:
    @settings(CI_SETTINGS, max_examples=EXAMPLES)
    @given(raw_batches)
    def check(datagrams: list[bytes]) -> None:
        _fuzz(fleet, "as", datagrams)

    check()


def test_after_the_storm(fleet: soak.Fleet) -> None:
    """Memory stayed bounded, and a legitimate client still gets a token and a reading."""
    for name in ("rs", "as"):
        server = _server(fleet, name)
        growth = server.rss_kib() - RSS_START.get(name, server.rss_kib())
        print(f"{name}: {TOTALS[name].summary()}; RSS growth {growth} KiB")
        assert growth < RSS_GROWTH_LIMIT_KIB, f"{name} RSS grew by {growth} KiB"
        assert_clean(soak.FuzzStats(), server)
    asyncio.run(asyncio.wait_for(soak.legitimate_flow(fleet), 30))
