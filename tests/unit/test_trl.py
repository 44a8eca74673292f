"""RFC 9770 token revocation lists, in core: token hashes, the CWT layout, every query
and error of the TRL endpoint (with the "Cursor" extension), the requester's reading.

The interaction examples of RFC 9770 Appendix C are replayed update by update: each
response of the RFC is compared, decoded, with what keybound answers.
"""

from __future__ import annotations

import base64
import hashlib
import os

import cbor2
import pytest

from keybound.core import cbor, cwt, trl
from keybound.core.errors import DecodeError, InvalidRequest, InvalidToken, KeyboundError
from keybound.core.keys import Key
from keybound.core.numbers.trl import (
    CONTENT_FORMAT_ACE_TRL_CBOR,
    NamedInformationHash,
    ProblemDetail,
    TrlErrorId,
    TrlParameter,
)
from keybound.core.token import AccessToken
from keybound.core.trl import TrlLimits, TrlQueryError, UpdateCollection

FULL, DIFF, CURSOR, MORE = (int(p) for p in TrlParameter)

#: the ``access_token`` of RFC 9770 Figure 4 (a CWT: 61(16([protected, {}, ciphertext])))
RFC_ACCESS_TOKEN = bytes.fromhex(
    "d83dd0835820a3010a044c53796d6d6574726963313238054d99a0d7846e"
    "762c49ffe8a63e0ba05858b918a11fd81e438b7f973d9e2e119bcb22424b"
    "a0f38a80f27562f400ee1d0d6c0fdb559c02421fd384fc2ebe22d7071378"
    "b0ea7428fff157444d45f7e6afcda1aae5f6495830c58627087fc5b4974f"
    "319a8707a635dd643b"
)


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def h(name: str) -> bytes:
    """A stand-in token hash ``h(tN)`` of the RFC's examples."""
    return trl.response_token_hash(name.encode())


# -- numbers


def test_registry_numbers_are_rfc_9770s() -> None:
    assert CONTENT_FORMAT_ACE_TRL_CBOR == 262
    assert (FULL, DIFF, CURSOR, MORE) == (0, 1, 2, 3)
    assert [int(e) for e in TrlErrorId] == [0, 1, 2]
    assert int(NamedInformationHash.SHA_256) == 1  # RFC 6920 §9.4


# -- token hashes (§4)


def test_token_hash_is_rfc_6920_binary_format() -> None:
    value = trl.token_hash(b"input")
    assert len(value) == 33
    assert value[0] == 0x01  # sha-256 in the first byte (RFC 6920 §6)
    assert value[1:] == hashlib.sha256(b"input").digest()


def test_hash_input_of_the_rfc_cbor_response_is_the_base64url_text() -> None:
    """§4.2.1 with Figure 4: HASH_INPUT is base64url(BYTES), BYTES starting d8 3d d0."""
    text = trl.hash_input_of_response(RFC_ACCESS_TOKEN)
    assert text == b64u(RFC_ACCESS_TOKEN).encode()
    assert text.startswith(b"2D3Q")  # base64url of d8 3d d0: the two tags
    assert b"=" not in text


def test_a_cwt_has_one_hash_whether_the_response_was_cbor_or_json() -> None:
    """§4.2: in JSON a CWT is sent as base64url text, which is the CBOR case's input."""
    from_cbor = trl.response_token_hash(RFC_ACCESS_TOKEN)
    from_json = trl.response_token_hash(b64u(RFC_ACCESS_TOKEN))
    assert from_cbor == from_json


def test_a_jwt_hash_is_of_its_text() -> None:
    jwt = "eyJhbGciOiJub25lIn0.e30.sig"
    assert trl.response_token_hash(jwt) == trl.token_hash(jwt.encode())


def _verifier(expected: bytes):  # type: ignore[no-untyped-def]
    def verify(candidate: bytes) -> str:
        if candidate != expected:
            raise InvalidToken("does not verify")
        return "verified"

    return verify


