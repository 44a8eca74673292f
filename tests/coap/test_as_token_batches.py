"""The AS's ``/token`` in batches: one worker-thread hop and one commit per batch.

Concurrent requests over real UDP sockets, each client with its own OSCORE context,
and the batch path checked against the path of one request at a time that it replaced
(parse, ``AuthzService.issue_token`` recording the token itself, the 2.01 or the error
map): the same error bytes for the same bad requests, the same answers and records for
good ones, and no token answered when the commit of its batch fails.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import aiocoap
import cbor2
import pytest

from keybound.coap.authz_server_site import (
    GATHER_TURNS,
    MAX_TOKEN_BATCH,
    TokenResource,
    build_site,
)
from keybound.coap.authz_service import AuthzService
from keybound.coap.errors import error_response
from keybound.core import cbor, cwt
from keybound.core.authz_server import parse_cbor_token_request
from keybound.core.authz_store import AuthzStoreError, IssuedToken
from keybound.core.errors import InvalidClient, KeyboundError
from keybound.core.keys import Key
from keybound.tools.authz_server.provision import add_clients, as_config
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bench.authz_server import client_security_context
from tests.helpers.authz import provision_counting, refuse_inserts
from tests.helpers.ports import free_port

ACE = 19
NOW = 1_700_000_000
GRANTS = {"temp": ["read"], "door": ["open"]}

#: Bad token requests from client ``sensor-1``, each refused with its own ACE error.
BAD_BODIES: dict[str, bytes] = {
    "not CBOR": b"\xff\x00",
    "truncated CBOR": b"\xa2\x05",
    "not a map": cbor2.dumps([5, "temp"]),
    "unknown audience": cbor2.dumps({5: "nowhere", 9: "read"}),
    "scope not granted": cbor2.dumps({5: "temp", 9: "write"}),
    "byte-string scope": cbor2.dumps({5: "temp", 9: b"\x01"}),
    "grant_type of the wrong type": cbor2.dumps({5: "temp", 9: "read", 33: [1]}),
    "req_cnf not a map": cbor2.dumps({5: "temp", 9: "read", 4: 7}),
    "req_cnf of another method": cbor2.dumps({5: "temp", 9: "read", 4: {9: b"x"}}),
    "ace_profile of the wrong type": cbor2.dumps({5: "temp", 9: "read", 38: "coap_oscore"}),
    "client_id of another client": cbor2.dumps({5: "temp", 9: "read", 24: "web-1"}),
    "no audience": cbor2.dumps({9: "read"}),
}
GOOD_BODY = cbor2.dumps({5: "temp", 9: "read"})
SENSOR = ("client", "sensor-1")


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def one_at_a_time(
    service: AuthzService, principal: tuple[str, str], payload: bytes, random_bytes: Any
) -> aiocoap.Message:
    """The path a request took before batches: the reference the batches are held to."""
    try:
        kind, client_id = principal
        if kind != "client":
            raise InvalidClient("this context does not belong to a client")
        request = parse_cbor_token_request(payload, client_id)
        response = service.issue_token(request, now=NOW, random_bytes=random_bytes)
    except KeyboundError as err:
        return error_response(err)
    return aiocoap.Message(
        code=aiocoap.CREATED, payload=cbor.dumps(response.to_cbor_map()), content_format=ACE
    )


@pytest.fixture
def setup(tmp_path: Path) -> Any:
    setup = provision_counting(f"sqlite:///{tmp_path / 'as.db'}")
    yield setup
    setup["store"].close()


def resource(store: SqlAuthzStore, random_bytes: Any = None) -> TokenResource:
    kwargs = {} if random_bytes is None else {"random_bytes": random_bytes}
    return TokenResource(AuthzService(store, as_config(store)), clock=lambda: NOW, **kwargs)


def rs_keys(setup: dict[str, Any]) -> list[Key]:
    bundle = setup["temp_bundle"]
    return [Key.from_jwk(bundle["token_key"]), Key.from_jwk(bundle["as_public_key"])]


def same_message(new: aiocoap.Message, old: aiocoap.Message) -> None:
    assert new.code == old.code
    assert new.opt.content_format == old.opt.content_format
    assert new.opt.size1 == old.opt.size1
    assert new.payload == old.payload


# ---- refusals: the same bytes as one request at a time ------------------------------------------


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_refusal_is_the_same_as_before(setup: dict[str, Any], case: str) -> None:
    store = setup["store"]
    old = one_at_a_time(AuthzService(store, as_config(store)), SENSOR, BAD_BODIES[case], None)
    assert old.code.is_successful() is False
    new = resource(store).answer_batch([(SENSOR, BAD_BODIES[case])])
    same_message(new[0], old)
    assert store.transactions == []  # nothing issued, nothing committed


def test_resource_server_context_is_refused_as_before(setup: dict[str, Any]) -> None:
    store = setup["store"]
    principal = ("rs", "temp-rs")
    old = one_at_a_time(AuthzService(store, as_config(store)), principal, GOOD_BODY, None)
    assert old.code == aiocoap.UNAUTHORIZED
    same_message(resource(store).answer_batch([(principal, GOOD_BODY)])[0], old)


def test_refusals_in_a_batch_keep_their_place(setup: dict[str, Any]) -> None:
    store = setup["store"]
    service = AuthzService(store, as_config(store))
    cases = sorted(BAD_BODIES)
    batch = []
    for case in cases:
        batch += [(SENSOR, GOOD_BODY), (SENSOR, BAD_BODIES[case])]
    answers = resource(store).answer_batch(batch)
    assert len(answers) == len(batch)
    for n, case in enumerate(cases):
        assert answers[2 * n].code == aiocoap.CREATED, case
        same_message(answers[2 * n + 1], one_at_a_time(service, SENSOR, BAD_BODIES[case], None))
    assert store.transactions == [len(cases)]  # the good ones, in one commit


# ---- issued tokens: one commit, the same answers ------------------------------------------------


def test_a_batch_commits_its_records_once(setup: dict[str, Any]) -> None:
    store = setup["store"]
    answers = resource(store).answer_batch([(SENSOR, GOOD_BODY)] * 5)
    assert store.transactions == [5]
    ctis = set()
    for answer in answers:
        assert answer.code == aiocoap.CREATED
        token = cwt.decode(cbor2.loads(answer.payload)[1], rs_keys(setup)).token
        assert store.get_token(token.cti) is not None
        ctis.add(token.cti)
    assert len(ctis) == 5


def test_issued_answer_is_the_same_as_before(tmp_path: Path, setup: dict[str, Any]) -> None:
    """With the same clock and random bytes, on two copies of one AS database, the answer
    and the record are those of the single-request path; only the ECDSA signature inside
    the token differs (its nonce is drawn by the signer), so the tokens are compared by
    their decoded claims."""
    store = setup["store"]
    shutil.copy(tmp_path / "as.db", tmp_path / "copy.db")
    copy = SqlAuthzStore.open(f"sqlite:///{tmp_path / 'copy.db'}")
    try:
        old = one_at_a_time(AuthzService(copy, as_config(copy)), SENSOR, GOOD_BODY, seeded(7))
        old_record = copy.get_token(
            cwt.decode(cbor2.loads(old.payload)[1], rs_keys(setup)).token.cti
        )
    finally:
        copy.close()
    new = resource(store, seeded(7)).answer_batch([(SENSOR, GOOD_BODY)])[0]
    assert (new.code, new.opt.content_format) == (old.code, old.opt.content_format)
    old_map, new_map = cbor2.loads(old.payload), cbor2.loads(new.payload)
    assert list(new_map) == list(old_map)  # the same parameters, in the same order
    old_token, new_token = old_map.pop(1), new_map.pop(1)
    assert new_map == old_map  # expires_in, cnf (the same OSCORE input material), profile
    assert len(new_token) == len(old_token)
    keys = rs_keys(setup)
    old_decoded, new_decoded = cwt.decode(old_token, keys), cwt.decode(new_token, keys)
    assert [layer.kind for layer in new_decoded.layers] == [
        layer.kind for layer in old_decoded.layers
    ]
    assert new_decoded.token == old_decoded.token
    record = store.get_token(new_decoded.token.cti)
    assert record is not None
    assert old_record is not None
    assert record.client_id == "sensor-1"
    assert record.audience == "temp"
    # the same row, but for the hash of the token's bytes (RFC 9770), as above
    assert replace(record, token_hash=None) == replace(old_record, token_hash=None)


class OneByOneStore:
    """The AS's SQL store without ``record_tokens``: rows recorded one at a time."""

    def __init__(self, store: SqlAuthzStore) -> None:
        self._store = store
        self.recorded: list[bytes] = []

    def record_token(self, token: IssuedToken) -> None:
        self.recorded.append(token.cti)
        self._store.record_token(token)

    def __getattr__(self, name: str) -> Any:
        if name == "record_tokens":
            raise AttributeError(name)
        return getattr(self._store, name)


