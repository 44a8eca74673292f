"""Issuing from cached client and RS records, kept while the configuration version holds.

The bound: a client removed (or a grant taken away) by any process sharing the store
gets no token from a request that starts more than ``CONFIG_CHECK_INTERVAL_S`` after
the change was committed. The clock is a parameter here, so no test sleeps.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from keybound.coap import authz_service
from keybound.coap.authz_service import CONFIG_CHECK_INTERVAL_S, AuthzService, RecordCache
from keybound.core.authz_server import TokenRequest
from keybound.core.errors import InvalidClient, KeyboundError
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import gated_writer, provision

REQUEST = TokenRequest(client_id="sensor-1", audience="temp", scope="read")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup(db_url: str) -> Iterator[dict[str, Any]]:
    provisioned = provision(db_url)
    yield provisioned
    provisioned["store"].close()


def _service(store: SqlAuthzStore, clock: Clock) -> AuthzService:
    return AuthzService(store, as_config(store), records=RecordCache(store, monotonic=clock))


def _issue(service: AuthzService) -> Any:
    return service.issue_token(REQUEST, now=1_700_000_000, random_bytes=os.urandom)


def test_records_are_read_once_while_the_version_holds(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store: SqlAuthzStore = setup["store"]
    reads: list[str] = []
    for name in ("get_client", "get_resource_server_by_audience", "config_version"):
        original = getattr(store, name)
        monkeypatch.setattr(
            store, name, lambda *a, _o=original, _n=name: (reads.append(_n), _o(*a))[1]
        )
    clock = Clock()
    service = _service(store, clock)
    for _ in range(3):
        _issue(service)
    assert reads == ["config_version", "get_client", "get_resource_server_by_audience"]
    clock.now += CONFIG_CHECK_INTERVAL_S
    _issue(service)
    assert reads[3:] == ["config_version"]  # same version: the records are kept


def test_a_client_removed_by_another_process_gets_no_token_past_the_bound(
    setup: dict[str, Any], db_url: str
) -> None:
    store: SqlAuthzStore = setup["store"]
    clock = Clock()
    service = _service(store, clock)
    _issue(service)
    with SqlAuthzStore.open(db_url) as other:  # another AS process, or the CLI
        other.remove_client("sensor-1")
    clock.now += CONFIG_CHECK_INTERVAL_S
    with pytest.raises(InvalidClient):
        _issue(service)


def test_a_grant_taken_away_is_refused_past_the_bound(setup: dict[str, Any], db_url: str) -> None:
    store: SqlAuthzStore = setup["store"]
    clock = Clock()
    service = _service(store, clock)
    _issue(service)
    with SqlAuthzStore.open(db_url) as other:
        other.set_grants("sensor-1", {"door": ["open"]})
    clock.now += CONFIG_CHECK_INTERVAL_S
    with pytest.raises(KeyboundError):
        _issue(service)


def test_an_unknown_client_is_not_cached(setup: dict[str, Any]) -> None:
    store: SqlAuthzStore = setup["store"]
    service = _service(store, Clock())
    with pytest.raises(InvalidClient):
        service.issue_token(
            TokenRequest(client_id="nobody", audience="temp", scope="read"),
            now=1_700_000_000,
            random_bytes=os.urandom,
        )
    assert service.records is not None
    assert service.records.client("nobody", lambda _id: None) is None


def test_the_cache_is_bounded(setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authz_service, "MAX_CACHED_RECORDS", 2)
    store: SqlAuthzStore = setup["store"]
    cache = RecordCache(store, monotonic=Clock())
    loads: list[str] = []

    def load(client_id: str) -> Any:
        loads.append(client_id)
        return store.get_client(client_id)

    for client_id in ("sensor-1", "web-1", "sensor-1", "web-1"):
        assert cache.client(client_id, load) is not None
    assert loads == ["sensor-1", "web-1"]
    cache.server("temp", store.get_resource_server_by_audience)  # third record: afresh
    assert cache.client("sensor-1", load) is not None
    assert loads == ["sensor-1", "web-1", "sensor-1"]


def test_concurrent_issuances_share_commits_and_every_token_is_recorded(
    setup: dict[str, Any],
) -> None:
    store: SqlAuthzStore = setup["store"]
    count = 12
    writer = gated_writer(store, count - 1)
    service = AuthzService(store, as_config(store), writer=writer)
    responses: list[Any] = []
    threads = [
        threading.Thread(target=lambda: responses.append(_issue(service))) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert len(responses) == count
    assert writer.commits == 2  # the first token's row, then the other 11 together
    for response in responses:
        assert store.get_token(response.record.cti) == response.record
    assert len(store.list_tokens("sensor-1")) == count