def test_rs_hash_of_a_cwt_posted_as_bytes_matches_the_as() -> None:
    """§4.3.1 step 3: TOKEN_INFO verifies as it is (a CBOR response)."""
    result, value = trl.rs_cwt_token_hash(RFC_ACCESS_TOKEN, _verifier(RFC_ACCESS_TOKEN))
    assert result == "verified"
    assert value == trl.response_token_hash(RFC_ACCESS_TOKEN)


def test_rs_hash_of_a_cwt_posted_as_base64url_text_matches_the_as() -> None:
    """§4.3.1 steps 4-6: TOKEN_INFO is the base64url text of a JSON response."""
    token_info = b64u(RFC_ACCESS_TOKEN).encode()
    result, value = trl.rs_cwt_token_hash(token_info, _verifier(RFC_ACCESS_TOKEN))
    assert result == "verified"
    assert value == trl.response_token_hash(b64u(RFC_ACCESS_TOKEN))
    assert value == trl.response_token_hash(RFC_ACCESS_TOKEN)


@pytest.mark.parametrize(
    "token_info",
    [
        b"not a token",
        base64.urlsafe_b64encode(RFC_ACCESS_TOKEN[:-1]),  # padded: not what the AS sends
        b64u(RFC_ACCESS_TOKEN).encode(),  # the base64url of another token
    ],
)
def test_rs_hash_refuses_what_verifies_in_neither_reading(token_info: bytes) -> None:
    assert len(RFC_ACCESS_TOKEN[:-1]) % 3  # so that its base64 has padding
    with pytest.raises(InvalidToken, match="does not verify"):
        trl.rs_cwt_token_hash(token_info, _verifier(RFC_ACCESS_TOKEN[:-1]))


def test_rs_hash_is_bounded_before_any_decoding() -> None:
    calls: list[bytes] = []

    def verify(candidate: bytes) -> None:
        calls.append(candidate)

    with pytest.raises(InvalidToken, match="larger than"):
        trl.rs_cwt_token_hash(b"A" * (trl.MAX_TOKEN_BYTES + 1), verify)
    assert calls == []


def test_rs_keeps_both_hashes_of_a_jwt() -> None:
    """§4.3.2 steps 3 and 4: as a JSON response sent it, and as a CBOR one would."""
    jwt = b"eyJhbGciOiJFUzI1NiJ9.eyJhdWQiOiJycyJ9.c2ln"
    as_json, as_cbor = trl.rs_jwt_token_hashes(jwt)
    assert as_json == trl.response_token_hash(jwt.decode())
    assert as_cbor == trl.response_token_hash(jwt)
    assert as_json != as_cbor


# -- the CWT layout (§3, §7.1)


def test_the_rfc_example_token_has_the_required_layout() -> None:
    assert trl.check_cwt_layout(RFC_ACCESS_TOKEN) == 16


def _tagged(inner_head: bytes, structure: list[object]) -> bytes:
    return b"\xd8\x3d" + inner_head + cbor2.dumps(structure)


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (RFC_ACCESS_TOKEN[2:], "CWT tag 61"),  # the COSE tag alone
        (b"\xd9\x00\x3d" + RFC_ACCESS_TOKEN[2:], "CWT tag 61"),  # tag 61 in a long head
        (b"\xd8\x3d\xd8\x10" + RFC_ACCESS_TOKEN[3:], "shortest encoding"),  # 16 as d8 10
        (b"\xd8\x3d" + RFC_ACCESS_TOKEN[3:], "shortest encoding"),  # no COSE tag
        (b"\xd8\x3d\xd8\x3d" + RFC_ACCESS_TOKEN[2:], "shortest encoding"),  # tagged twice
        (_tagged(b"\xd0", [b"\xa1\x01\x0a", {4: b"kid"}, b"ct"]), "unprotected"),
        (_tagged(b"\xd2", [b"\xa1\x01\x26", {}, b"payload"]), "array of 4"),
        (_tagged(b"\xd8\x62", [b"", {}, b"", []]), "recipients or signers"),
        (_tagged(b"\xd0", ["text", {}, b"ct"]), "byte string"),
        (b"\xd8\x3d\xd0\x83\x58", "malformed"),
    ],
)
def test_tokens_without_the_required_layout_are_refused(token: bytes, why: str) -> None:
    with pytest.raises(InvalidToken, match=why):
        trl.check_cwt_layout(token)


