"""cbor.loads against its behaviour from before small maps were built directly.

``cbor.loads`` now builds a map of the usual items (small integer or short text keys;
integers, definite strings, false/true/null, small definite arrays and maps) straight
from its bytes, and leaves anything else, or anything the bounded walk would refuse,
to the walk and cbor2 as before. The references are the walk then cbor2, as ``loads``
did it (:func:`previous_loads`, which also gives the exact error message), and the
frozen 0.1.0 copy (tests/helpers/codec_reference). Inputs are claim-like maps built
from items chosen on and around the builder's edges (every integer and string head
width, bad UTF-8, duplicate keys written two ways, keys that are not integers or text,
nesting at and past the depth bound, tags, floats, simple values, indefinite lengths),
truncated, extended and mutated, each decoded under several size and depth bounds.
``KEYBOUND_DIFF_BUILD=400000`` runs that many.
"""

from __future__ import annotations

import os
import random
from typing import Any

import cbor2

from keybound.core import cbor
from keybound.core.errors import DecodeError, KeyboundError
from tests.helpers.codec_diff import _same_value, mutate
from tests.helpers.codec_reference import cbor as ref_cbor

INPUTS = int(os.environ.get("KEYBOUND_DIFF_BUILD", "20000"))


def previous_loads(
    data: bytes, *, max_size: int = cbor.DEFAULT_MAX_SIZE, max_depth: int = cbor.DEFAULT_MAX_DEPTH
) -> Any:
    """``cbor.loads`` as it was: the bounded walk (:func:`cbor.check`), then cbor2."""
    cbor.check(data, max_size=max_size, max_depth=max_depth)
    try:
        return cbor2.loads(bytes(data))
    except Exception as exc:
        raise DecodeError(f"invalid CBOR: {exc}") from exc


def _outcome(fn: Any, data: bytes, **bounds: int) -> tuple[Any, ...]:
    try:
        return ("ok", fn(data, **bounds))
    except KeyboundError as exc:
        return ("error", type(exc), exc.error, exc.ace_code, exc.claim, str(exc))
    except Exception as exc:
        return ("crash", type(exc), repr(exc))


_KEYS = (
    b"\x00", b"\x01", b"\x07", b"\x17", b"\x18\x18", b"\x18\x26", b"\x18\x01", b"\x19\x00\x01",
    b"\x20", b"\x37", b"\x38\x00", b"\x60", b"\x63iss", b"\x77" + b"k" * 23, b"\x78\x01k",
    b"\x62\xc3\x28", b"\x41a", b"\xf5", b"\xf6", b"\xf9\x3c\x00", b"\x80",
    b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00", b"\xa0", b"\xc1\x01", b"\x1c", b"\xff",
    b"\x7f\x61a\xff",
)  # fmt: skip