def test_a_store_without_batches_records_each_row(setup: dict[str, Any]) -> None:
    store = setup["store"]
    one_by_one = OneByOneStore(store)
    service = AuthzService(cast(SqlAuthzStore, one_by_one), as_config(store))
    site = TokenResource(service, clock=lambda: NOW)
    answers = site.answer_batch([(SENSOR, GOOD_BODY)] * 3)
    assert [answer.code for answer in answers] == [aiocoap.CREATED] * 3
    assert len(one_by_one.recorded) == 3
    assert store.transactions == [1, 1, 1]  # one transaction per row
    for cti in one_by_one.recorded:
        assert store.get_token(cti) is not None


def test_batch_past_the_bound_waits_for_the_next(tmp_path: Path, setup: dict[str, Any]) -> None:
    """More requests at once than :data:`MAX_TOKEN_BATCH`: no batch is larger."""
    store = setup["store"]
    site = resource(store)

    async def main() -> list[aiocoap.Message]:
        requests = [site.answer(SENSOR, GOOD_BODY) for _ in range(MAX_TOKEN_BATCH + 3)]
        return list(await asyncio.gather(*requests))

    answers = asyncio.run(main())
    assert all(answer.code == aiocoap.CREATED for answer in answers)
    assert sum(store.transactions) == MAX_TOKEN_BATCH + 3
    assert max(store.transactions) <= MAX_TOKEN_BATCH
    assert len(store.transactions) == site.batches >= 2