# -- the endpoint: errors (§6.1, §6.3)


def _problem(err: TrlQueryError) -> dict[int, object]:
    details = cbor.loads(err.problem_details())
    assert isinstance(details, dict)
    return details


def _error(query: list[str], collection: UpdateCollection, limits: TrlLimits) -> TrlQueryError:
    with pytest.raises(TrlQueryError) as caught:
        trl.answer(query, frozenset, collection, limits)
    err = caught.value
    assert isinstance(err, InvalidRequest)  # 4.00 (Bad Request)
    assert isinstance(err, KeyboundError)
    return err


LIMITS = TrlLimits(max_n=10, max_diff_batch=5, max_index=2**32 - 1)


def _collection(
    *updates: tuple[list[str], list[str]], limits: TrlLimits = LIMITS
) -> UpdateCollection:
    collection = UpdateCollection()
    for removed, added in updates:
        collection = collection.add([h(t) for t in removed], [h(t) for t in added], limits)
    return collection


def test_the_rfc_error_example_has_this_shape() -> None:
    """Figure 5: title, detail and ace-trl-error {error-id, cursor}."""
    err = TrlQueryError(
        TrlErrorId.INVALID_PARAMETER_VALUE,
        "Invalid value for 'cursor': -53",
        cursor=42,
        has_cursor=True,
    )
    assert _problem(err) == {
        ProblemDetail.TITLE: "Invalid parameter value",
        ProblemDetail.DETAIL: "Invalid value for 'cursor': -53",
        ProblemDetail.ACE_TRL_ERROR: {0: 0, 1: 42},
    }


@pytest.mark.parametrize("value", ["-1", "abc", "", "1.5", "+3", "\u0663", "9" * 21])
def test_a_diff_that_is_not_an_unsigned_integer_is_error_0_without_cursor(value: str) -> None:
    for query in ([f"diff={value}"], [f"diff={value}", "cursor=0"], [f"diff={value}", "cursor=x"]):
        err = _error(query, _collection((["t0"], [])), LIMITS)
        assert _problem(err)[ProblemDetail.ACE_TRL_ERROR] == {0: 0}


def test_a_cursor_without_diff_is_error_1_without_cursor() -> None:
    for cursor in ("0", "7", "-53"):
        err = _error([f"cursor={cursor}"], _collection(([], ["t1"])), LIMITS)
        assert _problem(err)[ProblemDetail.ACE_TRL_ERROR] == {0: 1}


def test_an_invalid_cursor_is_error_0_with_null_for_an_empty_collection() -> None:
    err = _error(["diff=3", "cursor=-53"], UpdateCollection(), LIMITS)
    assert _problem(err)[ProblemDetail.ACE_TRL_ERROR] == {0: 0, 1: None}


def test_an_invalid_cursor_is_error_0_with_the_last_index() -> None:
    collection = _collection(([], ["t1"]), ([], ["t2"]), (["t1"], []))
    err = _error(["diff=3", "cursor=-53"], collection, LIMITS)
    assert _problem(err)[ProblemDetail.ACE_TRL_ERROR] == {0: 0, 1: 2}


def test_a_cursor_above_max_index_is_error_0_with_the_last_index() -> None:
    limits = TrlLimits(max_n=3, max_diff_batch=2, max_index=7)
    collection = _collection(([], ["t1"]), limits=limits)
    err = _error(["diff=1", "cursor=8"], collection, limits)
    assert _problem(err)[ProblemDetail.ACE_TRL_ERROR] == {0: 0, 1: 0}


def test_a_cursor_beyond_the_last_index_is_error_2_before_a_wrap_around() -> None:
    collection = _collection(([], ["t1"]), ([], ["t2"]))
    err = _error(["diff=0", "cursor=5"], collection, LIMITS)
    assert _problem(err)[ProblemDetail.ACE_TRL_ERROR] == {0: 2}


