"""Shared pieces of the hostile-traffic tests: a running fleet, hypothesis strategies."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from tests.helpers import soak

#: CI-mode settings: generation only (shrinking would re-run real processes for minutes);
#: a failure prints the offending datagram in full instead.
CI_SETTINGS = settings(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Resident memory a server may gain during a CI fuzzing run (aiocoap keeps every
#: exchange for EXCHANGE_LIFETIME, RFC 7252 §4.8.2, so growth is bounded by time).
RSS_GROWTH_LIMIT_KIB = 48 * 1024


def batch_of(rng: random.Random, seeds: list[bytes], size: int) -> list[bytes]:
    return soak.fuzz_batch(rng, seeds, size)


#: A batch of raw datagrams: random bytes, and bytes after a plausible CoAP header.
raw_batches = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.builds(
            lambda head, rest: bytes([0x40 | (head & 0x3F), head >> 6]) + rest,
            st.integers(0, 0x3FFF),
            st.binary(max_size=200),
        ),
    ),
    min_size=20,
    max_size=20,
)


def assert_clean(stats: soak.FuzzStats, server: soak.ServerProcess) -> None:
    """No bad reply, the process alive, no traceback in its log."""
    assert not stats.problems, "\n".join(stats.problems[:5])
    assert server.alive(), f"{server.name} died:\n{server.log_text()[-3000:]}"
    problems = soak.log_problems(server.log_text())
    assert not problems, "\n".join(problems[:10])
