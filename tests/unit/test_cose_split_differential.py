"""cose.split against its copy from before the unprotected map was read from its heads.

The fast path reads an empty map, or one with ``kid`` and/or ``IV`` as short byte
strings, without the bounded walk and cbor2; everything else still goes through
both. The reference below is the function as it was. Inputs are COSE frames around
unprotected maps assembled from heads chosen to sit on and around the fast path's
edges (duplicate labels, other labels, longer heads, indefinite lengths, truncation,
nesting), and random mutations of them. ``KEYBOUND_DIFF_SPLIT=400000`` runs that many.
"""

from __future__ import annotations

import os
import random
from typing import Any

import cbor2

from keybound.core import cbor, cose
from keybound.core.cose import _SIZES, _TAG_HEADS, _bstr_span
from keybound.core.errors import DecodeError, KeyboundError
from keybound.core.numbers.cose_headers import CoseTag
from tests.helpers.codec_diff import _same_value, mutate

DEFAULT_INPUTS = 30_000
INPUTS = int(os.environ.get("KEYBOUND_DIFF_SPLIT", DEFAULT_INPUTS))


def reference_split(
    data: bytes, pos: int = 0, level: int = 0, *, expected: CoseTag | None = None
) -> tuple[CoseTag, bool, list[Any]] | None:
    """The parts of the COSE message that fills ``data`` from ``pos``, when it has the usual
    shape: a one-byte COSE tag (or none, when ``expected`` names the kind), an array of
    definite-length byte strings around the unprotected map. ``None`` for anything else.

    Only the unprotected map is walked (at nesting ``level`` plus the tag and the array);
    the byte strings are bounded by their heads. The result is what :func:`cbor.loads`
    would give for the same bytes, so the checks that follow are the same either way.
    """
    n = len(data)
    if pos >= n:
        return None
    kind = _TAG_HEADS.get(data[pos])
    tagged = kind is not None
    if kind is not None:
        pos += 1
        level += 1
        if expected is not None and kind != expected:
            return None
    elif expected is None or expected not in _SIZES:
        return None
    else:
        kind = expected
    count = _SIZES[kind]
    if pos >= n or data[pos] != 0x80 | count:
        return None
    start, end = _bstr_span(data, pos + 1, n)
    if end < 0 or end >= n or data[end] >> 5 != 5:
        return None
    map_end = cbor.item_end(data, end, level + 1)
    items: list[Any] = [data[start:end], None]
    pos = map_end
    for _ in range(count - 2):
        start, pos = _bstr_span(data, pos, n)
        if pos < 0:
            return None
        items.append(data[start:pos])
    if pos != n:
        return None
    if map_end == end + 1:  # the empty map, 0xa0
        items[1] = {}
    else:
        try:
            items[1] = cbor2.loads(data[end:map_end])
        except Exception as exc:  # as cbor.loads would for the whole message
            raise DecodeError(f"invalid CBOR: {exc}") from exc
    return kind, tagged, items


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args, **kwargs))
    except KeyboundError as exc:
        return ("error", type(exc), exc.error, exc.ace_code, exc.claim, str(exc))
    except Exception as exc:
        return ("crash", type(exc), repr(exc))


def _unprotected(rng: random.Random) -> bytes:
    """A map head and items around the fast path's edges."""
    count = rng.choice((0, 1, 1, 2, 2, 2, 3, 24))
    head = bytes([0xA0 | count]) if count < 24 else b"\xb8\x02"
    if rng.random() < 0.05:
        head = b"\xbf"  # indefinite length
    out = head
    for _ in range(rng.choice((count, count, count - 1, count + 1, 2))):
        label = rng.choice((b"\x04", b"\x05", b"\x04", b"\x05", b"\x01", b"\x20", b"\x18\x04",
                            b"\x41\x04", b"\x64kid!", b"\xa0", b"\xf5"))  # fmt: skip
        size = rng.choice((0, 1, 3, 13, 23, 24, 30))
        value = rng.choice((
            bytes([0x40 + size]) + rng.randbytes(size) if size < 24 else b"",
            b"\x58" + bytes([size]) + rng.randbytes(size),
            b"\x43abc", b"\x63abc", b"\x01", b"\xa1\x01\x02", b"\x5f\x41a\xff", b"\x57", b"\xf6",
        ))  # fmt: skip
        out += label + value
    if count >= 24 or rng.random() < 0.05:
        out += b"\xff"
    return out