def test_a_cursor_beyond_the_last_index_is_answered_after_a_wrap_around() -> None:
    limits = TrlLimits(max_n=3, max_diff_batch=3, max_index=4)
    collection = _collection(*[([], [f"t{n}"]) for n in range(7)], limits=limits)
    assert [item.index for item in collection.items] == [4, 0, 1]
    assert collection.wrapped
    # index 3 was evicted, 4 (the one after it) is kept: Case B resumes from 4
    payload = cbor.loads(trl.answer(["diff=0", "cursor=3"], frozenset, collection, limits))
    assert payload == {
        DIFF: [[[], [h("t6")]], [[], [h("t5")]], [[], [h("t4")]]],
        CURSOR: 1,
        MORE: False,
    }


def test_a_repeated_parameter_is_an_invalid_value() -> None:
    err = _error(["diff=1", "diff=2"], UpdateCollection(), LIMITS)
    assert _problem(err)[ProblemDetail.ACE_TRL_ERROR] == {0: 0}


def test_unknown_query_parameters_are_ignored() -> None:
    collection = _collection(([], ["t1"]))
    payload = trl.answer(["c.pmax=30", "x", "diffx=1"], lambda: [h("t1")], collection, LIMITS)
    assert cbor.loads(payload) == {FULL: [h("t1")], CURSOR: 0}


# -- the endpoint: answers (§7, §8)


def test_full_query_of_an_empty_collection_has_cursor_null() -> None:
    payload = trl.answer([], frozenset, UpdateCollection(), LIMITS)
    assert cbor.loads(payload) == {FULL: [], CURSOR: None}


def test_diff_query_of_an_empty_collection_with_or_without_cursor() -> None:
    for query in (["diff=3"], ["diff=3", "cursor=0"], ["diff=0", "cursor=99"]):
        payload = trl.answer(query, frozenset, UpdateCollection(), LIMITS)
        assert cbor.loads(payload) == {DIFF: [], CURSOR: None, MORE: False}


def test_case_a_items_after_the_cursor_are_lost() -> None:
    limits = TrlLimits(max_n=3, max_diff_batch=3)
    collection = _collection(*[([], [f"t{n}"]) for n in range(6)], limits=limits)
    assert [item.index for item in collection.items] == [3, 4, 5]
    payload = trl.answer(["diff=0", "cursor=1"], frozenset, collection, limits)
    assert cbor.loads(payload) == {DIFF: [], CURSOR: None, MORE: True}
    update = trl.read_response(payload)
    assert update.needs_full_query


def test_case_b_the_cursor_item_is_gone_but_the_next_is_there() -> None:
    limits = TrlLimits(max_n=3, max_diff_batch=3)
    collection = _collection(*[([], [f"t{n}"]) for n in range(5)], limits=limits)
    assert [item.index for item in collection.items] == [2, 3, 4]
    payload = trl.answer(["diff=0", "cursor=1"], frozenset, collection, limits)
    assert cbor.loads(payload) == {
        DIFF: [[[], [h("t4")]], [[], [h("t3")]], [[], [h("t2")]]],
        CURSOR: 4,
        MORE: False,
    }


def test_a_diff_without_cursor_above_the_batch_sends_the_eldest_first() -> None:
    """§8.2.2: U > MAX_DIFF_BATCH gives the first L of the U most recent, more=true."""
    limits = TrlLimits(max_n=10, max_diff_batch=2)
    collection = _collection(*[([], [f"t{n}"]) for n in range(5)], limits=limits)
    payload = cbor.loads(trl.answer(["diff=4"], frozenset, collection, limits))
    assert payload == {DIFF: [[[], [h("t2")]], [[], [h("t1")]]], CURSOR: 2, MORE: True}
    follow = cbor.loads(trl.answer(["diff=4", "cursor=2"], frozenset, collection, limits))
    assert follow == {DIFF: [[[], [h("t4")]], [[], [h("t3")]]], CURSOR: 4, MORE: False}


