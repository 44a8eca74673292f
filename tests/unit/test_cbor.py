"""Bounded CBOR loads and deterministic dumps (RFC 8949)."""

from __future__ import annotations

import contextlib
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keybound.core import cbor
from keybound.core.errors import DecodeError, KeyboundError, PayloadTooLarge

# ---- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opener", "closer"),
    [
        (b"\x81", b"\x00"),  # [[[...0...]]]
        (b"\x9f", b""),  # indefinite arrays, never closed
        (b"\xa1\x00", b"\x00"),  # {0: {0: ...}}
        (b"\xc6", b"\x00"),  # tag 6 (unassigned) around tag 6 ...
    ],
    ids=["arrays", "indefinite arrays", "maps", "tags"],
)
def test_deep_nesting_refused_without_recursion(opener: bytes, closer: bytes) -> None:
    data = opener * 10_000 + closer
    with pytest.raises(DecodeError):
        cbor.loads(data, max_size=len(data))


def test_nesting_limit_is_exact() -> None:
    ok = b"\x81" * cbor.DEFAULT_MAX_DEPTH + b"\x00"
    assert cbor.loads(ok) is not None
    with pytest.raises(DecodeError):
        cbor.loads(b"\x81" + ok)
    assert cbor.loads(b"\x81" * 3 + b"\x00", max_depth=3) == [[[0]]]
    with pytest.raises(DecodeError):
        cbor.loads(b"\x81" * 4 + b"\x00", max_depth=3)


def test_one_mebibyte_refused() -> None:
    data = cbor2.dumps(bytes(1024 * 1024))
    with pytest.raises(PayloadTooLarge):
        cbor.loads(data)
    with pytest.raises(PayloadTooLarge):
        cbor.check(data)


def test_size_limit_is_exact() -> None:
    data = cbor2.dumps(bytes(100))
    assert cbor.loads(data, max_size=len(data)) == bytes(100)
    with pytest.raises(PayloadTooLarge):
        cbor.loads(data, max_size=len(data) - 1)


@pytest.mark.parametrize(
    "data",
    [
        b"\x5a\xff\xff\xff\xff",  # byte string claiming 4 GiB
        b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00",  # array claiming 2**32 items
        b"\xbb\x00\x00\x00\x01\x00\x00\x00\x00",  # map claiming 2**32 pairs
        b"\x7a\x00\x01\x00\x00abc",  # text string longer than the input
    ],
    ids=["bytes", "array", "map", "text"],
)
def test_lengths_beyond_the_input_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        cbor.loads(data)


# ---- well-formedness ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        bytes.fromhex("a2010102"),  # {1: 1, 2: ...} truncated
        bytes.fromhex("82 01"),
        bytes.fromhex("19 01"),
        bytes.fromhex("5f 41 61"),  # indefinite bytes without a break
        bytes.fromhex("9f 01"),
        b"",
    ],
    ids=["map", "array", "uint16", "indefinite bytes", "indefinite array", "empty"],
)
def test_truncated(data: bytes) -> None:
    with pytest.raises(DecodeError):
        cbor.loads(data)


def test_trailing_bytes_refused() -> None:
    with pytest.raises(DecodeError):
        cbor.loads(b"\x01\x02")
    with pytest.raises(DecodeError):
        cbor.loads(cbor2.dumps({1: 2}) + b"\x00")


@pytest.mark.parametrize(
    "data",
    [
        "a2 01 01 01 02",  # {1: 1, 1: 2}
        "a2 61 61 01 61 61 02",  # {"a": 1, "a": 2}
        "a2 41 00 01 41 00 02",  # {h'00': 1, h'00': 2}
        "a3 01 01 02 02 01 03",  # a duplicate after another key
        "bf 01 01 01 02 ff",  # indefinite-length map
        "a1 00 a2 05 00 05 01",  # nested map
        "a2 01 01 f9 3c 00 02",  # {1: 1, 1.0: 2}: one key once in a Python dict
        "a2 01 01 f5 02",  # {1: 1, true: 2}: likewise
        "a2 00 01 f4 02",  # {0: 1, false: 2}: likewise
    ],
)
def test_duplicate_map_keys_refused(data: str) -> None:
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex(data))


def test_distinct_keys_of_different_types_accepted() -> None:
    assert cbor.loads(bytes.fromhex("a3 01 01 61 31 02 41 31 03")) == {1: 1, "1": 2, b"1": 3}
    assert cbor.loads(bytes.fromhex("a2 01 01 20 02")) == {1: 1, -1: 2}


@pytest.mark.parametrize(
    "data",
    ["a1 81 01 00", "a1 a0 00", "a1 c1 00 00"],
    ids=["array key", "map key", "tagged key"],
)
def test_container_and_tagged_map_keys_refused(data: str) -> None:
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex(data))