def test_requests_on_their_way_join_the_batch_for_a_bounded_time(setup: dict[str, Any]) -> None:
    """A request arriving on every turn of the event loop keeps a batch gathering for
    :data:`GATHER_TURNS` turns at most; the requests after that form later batches."""
    store = setup["store"]
    site = resource(store)
    arrivals = 4 * GATHER_TURNS

    async def main() -> list[aiocoap.Message]:
        pending = [asyncio.ensure_future(site.answer(SENSOR, GOOD_BODY))]
        for _ in range(arrivals - 1):
            await asyncio.sleep(0)  # one request per turn of the loop
            pending.append(asyncio.ensure_future(site.answer(SENSOR, GOOD_BODY)))
        return list(await asyncio.gather(*pending))

    answers = asyncio.run(main())
    assert all(answer.code == aiocoap.CREATED for answer in answers)
    assert sum(store.transactions) == arrivals
    # it gathered, and stopped: one request per turn, and those before the first turn
    assert 2 <= store.transactions[0] <= GATHER_TURNS + 2
    assert len(store.transactions) >= 2


def test_a_lone_request_is_a_batch_of_one(setup: dict[str, Any]) -> None:
    store = setup["store"]
    site = resource(store)

    async def main() -> aiocoap.Message:
        return await site.answer(SENSOR, GOOD_BODY)

    assert asyncio.run(main()).code == aiocoap.CREATED
    assert store.transactions == [1]
    assert site.batches == 1