def test_a_diff_larger_than_max_n_or_zero_means_max_n() -> None:
    limits = TrlLimits(max_n=3, max_diff_batch=3)
    collection = _collection(*[([], [f"t{n}"]) for n in range(4)], limits=limits)
    for value in ("0", "3", "1000"):
        payload = cbor.loads(trl.answer([f"diff={value}"], frozenset, collection, limits))
        assert payload[DIFF] == [[[], [h("t3")]], [[], [h("t2")]], [[], [h("t1")]]]


def test_an_update_that_does_not_touch_the_requester_adds_no_item() -> None:
    collection = _collection(([], ["t1"]))
    assert collection.add([], [], LIMITS) is collection


def test_limits_are_checked() -> None:
    for bad in ({"max_n": 0}, {"max_n": 10, "max_diff_batch": 11}, {"max_n": 10, "max_index": 8}):
        with pytest.raises(ValueError, match="MAX_"):
            TrlLimits(**bad)


# -- RFC 9770 Appendix C, replayed


def test_rfc_c4_diff_query_with_observe_and_cursor() -> None:
    """Appendix C.4 (Figure 14): MAX_N 10, MAX_DIFF_BATCH 5, diff=3."""
    limits = TrlLimits(max_n=10, max_diff_batch=5)
    collection = UpdateCollection()

    def notify() -> object:
        return cbor.loads(trl.answer(["diff=3"], frozenset, collection, limits))

    assert notify() == {DIFF: [], CURSOR: None, MORE: False}
    expected = [
        ((), ("t1",), {DIFF: [[[], [h("t1")]]], CURSOR: 0, MORE: False}),
        ((), ("t2",), {DIFF: [[[], [h("t2")]], [[], [h("t1")]]], CURSOR: 1, MORE: False}),
        (
            ("t1",),
            (),
            {DIFF: [[[h("t1")], []], [[], [h("t2")]], [[], [h("t1")]]], CURSOR: 2, MORE: False},
        ),
        (
            ("t2",),
            (),
            {DIFF: [[[h("t2")], []], [[h("t1")], []], [[], [h("t2")]]], CURSOR: 3, MORE: False},
        ),
    ]
    for removed, added, response in expected:
        collection = collection.add([h(t) for t in removed], [h(t) for t in added], limits)
        assert notify() == response
    assert notify() == expected[-1][2]  # the GET without Observe
    follow = cbor.loads(trl.answer(["diff=3", "cursor=3"], frozenset, collection, limits))
    assert follow == {DIFF: [], CURSOR: 3, MORE: False}


def test_rfc_c5_full_query_with_observe_plus_diff_query_with_cursor() -> None:
    """Appendix C.5 (Figure 15): eleven updates, MAX_N 10, then diff=8 from cursor 2."""
    limits = TrlLimits(max_n=10, max_diff_batch=5)
    trl_now: set[bytes] = set()
    collection = UpdateCollection()

    def full() -> object:
        return cbor.loads(trl.answer([], lambda: trl_now, collection, limits))

    assert full() == {FULL: [], CURSOR: None}
    steps: list[tuple[tuple[str, ...], tuple[str, ...], list[str], int]] = [
        ((), ("t1",), ["t1"], 0),
        ((), ("t2",), ["t1", "t2"], 1),
        (("t1",), (), ["t2"], 2),
        (("t2",), (), [], 3),
        ((), ("t3",), ["t3"], 4),
        ((), ("t4",), ["t3", "t4"], 5),
        (("t3",), (), ["t4"], 6),
        (("t4",), (), [], 7),
        ((), ("t5", "t6"), ["t5", "t6"], 8),
        (("t5",), (), ["t6"], 9),
        (("t6",), (), [], 10),
    ]
    for removed, added, now, cursor in steps:
        trl_now.difference_update(h(t) for t in removed)
        trl_now.update(h(t) for t in added)
        collection = collection.add([h(t) for t in removed], [h(t) for t in added], limits)
        assert full() == {FULL: sorted(h(t) for t in now), CURSOR: cursor}
    first = cbor.loads(trl.answer(["diff=8", "cursor=2"], frozenset, collection, limits))
    assert first == {
        DIFF: [
            [[h("t4")], []],
            [[h("t3")], []],
            [[], [h("t4")]],
            [[], [h("t3")]],
            [[h("t2")], []],
        ],
        CURSOR: 7,
        MORE: True,
    }
    second = cbor.loads(trl.answer(["diff=8", "cursor=7"], frozenset, collection, limits))
    assert second == {
        DIFF: [[[h("t6")], []], [[h("t5")], []], [[], sorted([h("t5"), h("t6")])]],
        CURSOR: 10,
        MORE: False,
    }