@pytest.mark.parametrize(
    ("tag", "content"),
    [
        (0, "2013-03-21T20:04:00Z"),
        (1, 1363896240),
        (2, b"\x01\x00"),
        (3, b"\x01\x00"),
        (4, [-1, 1]),
        (28, [1]),
        (29, 0),
        (30, [1, 3]),
        (35, "a+"),
        (37, bytes(16)),
        (258, [1, 2]),
        (55799, 1),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
def test_semantic_tags_refused(tag: int, content: Any) -> None:
    data = cbor2.dumps(cbor2.CBORTag(tag, content))
    with pytest.raises(DecodeError):
        cbor.loads(data)
    with pytest.raises(DecodeError):
        cbor.loads(cbor2.dumps([1, {2: cbor2.CBORTag(tag, content)}]))


def test_shared_reference_is_refused() -> None:
    """Tag 28 marks a shareable value and tag 29 refers back to it (value sharing)."""
    data = bytes.fromhex("82 d8 1c 81 01 d8 1d 00")  # [28([1]), 29(0)]
    with pytest.raises(DecodeError):
        cbor.loads(data)


def test_uninterpreted_tags_pass_through() -> None:
    value = cbor.loads(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"x", b"y"])))
    assert value == cbor2.CBORTag(18, [b"", {}, b"x", b"y"])


@pytest.mark.parametrize(
    "data",
    [
        "1c",  # reserved additional information 28
        "3f",  # indefinite-length negative integer
        "ff",  # a break outside an indefinite container
        "81 ff",  # a break inside a definite array
        "df 00",  # indefinite-length tag
        "f8 10",  # simple value 16 in two bytes
        "5f 61 61 ff",  # text chunk inside indefinite bytes
        "5f 5f 41 00 ff ff",  # indefinite chunk inside indefinite bytes
        "bf 01 ff",  # indefinite map with an odd number of items
        "a1 01",  # map missing its value
    ],
)
def test_malformed_refused(data: str) -> None:
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex(data))


def test_indefinite_lengths_accepted_within_limits() -> None:
    assert cbor.loads(bytes.fromhex("9f 01 02 03 ff")) == [1, 2, 3]
    assert cbor.loads(bytes.fromhex("bf 61 61 01 61 62 9f ff ff")) == {"a": 1, "b": []}
    assert cbor.loads(bytes.fromhex("5f 42 01 02 41 03 ff")) == b"\x01\x02\x03"
    assert cbor.loads(bytes.fromhex("7f 62 61 62 61 63 ff")) == "abc"
    assert cbor.loads(bytes.fromhex("9f 9f 9f ff ff ff")) == [[[]]]
    nested = b"\x9f" * cbor.DEFAULT_MAX_DEPTH + b"\xff" * cbor.DEFAULT_MAX_DEPTH
    assert cbor.loads(nested) is not None


@pytest.mark.parametrize(
    ("data", "value"),
    [
        ("82 9f ff 01", [[], 1]),
        ("81 9f ff", [[]]),
        ("a1 01 9f ff", {1: []}),
        ("bf 01 bf 01 02 ff ff", {1: {1: 2}}),
        ("a2 01 5f 41 00 ff 02 7f 60 ff", {1: b"\x00", 2: ""}),
        ("c6 9f 01 ff", cbor2.CBORTag(6, [1])),
        ("81 9f 9f 9f ff ff ff", [[[[]]]]),
    ],
)
def test_indefinite_container_inside_another(data: str, value: Any) -> None:
    """An indefinite-length item counts as one item of the container around it."""
    assert cbor.loads(bytes.fromhex(data)) == value


def test_indefinite_container_does_not_count_twice() -> None:
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex("82 9f ff"))  # the array still needs its second item
    with pytest.raises(DecodeError):
        cbor.loads(bytes.fromhex("bf 9f ff 01 ff"))  # an indefinite array as a map key


def test_non_bytes_input_refused() -> None:
    with pytest.raises(DecodeError):
        cbor.loads("a0")  # type: ignore[arg-type]


def test_rfc8949_appendix_a_examples() -> None:
    """A few decoding examples of RFC 8949 Appendix A."""
    examples = {
        "00": 0,
        "1903e8": 1000,
        "3903e7": -1000,
        "1bffffffffffffffff": 18446744073709551615,
        "3bffffffffffffffff": -18446744073709551616,
        "f93e00": 1.5,
        "fb7e37e43c8800759c": 1.0e300,
        "f4": False,
        "f6": None,
        "4401020304": b"\x01\x02\x03\x04",
        "62c3bc": "\u00fc",
        "8301820203820405": [1, [2, 3], [4, 5]],
        "a26161016162820203": {"a": 1, "b": [2, 3]},
    }
    for hex_data, value in examples.items():
        assert cbor.loads(bytes.fromhex(hex_data)) == value, hex_data


# ---- deterministic dumps ------------------------------------------------------------------------