def _message(rng: random.Random) -> tuple[bytes, int, CoseTag | None]:
    kind = rng.choice((CoseTag.SIGN1, CoseTag.MAC0, CoseTag.ENCRYPT0))
    protected = rng.choice((b"\x43\xa1\x01\x26", b"\x40", b"\x44\xa1\x01\x18\x1e", b"\x41\xa0"))
    rest = [bytes([0x40 + n]) + rng.randbytes(n) for n in (rng.randrange(24), 8)]
    rest = rest[: _SIZES[kind] - 2]
    body = bytes([0x80 | _SIZES[kind]]) + protected + _unprotected(rng) + b"".join(rest)
    roll = rng.random()
    expected: CoseTag | None = None
    prefix = b""
    pos = 0
    if roll < 0.7:
        prefix = cbor2.dumps(cbor2.CBORTag(int(kind), None))[:-1]
    elif roll < 0.85:
        prefix, pos = b"\xd8\x3d" + cbor2.dumps(cbor2.CBORTag(int(kind), None))[:-1], 2
    else:
        expected = kind
    data = prefix + body
    if rng.random() < 0.2:
        data = mutate(rng, data)
    return data, pos, expected


def test_split_matches_its_reference() -> None:
    rng = random.Random(52)
    fast = small = refused = 0
    for _ in range(INPUTS):
        data, pos, expected = _message(rng)
        level = 1 if pos else 0
        mine = _outcome(cose.split, data, pos, level, expected=expected)
        ref = _outcome(reference_split, data, pos, level, expected=expected)
        assert mine == ref, (data.hex(), mine, ref)
        if mine[0] == "ok" and mine[1] is not None:
            fast += 1
            headers = mine[1][2][1]
            small += len(headers) < 3 and set(headers) <= {4, 5}
        elif mine[0] == "error":
            refused += 1
    print(
        f"{INPUTS} inputs: {fast} split ({small} with kid/IV headers or none), "
        f"{refused} refused, the rest left to the full decoder"
    )
    assert small > INPUTS // 20, small  # the fast path was taken
    assert fast > small, fast  # and so was the general one
    assert refused > INPUTS // 100, refused


#: Protected headers for :func:`test_parse_split_matches_split_then_parse_parts`: the
#: ``{1: alg}`` of every algorithm, and headers next to them that are not only that.
_NEAR_ALG_ONLY: tuple[Any, ...] = (
    {1: -7, 4: b"k"}, {1: -7, 5: bytes(13)}, {1: -7, 2: [4]}, {1: -7, 2: [99]}, {1: -999},
    {1: "ES256"}, {4: b"k"}, {1: -7, 1.5: 1}, [1, -7], {1: 1.0}, {1: True},
)  # fmt: skip
_PROTECTED = (
    *(bytes(cbor2.dumps(encoded)) for encoded in cose._ALG_ONLY.values()),
    *(bytes(cbor2.dumps(cbor2.dumps(value))) for value in _NEAR_ALG_ONLY),
    b"\x44\xa1\x01\x38\x06",  # {1: -7} with a longer head than it needs
    b"\x40",
    b"\x41\xa0",
    b"\x44\xa1\x01\x26\x00",
    b"\x43\xa1\x01\xff",
)


def _split_then_parse_parts(
    data: bytes, pos: int, level: int, expected: CoseTag | None
) -> cose.Parsed | None:
    parts = reference_split(data, pos, level, expected=expected)
    return None if parts is None else cose.parse_parts(*parts)


def test_parse_split_matches_split_then_parse_parts() -> None:
    """cose.parse_split against what the CWT decoder did before: split, then parse_parts."""
    rng = random.Random(53)
    direct = 0
    for _ in range(INPUTS):
        data, pos, expected = _message(rng)
        protected = rng.choice(_PROTECTED)
        if rng.random() < 0.7:  # the ES256 header, or another one
            data = data.replace(b"\x43\xa1\x01\x26", protected, 1)
        level = 1 if pos else 0

        mine = _outcome(cose.parse_split, data, pos, level, expected=expected)
        ref = _outcome(_split_then_parse_parts, data, pos, level, expected)
        assert mine[0] == ref[0], (data.hex(), mine, ref)
        if mine[0] == "ok":
            assert _same_value(mine[1], ref[1]), (data.hex(), mine, ref)
            if mine[1] is not None:
                assert type(mine[1]) is cose.Parsed
                assert type(mine[1].alg) is type(ref[1].alg)
                direct += mine[1].protected.keys() == {1}
        else:
            assert mine == ref, (data.hex(), mine, ref)
    assert direct > INPUTS // 40, direct  # the direct build was reached