# -- the requester (§10.1)


def test_read_response_of_a_full_set() -> None:
    update = trl.read_response(cbor.dumps({FULL: [h("t1"), h("t2")], CURSOR: 4}))
    assert update.full_set == frozenset({h("t1"), h("t2")})
    assert update.revoked == {h("t1"), h("t2")}
    assert update.cursor == 4


def test_read_response_of_diffs_applies_them_oldest_first() -> None:
    payload = cbor.dumps(
        {DIFF: [[[h("t1")], []], [[], [h("t2")]], [[], [h("t1")]]], CURSOR: 2, MORE: False}
    )
    update = trl.read_response(payload)
    assert update.diffs[0] == (frozenset(), frozenset({h("t1")}))
    assert update.revoked == {h("t2")}  # t1 was added, then removed (it expired)
    assert (update.cursor, update.more, update.needs_full_query) == (2, False, False)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {},
        {FULL: [], DIFF: []},
        {FULL: ["text"]},
        {FULL: [b""]},
        {FULL: [b"x" * 66]},
        {DIFF: [[[], []], [[]]]},
        {DIFF: {}},
        {FULL: [], CURSOR: -1},
        {FULL: [], CURSOR: "0"},
        {DIFF: [], MORE: 1},
    ],
)
def test_read_response_refuses_malformed_payloads(payload: object) -> None:
    with pytest.raises(DecodeError):
        trl.read_response(cbor2.dumps(payload))