def test_rfc8949_core_deterministic_key_order() -> None:
    """RFC 8949 §4.2.1: keys sorted by the bytewise order of their deterministic encodings."""
    value = {False: 8, (-1,): 7, (100,): 6, "aa": 5, "z": 4, -1: 3, 100: 2, 10: 1}
    encoded = cbor.dumps(value)
    expected_keys = ["0a", "1864", "20", "617a", "626161", "811864", "8120", "f4"]
    body = encoded[1:]
    for key_hex, item in zip(expected_keys, [1, 2, 3, 4, 5, 6, 7, 8], strict=True):
        prefix = bytes.fromhex(key_hex) + cbor2.dumps(item)
        assert body.startswith(prefix), f"expected key {key_hex} next"
        body = body[len(prefix) :]
    assert body == b""


def test_dumps_sorts_nested_maps_and_is_stable() -> None:
    one = cbor.dumps({"b": {2: 0, 1: 0}, "a": [{"y": 1, "x": 2}]})
    two = cbor.dumps({"a": [{"x": 2, "y": 1}], "b": {1: 0, 2: 0}})
    assert one == two == bytes.fromhex("a2 61 61 81 a2 61 78 02 61 79 01 61 62 a2 01 00 02 00")


def test_dumps_uses_shortest_heads_and_definite_lengths() -> None:
    assert cbor.dumps(23) == b"\x17"
    assert cbor.dumps(24) == b"\x18\x18"
    assert cbor.dumps(-25) == b"\x38\x18"
    assert cbor.dumps(b"\x00" * 24) == b"\x58\x18" + b"\x00" * 24
    assert cbor.dumps([1] * 24)[:2] == b"\x98\x18"


def test_dumps_ordered_keeps_caller_order() -> None:
    assert cbor.dumps_ordered({2: 0, 1: 0}) == bytes.fromhex("a2 02 00 01 00")
    assert cbor.dumps({2: 0, 1: 0}) == bytes.fromhex("a2 01 00 02 00")


# ---- properties -------------------------------------------------------------------------------

_keys = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.text(max_size=10),
    st.binary(max_size=10),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.binary(max_size=30),
)
_values = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(_keys, children, max_size=5),
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_loads_dumps_round_trip(value: Any) -> None:
    encoded = cbor.dumps(value)
    assert cbor.loads(encoded, max_depth=64) == value
    assert cbor.dumps(cbor.loads(encoded, max_depth=64)) == encoded  # deterministic


def _head(major: int, argument: int) -> bytes:
    if argument < 24:
        return bytes([major << 5 | argument])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if argument < 1 << (8 * size):
            return bytes([major << 5 | info]) + argument.to_bytes(size, "big")
    raise AssertionError(argument)  # pragma: no cover - generated integers stay in range


def _encode_any_lengths(value: Any, data: st.DataObject) -> bytes:
    """An RFC 8949 encoding of ``value`` with definite or indefinite lengths, chosen at random."""
    indefinite = data.draw(st.booleans())
    if isinstance(value, list):
        body = b"".join(_encode_any_lengths(v, data) for v in value)
        return b"\x9f" + body + b"\xff" if indefinite else _head(4, len(value)) + body
    if isinstance(value, dict):
        body = b"".join(
            _encode_any_lengths(k, data) + _encode_any_lengths(v, data) for k, v in value.items()
        )
        return b"\xbf" + body + b"\xff" if indefinite else _head(5, len(value)) + body
    if isinstance(value, bytes | str) and indefinite:
        raw = value if isinstance(value, bytes) else value.encode()
        major = 2 if isinstance(value, bytes) else 3
        cut = data.draw(st.integers(0, len(raw)))
        if major == 3:  # chunks of a text string must each be valid UTF-8
            while cut and raw[:cut].decode(errors="ignore").encode() != raw[:cut]:
                cut -= 1
        chunks = [raw[:cut], raw[cut:]]
        return (
            bytes([major << 5 | 31]) + b"".join(_head(major, len(c)) + c for c in chunks) + b"\xff"
        )
    return cbor2.dumps(value)


@settings(max_examples=300, deadline=None)
@given(_values, st.data())
def test_loads_accepts_definite_and_indefinite_lengths(value: Any, data: st.DataObject) -> None:
    assert cbor.loads(_encode_any_lengths(value, data), max_depth=64) == value


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, st.integers(), min_size=2, max_size=8))
def test_dumps_map_keys_in_bytewise_order(value: dict[Any, int]) -> None:
    decoded = cbor2.loads(cbor.dumps(value))
    encoded_keys = [cbor2.dumps(k) for k in decoded]
    assert encoded_keys == sorted(encoded_keys)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_loads_arbitrary_bytes_only_raises_keybound_errors(data: bytes) -> None:
    with contextlib.suppress(KeyboundError):
        cbor.loads(data)


@settings(max_examples=300, deadline=None)
@given(_values, st.data())
def test_loads_mutated_encodings_only_raises_keybound_errors(
    value: Any, data: st.DataObject
) -> None:
    encoded = bytearray(cbor.dumps(value))
    for _ in range(data.draw(st.integers(1, 3))):
        if not encoded:
            break
        pos = data.draw(st.integers(0, len(encoded) - 1))
        encoded[pos] = data.draw(st.integers(0, 255))
    with contextlib.suppress(KeyboundError):
        cbor.loads(bytes(encoded), max_depth=64)