# ---- a commit that fails: none of its tokens is answered ----------------------------------------


def test_failed_commit_answers_no_token(setup: dict[str, Any]) -> None:
    store = setup["store"]
    service = AuthzService(store, as_config(store))
    refused = one_at_a_time(service, SENSOR, BAD_BODIES["unknown audience"], None)
    refuse_inserts(store)
    site = resource(store)
    batch = [(SENSOR, GOOD_BODY), (SENSOR, BAD_BODIES["unknown audience"]), (SENSOR, GOOD_BODY)]
    answers = site.answer_batch(batch)
    for n in (0, 2):
        assert answers[n].code == aiocoap.INTERNAL_SERVER_ERROR
        assert answers[n].payload == b""  # no token, no detail of the failure
    same_message(answers[1], refused)  # the refusal is unchanged
    assert store.transactions == [2]
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM keybound_tokens").scalar() == 0
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse_tokens")
    assert site.answer_batch([(SENSOR, GOOD_BODY)])[0].code == aiocoap.CREATED


def test_failed_commit_was_a_500_before_too(setup: dict[str, Any]) -> None:
    """One request at a time, a failed record raised a storage error, no ACE error: the
    site answered it 5.00 without a payload, as a batch now answers its tokens."""
    store = setup["store"]
    refuse_inserts(store)
    service = AuthzService(store, as_config(store))
    with pytest.raises(AuthzStoreError) as raised:
        one_at_a_time(service, SENSOR, GOOD_BODY, os.urandom)
    assert not isinstance(raised.value, KeyboundError)
    answer = resource(store).handle(SENSOR, GOOD_BODY)
    assert (answer.code, answer.payload) == (aiocoap.INTERNAL_SERVER_ERROR, b"")


# ---- over UDP: clients at once, each with its own context and socket ----------------------------


def test_concurrent_clients_over_oscore(tmp_path: Path, setup: dict[str, Any]) -> None:
    store = setup["store"]
    names = [f"dev-{n}" for n in range(6)]
    contexts = [new.oscore for new in add_clients(store, names, GRANTS)]
    port = free_port()
    base = f"coap://127.0.0.1:{port}"
    keys = rs_keys(setup)

    async def main() -> None:
        site, credentials = build_site(store, as_config(store), tmp_path / "state")
        server = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        clients = [await aiocoap.Context.create_client_context() for _ in names]
        try:
            for client, ctx in zip(clients, contexts, strict=True):
                assert ctx is not None
                client.client_credentials[f"{base}/*"] = client_security_context(ctx)

            async def post(client: aiocoap.Context, body: bytes) -> aiocoap.Message:
                message = aiocoap.Message(
                    code=aiocoap.POST, uri=f"{base}/token", payload=body, content_format=ACE
                )
                return await client.request(message).response

            for _round in range(3):
                bodies = [GOOD_BODY if n % 3 else BAD_BODIES["unknown audience"] for n in range(6)]
                answers = await asyncio.gather(
                    *(post(c, b) for c, b in zip(clients, bodies, strict=True))
                )
                for name, body, answer in zip(names, bodies, answers, strict=True):
                    if body is GOOD_BODY:
                        assert answer.code == aiocoap.CREATED, answer.payload
                        token = cwt.decode(cbor2.loads(answer.payload)[1], keys).token
                        record = store.get_token(token.cti)
                        assert record is not None
                        assert record.client_id == name
                    else:
                        assert answer.code == aiocoap.BAD_REQUEST
                        assert cbor2.loads(answer.payload)[30] == 1  # invalid_request
        finally:
            for client in clients:
                await client.shutdown()
            await server.shutdown()
            credentials.close()

    asyncio.run(main())
    assert sum(store.transactions) == 12  # every token issued over UDP, on record
