"""DPoP replay caches (RFC 9449 §11.1): in memory, and shared in SQLite or PostgreSQL.

Every test taking ``cache`` runs on the in-process cache, on an SQLite file and
on a fresh PostgreSQL schema (skipped unless KEYBOUND_TEST_PG_URL is set). The
race test has two real processes store the same ``jti`` values in one database.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from joserfc.jwk import ECKey

from keybound.core.dpop import DEFAULT_IAT_WINDOW, verify_proof
from keybound.core.dpop_state import ReplayCacheFull, ReplayedProof
from keybound.core.errors import InvalidDPoPProof
from keybound.tools.http import InMemoryReplayCache, SqlReplayCache
from tests.helpers.dpop import create_proof
from tests.helpers.pg import database_url

NOW = 1_700_000_000
HTU = "https://api.example.com/resource"


AnyCache = InMemoryReplayCache | SqlReplayCache
MakeCache = Callable[[int], AnyCache]


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database_url(request.param, tmp_path, "replay.db") as url:
        yield url


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def make_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeCache]:
    """A factory ``make(capacity)`` of caches of one kind; the SQL ones share one database."""
    made: list[AnyCache] = []
    with ExitStack() as stack:
        url = (
            ""
            if request.param == "memory"
            else stack.enter_context(database_url(request.param, tmp_path, "replay.db"))
        )

        def make(capacity: int) -> AnyCache:
            cache: AnyCache = (
                SqlReplayCache(url, capacity=capacity) if url else InMemoryReplayCache(capacity)
            )
            made.append(cache)
            return cache

        yield make
        for cache in made:
            if isinstance(cache, SqlReplayCache):
                cache.close()


def test_replayed_jti_is_refused(make_cache: MakeCache) -> None:
    cache = make_cache(16)
    cache.check_and_store(HTU, "j1", NOW + 60, NOW)
    with pytest.raises(ReplayedProof, match="already used"):
        cache.check_and_store(HTU, "j1", NOW + 61, NOW + 1)
    cache.check_and_store("https://other.example.com/resource", "j1", NOW + 60, NOW)
    cache.check_and_store(HTU, "j2", NOW + 60, NOW)


def test_replay_at_the_last_acceptable_second_is_refused(make_cache: MakeCache) -> None:
    """RFC 9449 §11.1: the entry lives while the proof is acceptable, ``iat + window`` included."""
    cache = make_cache(16)
    key = ECKey.generate_key("P-256")
    proof = create_proof(key, "GET", HTU, now=NOW)
    verify_proof(proof, htm="GET", htu=HTU, now=NOW, replay_cache=cache)
    boundary = NOW + DEFAULT_IAT_WINDOW
    with pytest.raises(ReplayedProof):
        verify_proof(proof, htm="GET", htu=HTU, now=boundary, replay_cache=cache)
    # One second later the proof is too old: refused for its iat, not by the cache.
    with pytest.raises(InvalidDPoPProof, match="iat is 61 s old"):
        verify_proof(proof, htm="GET", htu=HTU, now=boundary + 1, replay_cache=cache)
    # Other proofs stored at the boundary second are still remembered there.
    cache.check_and_store(HTU, "late", boundary, boundary)
    with pytest.raises(ReplayedProof):
        cache.check_and_store(HTU, "late", boundary, boundary)


def test_capacity_bounds_unexpired_entries(make_cache: MakeCache) -> None:
    cache = make_cache(2)
    cache.check_and_store(HTU, "a", NOW + 10, NOW)
    cache.check_and_store(HTU, "b", NOW + 60, NOW)
    with pytest.raises(ReplayCacheFull, match="holds 2 unexpired") as info:
        cache.check_and_store(HTU, "c", NOW + 60, NOW + 10)
    assert info.value.http_status == 503
    cache.check_and_store(HTU, "c", NOW + 71, NOW + 11)  # "a" expired and made room
    assert len(cache) == 2
    with pytest.raises(ReplayedProof):
        cache.check_and_store(HTU, "b", NOW + 71, NOW + 11)
    cache.check_and_store(HTU, "a", NOW + 121, NOW + 61)  # "b" expired; "a" may come back


def test_two_caches_on_one_database_share_entries(shared_url: str) -> None:
    first, second = SqlReplayCache(shared_url), SqlReplayCache(shared_url)
    try:
        first.check_and_store(HTU, "j", NOW + 60, NOW)
        with pytest.raises(ReplayedProof):
            second.check_and_store(HTU, "j", NOW + 60, NOW + 30)
    finally:
        first.close()
        second.close()


RACER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from keybound.core.dpop_state import ReplayedProof
    from keybound.tools.http.replay_cache import SqlReplayCache

    url, name, go, count = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    cache = SqlReplayCache(url)
    Path(go.parent / f"ready-{name}").touch()
    while not go.exists():
        pass
    won = []
    for i in range(count):
        try:
            cache.check_and_store("https://api.example.com/r", f"jti-{i}", 10**10, 1)
            won.append(i)
        except ReplayedProof:
            pass
    cache.close()
    print(json.dumps(won))
    """
)


def test_two_processes_never_both_accept_a_jti(shared_url: str, tmp_path: Path) -> None:
    """Insert-if-absent is atomic across processes: each jti is accepted exactly once."""
    SqlReplayCache(shared_url).close()  # the table exists before the race starts
    count = 200
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, shared_url, str(n), str(go), str(count)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    try:
        ready = [tmp_path / f"ready-{n}" for n in range(2)]
        while not all(path.exists() for path in ready):
            assert all(racer.poll() is None for racer in racers), "a racer exited early"
        go.touch()
        results = [json.loads(racer.communicate(timeout=120)[0]) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
    accepted = results[0] + results[1]
    assert sorted(accepted) == list(range(count))  # every jti once, none twice


def test_replay_cache_first_then_as_init_in_one_database(shared_url: str) -> None:
    """The cache may create its table before ``keybound as init``: the AS still initialises
    that database and then opens it (the table is keybound's own, not a foreign one)."""
    from keybound.tools.authz_server.storage import SqlAuthzStore

    cache = SqlReplayCache(shared_url)
    cache.check_and_store(HTU, "before-init", NOW + 60, NOW)
    cache.close()
    SqlAuthzStore.init(shared_url).close()
    with SqlAuthzStore.open(shared_url) as store:
        assert store.list_resource_servers() == []  # a fresh AS database, opened
    again = SqlReplayCache(shared_url)
    with pytest.raises(ReplayedProof):
        again.check_and_store(HTU, "before-init", NOW + 61, NOW + 1)
    again.close()