def test_read_response_is_bounded() -> None:
    too_many = cbor2.dumps({FULL: [b"\x01" + bytes(32)] * (trl.MAX_RESPONSE_BYTES // 35 + 1)})
    assert len(too_many) > trl.MAX_RESPONSE_BYTES
    with pytest.raises(KeyboundError, match="exceeds"):
        trl.read_response(too_many)


def test_a_full_answer_as_large_as_what_an_rs_keeps_is_read() -> None:
    """The bound leaves room for a full list of KnownHashes' default capacity."""
    capacity = trl.KnownHashes().capacity
    hashes = [trl.token_hash(n.to_bytes(4, "big")) for n in range(capacity)]
    update = trl.read_response(trl.full_query(hashes, UpdateCollection()))
    assert update.full_set is not None
    assert len(update.full_set) == capacity


# -- what a registered device keeps (§10.1)


def test_known_hashes_are_kept_after_they_leave_the_list() -> None:
    known = trl.KnownHashes(capacity=3)
    revoked, numbers = known.apply(trl.read_response(cbor.dumps({FULL: [h("t1")], CURSOR: 0})))
    assert revoked == {h("t1")}
    assert numbers == []
    left = cbor.dumps({DIFF: [[[h("t1")], []]], CURSOR: 1, MORE: False})
    assert known.apply(trl.read_response(left))[0] == frozenset()
    assert h("t1") in known  # a late upload of t1 is still refused
    assert known.cursor == 1


def test_known_hashes_drop_the_earliest_first_and_return_its_sequence_number() -> None:
    known = trl.KnownHashes(capacity=2)
    assert known.add(h("t1"), 7) is None
    assert known.add(h("t2")) is None
    assert known.add(h("t3")) == 7  # t1 goes first; the RS raises its highest expired to 7
    assert h("t1") not in known
    assert len(known) == 2
    assert known.forget(h("t2")) is None
    assert known.forget(h("t9")) is None


def test_known_hashes_round_trip_and_refuse_a_damaged_state() -> None:
    known = trl.KnownHashes()
    known.add(h("t1"), 3)
    known.add(h("t2"))
    known.cursor = 5
    again = trl.KnownHashes.from_json(known.to_json())
    assert again.to_json() == known.to_json()
    for bad in (
        [],
        {"cursor": -1},
        {"hashes": {}},
        {"hashes": [["zz", None]]},
        {"hashes": [[h("t1").hex(), -2]]},
        {"hashes": [["00"]]},
    ):
        with pytest.raises(DecodeError):
            trl.KnownHashes.from_json(bad)


# -- catching up (§8.2.3)


def _drive(
    cursor: int | None, answers: list[dict[int, object]], *, full: bool = False
) -> list[tuple[str, ...]]:
    """The queries :func:`trl.catch_up` asks when the AS answers ``answers`` in turn."""
    flow = trl.catch_up(cursor, full=full)
    asked = [next(flow)]
    for payload in answers:
        try:
            asked.append(flow.send(trl.read_response(cbor.dumps(payload))))
        except StopIteration:
            return asked
    raise AssertionError(f"the flow asked more than {len(answers)} queries: {asked}")


def test_catch_up_without_a_cursor_is_one_full_query() -> None:
    assert _drive(None, [{FULL: [], CURSOR: 3}]) == [()]


def test_catch_up_when_told_to_is_one_full_query_even_with_a_cursor() -> None:
    assert _drive(2, [{FULL: [], CURSOR: 3}], full=True) == [()]


def test_catch_up_from_a_cursor_follows_more() -> None:
    asked = _drive(
        4,
        [
            {DIFF: [[[], [h("t1")]]], CURSOR: 5, MORE: True},
            {DIFF: [[[], [h("t2")]]], CURSOR: 6, MORE: False},
        ],
    )
    assert asked == [("diff=0", "cursor=4"), ("diff=0", "cursor=5")]


def test_catch_up_asks_a_full_query_when_updates_were_lost() -> None:
    asked = _drive(4, [{DIFF: [], CURSOR: None, MORE: True}, {FULL: [], CURSOR: 9}])
    assert asked == [("diff=0", "cursor=4"), ()]


def test_catch_up_asks_a_full_query_when_the_as_has_no_update_left() -> None:
    asked = _drive(4, [{DIFF: [], CURSOR: None, MORE: False}, {FULL: [], CURSOR: None}])
    assert asked == [("diff=0", "cursor=4"), ()]


def test_catch_up_is_bounded() -> None:
    """An AS that always says ``more`` gets MAX_CATCH_UP_QUERIES diff queries, no more."""
    more = {DIFF: [[[], [h("t")]]], CURSOR: 1, MORE: True}
    asked = _drive(0, [more] * trl.MAX_CATCH_UP_QUERIES)
    assert len(asked) == trl.MAX_CATCH_UP_QUERIES
    assert asked[-1] == ("diff=0", "cursor=1")


@pytest.mark.parametrize("kind", ["sign1", "mac0", "encrypt0", "nested"])
def test_protect_all_gives_the_layout_and_decodes(kind: str) -> None:
    """What the AS issues (RFC 9770 §3) is still read by the CWT decoder."""
    signing = Key.generate_ec2(kid=b"as")
    secret = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"rs-key")
    mac_key = Key.generate_symmetric(32, random_bytes=os.urandom, kid=b"m")
    protection: cwt.Protection = {
        "sign1": cwt.Sign1(signing),
        "mac0": cwt.Mac0(mac_key),
        "encrypt0": cwt.Encrypt0(secret),
        "nested": cwt.Nested(cwt.Sign1(signing), cwt.Encrypt0(secret)),
    }[kind]
    token = AccessToken(iss="as", aud=("rs",), exp=2**31)
    raw = cwt.encode(token, protection, cwt_tag=True, protect_all=True, random_bytes=os.urandom)
    assert trl.check_cwt_layout(raw) == {"sign1": 18, "mac0": 17}.get(kind, 16)
    decoded = cwt.decode(raw, [signing.public_key(), secret, mac_key])
    assert decoded.token.aud == ("rs",)
    assert decoded.cwt_tag
    assert all(layer.kid is not None for layer in decoded.layers)  # read from protected