class _Items:
    """Claim-like CBOR on and around the edges of ``cbor._build_map``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self) -> bytes:
        rng = self.rng
        major = rng.choice((0, 0, 1)) << 5
        widths = (0, 1, 23, 24, 25, 26, 26, 27, 0, 24, 26, 28, 31)
        info = rng.choice(widths if rng.random() < 0.2 else (5, 24, 26))
        if info < 24:
            return bytes([major | info])
        if info < 28:
            return bytes([major | info]) + rng.randbytes(1 << (info - 24))
        return bytes([major | info])

    def string(self) -> bytes:
        rng = self.rng
        major = rng.choice((2, 3))
        text = rng.choice((b"", b"a", b"coap://as.example", b"\xc3\xa9", b"\xe2\x98\x83"))
        if rng.random() < 0.3:
            text = rng.randbytes(rng.choice((16, 32, 64, 300)))
        if major == 3 and rng.random() < 0.03:
            text = rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"a\x80"))
        size = len(text)
        roll = rng.random()
        if size < 24 and roll < 0.6:
            head = bytes([major << 5 | size])
        elif size < 256 and roll < 0.85:
            head = bytes([major << 5 | 24, size])
        elif roll < 0.95:
            head = bytes([major << 5 | 25]) + size.to_bytes(2, "big")
        else:
            return bytes([major << 5 | 31, major << 5 | size % 24]) + text[: size % 24] + b"\xff"
        return head + text

    def other(self) -> bytes:
        return self.rng.choice((
            b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\x20", b"\xf8\x10", b"\xf9\x3c\x00",
            b"\xfa\x3f\x80\x00\x00", b"\xfb\x3f\xf0\x00\x00\x00\x00\x00\x00", b"\xfc", b"\xff",
            b"\xc1\x1a\x00\x00\x00\x01", b"\xd8\x18\x41a", b"\xd8\x3d\x01", b"\xc2\x41\x01",
            b"\x9f\x01\xff", b"\xbf\x01\x02\xff", b"\x5f\x41a\xff", b"\x1f", b"\x3f", b"\xe0",
        ))  # fmt: skip

    def item(self, depth: int) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            return self.integer()
        if roll < 0.5:
            return self.string()
        if roll < 0.55:
            return self.other() if rng.random() < 0.3 else rng.choice((b"\xf4", b"\xf5", b"\xf6"))
        if depth > 3:  # deep nesting comes from nested(), not from a tree that explodes
            return self.integer()
        if roll < 0.75:
            count = rng.choice((0, 1, 2, 3, rng.randrange(0, 25)))
            head = bytes([0x80 | count]) if count < 24 else bytes([0x98, count])
            return head + b"".join(self.item(depth + 1) for _ in range(count))
        return self.map(depth + 1)

    def key(self) -> bytes:
        rng = self.rng
        if rng.random() < 0.9:
            return bytes([rng.choice((1, 2, 3, 4, 5, 6, 7, 8, 9, 0x20, 0x21, 0x22))])
        return rng.choice(_KEYS)

    def map(self, depth: int) -> bytes:
        rng = self.rng
        count = rng.choice((1, 2, 4, 7, rng.randrange(0, 25)))
        head = bytes([0xA0 | count]) if count < 24 else bytes([0xB8, count])
        pairs = b"".join(self.key() + self.item(depth) for _ in range(count))
        return head + pairs

    def nested(self) -> bytes:
        """A map nested ``n`` deep around a scalar, near the default bound of 16."""
        depth = self.rng.randrange(12, 19)
        inner = self.rng.choice((b"\x01", b"\xa0", b"\x80", b"\xa1\x01\x02", b"\x81\x01"))
        return b"\xa1\x01" * depth + inner

    def claims(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        data = self.nested() if roll < 0.1 else self.map(1)
        roll = rng.random()
        if roll < 0.1:
            data = data[: rng.randrange(len(data))]
        elif roll < 0.15:
            data += rng.choice((b"\x00", b"\xff", b"\xa0"))
        elif roll < 0.35:
            data = mutate(rng, data)
        return data


#: (max_depth, max_size) for the bound variants; -1 is the input's length, -2 one less.
_BOUNDS = ((16, 4096), (0, 4096), (1, 4096), (2, 4096), (3, -1), (256, -2), (5, 16))


def test_loads_matches_its_previous_behaviour_on_claim_like_maps() -> None:
    rng = random.Random(1717)
    items = _Items(rng)
    built = fell_back = refused = 0
    for _ in range(INPUTS):
        data = items.claims()
        for max_depth, max_size in (_BOUNDS[0], rng.choice(_BOUNDS)):
            size = {-1: len(data), -2: len(data) - 1}.get(max_size, max_size)
            mine = _outcome(cbor.loads, data, max_size=size, max_depth=max_depth)
            before = _outcome(previous_loads, data, max_size=size, max_depth=max_depth)
            frozen = _outcome(ref_cbor.loads, data, max_size=size, max_depth=max_depth)
            assert mine[0] != "crash", (data.hex(), mine)
            assert mine[0] == before[0] == frozen[0], (data.hex(), mine, before, frozen)
            if mine[0] == "ok":
                assert _same_value(mine[1], before[1]), (data.hex(), mine, before)
                assert _same_value(mine[1], frozen[1]), (data.hex(), mine, frozen)
            else:
                assert mine == before, (data.hex(), mine, before)
                assert mine[:5] == frozen[:5], (data.hex(), mine, frozen)
                refused += 1
        try:
            _value, end = cbor._build_map(data, 1, data[0] - 0xA0, 1, 16)
            built += 0xA0 < data[0] < 0xB8 and end == len(data)
        except (cbor._Unusual, IndexError, UnicodeDecodeError):
            fell_back += 1
    print(f"{INPUTS} inputs: {built} built directly, {fell_back} left to the walk and cbor2")
    # both paths were taken, and both accepted and refused inputs
    assert built > INPUTS // 10, built
    assert fell_back > INPUTS // 10, fell_back
    assert refused > INPUTS // 10, refused


def test_the_builder_gives_what_cbor2_gives_for_a_token_s_claims() -> None:
    claims = {
        1: "coap://as.example", 3: "rs.example", 4: 1_796_280_128, 6: 1_796_276_528,
        7: bytes(range(16)), 9: "temp.read", 38: 2, 39: b"\x01\x02", 40: [1, {"a": None}],
        8: {1: {1: 2, -1: 1, -2: bytes(32), -3: bytes(range(32))}}, "x": [True, False, -24],
    }  # fmt: skip
    data = cbor.dumps(claims)
    value, end = cbor._build_map(data, 1, data[0] - 0xA0, 1, 16)
    assert end == len(data)
    assert _same_value(value, cbor2.loads(data))
    assert _same_value(cbor.loads(data), cbor2.loads(data))
