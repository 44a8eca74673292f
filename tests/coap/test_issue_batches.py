"""Token requests that meet on the event loop: one worker-thread hop, one commit.

:class:`keybound.coap.token_writer.Batches` on its own, and
:meth:`keybound.coap.authz_service.AuthzService.issue_token_batched` on the AS's SQL
store: every request in flight shares one commit however few threads the executor
has, each is answered only once its record is committed, and a failed commit answers
none of the tokens of its batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from keybound.coap.authz_service import AuthzService
from keybound.coap.token_writer import Batches, TokenNotRecorded
from keybound.core.authz_server import TokenRequest, TokenResponse
from keybound.core.errors import KeyboundError
from keybound.tools.authz_server.provision import as_config
from tests.helpers.authz import CountingStore, provision_counting, refuse_inserts

NOW = 1_700_000_000
GOOD = TokenRequest(client_id="sensor-1", audience="temp", scope="read")
UNKNOWN_AUDIENCE = TokenRequest(client_id="sensor-1", audience="nowhere", scope="read")


@pytest.fixture
def store(tmp_path: Path) -> Any:
    counting = provision_counting(f"sqlite:///{tmp_path / 'as.db'}")["store"]
    yield counting
    counting.close()


def token_count(store: CountingStore) -> int:
    with store.engine.connect() as conn:
        count: int = conn.exec_driver_sql("SELECT count(*) FROM keybound_tokens").scalar_one()
    return count


# ---- Batches alone -------------------------------------------------------------------------------


def test_items_in_flight_form_one_batch_in_order() -> None:
    calls: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        return [item * 10 for item in items]

    batches: Batches[int, int] = Batches(run)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batches.submit(n) for n in range(8))))

    assert asyncio.run(main()) == [n * 10 for n in range(8)]
    assert calls == [list(range(8))]
    assert batches.batches == 1


def test_items_submitted_during_a_batch_form_the_next() -> None:
    started = threading.Event()
    release = threading.Event()
    calls: list[list[int]] = []

    def run(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            started.set()
            assert release.wait(30)
        return list(items)

    batches: Batches[int, int] = Batches(run)

    async def main() -> list[int]:
        first = asyncio.ensure_future(batches.submit(0))
        assert await asyncio.to_thread(started.wait, 30)
        later = [asyncio.ensure_future(batches.submit(n)) for n in range(1, 6)]
        await asyncio.sleep(0)
        release.set()
        return [await first, *await asyncio.gather(*later)]

    assert asyncio.run(main()) == list(range(6))
    assert calls == [[0], [1, 2, 3, 4, 5]]


def test_no_batch_is_larger_than_its_bound() -> None:
    sizes: list[int] = []

    def run(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        return list(items)

    batches: Batches[int, int] = Batches(run, max_batch=3)

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batches.submit(n) for n in range(10))))

    assert asyncio.run(main()) == list(range(10))
    assert sum(sizes) == 10
    assert max(sizes) == 3


def test_a_failed_batch_fails_each_of_its_items_and_the_next_runs() -> None:
    def run(items: Sequence[int]) -> list[int]:
        if 13 in items:
            raise OSError("disk full")
        return list(items)

    batches: Batches[int, int] = Batches(run)

    async def main() -> tuple[list[object], int]:
        failed = await asyncio.gather(
            *(batches.submit(n) for n in (1, 13, 2)), return_exceptions=True
        )
        return failed, await batches.submit(4)

    failed, later = asyncio.run(main())
    assert all(isinstance(result, OSError) for result in failed)
    assert later == 4


def test_a_wrong_number_of_results_fails_the_batch() -> None:
    batches: Batches[int, int] = Batches(lambda items: [1])

    async def main() -> list[object]:
        return list(
            await asyncio.gather(*(batches.submit(n) for n in range(3)), return_exceptions=True)
        )

    assert all(isinstance(result, RuntimeError) for result in asyncio.run(main()))


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        Batches(list, max_batch=0)


# ---- AuthzService.issue_token_batched ------------------------------------------------------------


def issue_at_once(service: AuthzService, requests: Sequence[TokenRequest], threads: int) -> Any:
    """``requests`` in flight at once on an event loop whose executor has ``threads``."""

    async def main() -> list[object]:
        asyncio.get_running_loop().set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=threads)
        )
        return list(
            await asyncio.gather(
                *(
                    service.issue_token_batched(request, now=NOW, random_bytes=os.urandom)
                    for request in requests
                ),
                return_exceptions=True,
            )
        )

    return asyncio.run(main())


def test_requests_in_flight_share_one_commit_however_few_threads(store: CountingStore) -> None:
    """Eight requests on an executor of two threads: one commit of eight rows (a thread
    blocked in a commit used to be a request the next commit could not take)."""
    service = AuthzService(store, as_config(store))
    results = issue_at_once(service, [GOOD] * 8, threads=2)
    assert all(isinstance(result, TokenResponse) for result in results)
    assert store.transactions == [8]
    for result in results:
        assert store.get_token(result.record.cti) is not None
    assert len({result.record.cti for result in results}) == 8


def test_a_refusal_in_a_batch_is_its_own(store: CountingStore) -> None:
    service = AuthzService(store, as_config(store))
    results = issue_at_once(service, [GOOD, UNKNOWN_AUDIENCE, GOOD], threads=4)
    assert isinstance(results[0], TokenResponse)
    assert isinstance(results[2], TokenResponse)
    assert isinstance(results[1], KeyboundError)
    assert not isinstance(results[1], TokenNotRecorded)
    assert store.transactions == [2]
    assert token_count(store) == 2


def test_a_failed_commit_answers_none_of_its_tokens(store: CountingStore) -> None:
    service = AuthzService(store, as_config(store))
    refuse_inserts(store)
    results = issue_at_once(service, [GOOD, UNKNOWN_AUDIENCE, GOOD, GOOD], threads=4)
    for n in (0, 2, 3):
        assert isinstance(results[n], TokenNotRecorded)
    assert isinstance(results[1], KeyboundError)
    assert not isinstance(results[1], TokenNotRecorded)
    assert store.transactions == [3]
    assert token_count(store) == 0
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_tokens")
    again = issue_at_once(service, [GOOD], threads=1)
    assert isinstance(again[0], TokenResponse)
    assert token_count(store) == 1


def test_batches_issue_what_one_request_at_a_time_issues(store: CountingStore) -> None:
    """The same claims as :meth:`AuthzService.issue_token` for the same randomness."""
    service = AuthzService(store, as_config(store))

    def counter() -> Any:
        state = {"n": 0}

        def random_bytes(size: int) -> bytes:
            state["n"] += 1
            return state["n"].to_bytes(2, "big") * (size // 2) + b"\x00" * (size % 2)

        return random_bytes

    batched = asyncio.run(service.issue_token_batched(GOOD, now=NOW, random_bytes=counter()))
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM keybound_tokens")
    direct = service.issue_token(GOOD, now=NOW, random_bytes=counter())
    # ES256 signatures are randomized: everything but the token and its hash is the same
    assert {k: v for k, v in batched.to_cbor_map().items() if k != 1} == {
        k: v for k, v in direct.to_cbor_map().items() if k != 1
    }
    assert replace(batched.record, token_hash=None) == replace(direct.record, token_hash=None)
    assert batched.record.token_hash is not None
