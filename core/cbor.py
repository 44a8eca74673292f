"""Bounded CBOR (RFC 8949) on top of cbor2.

cbor2 decodes fast in C but trusts its input: it caps nesting at its own
depth, silently keeps the last of duplicate map keys, ignores trailing
bytes and gives some tags a meaning (value sharing, string references)
that an attacker should never reach. :func:`loads` therefore walks the
encoded item once first, without building anything, and refuses:

* input longer than ``max_size`` (:class:`~keybound.core.errors.PayloadTooLarge`);
* nesting deeper than ``max_depth``, truncated items, trailing bytes,
  reserved additional-information values, break codes out of place;
* duplicate map keys and maps with container keys;
* the tags cbor2 would interpret (dates, bignums, sharing, sets, ...).

Only then does cbor2 build the value. Every failure is a
:class:`~keybound.core.errors.DecodeError`: the bindings answer 4.00, never 5.00.

:func:`dumps` writes RFC 8949 §4.2.1 core deterministic encoding: shortest
heads, definite lengths, map keys sorted by their encoded bytes. Floats are
written in eight bytes, not their shortest form; no keybound message carries one.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import cbor2

from .errors import DecodeError, PayloadTooLarge

DEFAULT_MAX_SIZE = 16 * 1024
DEFAULT_MAX_DEPTH = 16

#: Tags cbor2 decodes into Python objects; refused on untrusted input.
_SEMANTIC_TAGS = frozenset(
    {0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 260, 261, 1004, 55799}
)


def _fixed_sizes() -> bytes:
    """For each initial byte, the whole size of an item that needs no further reading, or 0.

    Integers (major 0, 1, info 0-27), short strings (major 2, 3, info 0-23) and the
    simple values and floats of major 7 that are always well formed (not 0xf8, whose
    argument must be checked, not the break 0xff, not the reserved 0xfc-0xfe).
    """
    table = bytearray(256)
    for initial in range(256):
        major, info = initial >> 5, initial & 0x1F
        if major in (0, 1) and info < 28:
            table[initial] = 1 + (0 if info < 24 else 1 << (info - 24))
        elif major in (2, 3) and info < 24:
            table[initial] = 1 + info
        elif major == 7 and (info < 24 or info in (25, 26, 27)):
            table[initial] = 1 + (0 if info < 24 else 1 << (info - 24))
    return bytes(table)


#: :func:`_fixed_sizes`, computed once.
_FIXED = _fixed_sizes()
#: Past this ``max_depth`` the recursive walk could meet Python's recursion limit.
MAX_DEPTH_LIMIT = 256


def _argument(data: bytes, pos: int, info: int) -> tuple[int, int]:
    """The argument of a head whose initial byte (at ``pos - 1``) has additional info ``info``."""
    if info < 24:
        return info, pos
    if info < 28:
        end = pos + (1 << (info - 24))
        if end > len(data):
            raise DecodeError("truncated CBOR")
        return int.from_bytes(data[pos:end], "big"), end
    if info == 31:
        return -1, pos
    raise DecodeError(f"reserved CBOR additional information {info}")


# The walk below reads bytes without testing the position first: reading past the end
# raises IndexError, which item_end turns into DecodeError, and an item that claims
# more bytes than there are leaves the position past the end, which item_end refuses.


def _item_end(data: bytes, pos: int, level: int, max_depth: int) -> int:
    """Check the data item at ``pos`` (nested ``level`` deep) and return where it ends.

    Items that need no reading (:data:`_FIXED`) are skipped in the loops of their
    container; this function recurses once per container or tag, at most
    ``max_depth`` deep.
    """
    initial = data[pos]
    size = _FIXED[initial]
    if size:
        return pos + size
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        arg = info
        pos += 1
    elif info == 24:
        arg = data[pos + 1]
        pos += 2
    else:
        arg, pos = _argument(data, pos + 1, info)
    if major in (4, 5):
        if arg < 0:
            if level >= max_depth:
                raise DecodeError(f"CBOR nested deeper than {max_depth}")
            return _indefinite(data, pos, level + 1, max_depth, major == 5)
        if (arg * 2 if major == 5 else arg) > len(data) - pos:
            raise DecodeError("CBOR container longer than its input")
        if not arg:
            return pos
        if level >= max_depth:
            raise DecodeError(f"CBOR nested deeper than {max_depth}")
        level += 1
        fixed = _FIXED
        if major == 4:
            for _ in range(arg):
                size = fixed[data[pos]]
                pos = pos + size if size else _item_end(data, pos, level, max_depth)
            return pos
        keys: list[Any] = []
        for _ in range(arg):
            initial = data[pos]
            if initial < 0x18:  # small integer keys are read from their head
                keys.append(initial)
                pos += 1
            elif 0x20 <= initial < 0x38:
                keys.append(0x1F - initial)
                pos += 1
            else:
                pos = _map_key(data, pos, level, max_depth, keys)
            initial = data[pos]
            size = fixed[initial]
            if size:
                pos += size
            elif initial in (0x58, 0x78):  # a string of up to 255 bytes (keys, signatures)
                pos += 2 + data[pos + 1]
            else:
                pos = _item_end(data, pos, level, max_depth)
        if len(set(keys)) != arg:  # every key cbor2 returns for a scalar is hashable
            raise DecodeError("duplicate CBOR map key")
        return pos
    if major in (2, 3):
        if arg >= 0:
            return pos + arg
        # Indefinite-length string: definite chunks of the same major type, then a break.
        while True:
            chunk = data[pos]
            if chunk == 0xFF:
                return pos + 1
            chunk_len, pos = _argument(data, pos + 1, chunk & 0x1F)
            if chunk >> 5 != major or chunk_len < 0:
                raise DecodeError("bad chunk in indefinite-length string")
            pos += chunk_len
    if major == 6:
        if arg < 0:
            raise DecodeError("indefinite length on a tag")
        if arg in _SEMANTIC_TAGS:
            raise DecodeError(f"CBOR tag {arg} is not accepted here")
        if level >= max_depth:
            raise DecodeError(f"CBOR nested deeper than {max_depth}")
        return _item_end(data, pos, level + 1, max_depth)
    if major == 7:
        if info == 31:
            raise DecodeError("unexpected CBOR break")
        if arg < 32:  # info 24: the only major-7 head not in _FIXED that gets here
            raise DecodeError("badly encoded CBOR simple value")
        return pos
    raise DecodeError("indefinite length on an integer")  # major 0 or 1, info 31


def _check_unique(keys: list[Any], count: int) -> None:
    """Refuse a map whose ``count`` keys are not all different.

    Keys compare with Python equality, not CBOR's: 1, 1.0 and true are one key once
    decoded into a dict, so a map holding two of them would silently lose a value.
    """
    try:
        unique = len(set(keys))
    except TypeError as exc:  # pragma: no cover - every scalar cbor2 returns is hashable
        raise DecodeError("CBOR map key that is not hashable") from exc
    if unique != count:
        raise DecodeError("duplicate CBOR map key")


def _indefinite(data: bytes, pos: int, level: int, max_depth: int, is_map: bool) -> int:
    """The rest of an indefinite-length array or map whose items are ``level`` deep."""
    keys: list[Any] = []
    while True:
        if data[pos] == 0xFF:
            if is_map:
                _check_unique(keys, len(keys))
            return pos + 1
        if is_map:
            pos = _map_key(data, pos, level, max_depth, keys)
            if data[pos] == 0xFF:
                raise DecodeError("CBOR map with an odd number of items")
        pos = _item_end(data, pos, level, max_depth)


def _map_key(data: bytes, pos: int, level: int, max_depth: int, keys: list[Any]) -> int:
    """Read the map key at ``pos`` into ``keys`` and return its end.

    Small integers and short strings are read from their head; anything else is
    decoded by cbor2. Containers and tagged items are refused as keys.
    """
    initial = data[pos]
    key: Any
    if initial < 0x18:
        key, end = initial, pos + 1
    elif 0x20 <= initial < 0x38:
        key, end = 0x1F - initial, pos + 1
    elif 0x40 <= initial < 0x58 or 0x60 <= initial < 0x78:
        end = pos + 1 + (initial & 0x1F)
        if end > len(data):
            raise DecodeError("truncated CBOR string")
        key = data[pos + 1 : end]
        if initial >= 0x60:
            try:
                key = key.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError("bad CBOR map key") from exc
    else:
        major = initial >> 5
        if major in (4, 5):
            raise DecodeError("CBOR map key that is a container")
        if major == 6:
            raise DecodeError("CBOR map key that is tagged")
        end = _item_end(data, pos, level, max_depth)
        if end > len(data):
            raise DecodeError("truncated CBOR")
        if major < 2:
            key = int.from_bytes(data[pos + 1 : end], "big")
            if major == 1:
                key = -1 - key
        else:
            try:
                key = cbor2.loads(data[pos:end])
            except Exception as exc:
                raise DecodeError("bad CBOR map key") from exc
    keys.append(key)
    return end


def item_end(data: bytes, pos: int, level: int = 0, *, max_depth: int = DEFAULT_MAX_DEPTH) -> int:
    """Check the one data item at ``pos`` of ``data``, nested ``level`` deep; return its end.

    The rules of :func:`check` for one item inside a larger input (the caller checks
    what surrounds it): the COSE decoder walks only the parts of a message that are
    not already bounded by its own structure.
    """
    if max_depth > MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be at most {MAX_DEPTH_LIMIT}")
    if level > max_depth:
        raise DecodeError(f"CBOR nested deeper than {max_depth}")
    try:
        end = _item_end(data, pos, level, max_depth)
    except IndexError:
        raise DecodeError("truncated CBOR") from None
    if end > len(data):
        raise DecodeError("truncated CBOR")
    return end


def check(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> None:
    """Raise unless ``data`` is exactly one well-formed, bounded CBOR item."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError("CBOR input must be bytes")
    if len(data) > max_size:
        raise PayloadTooLarge(f"CBOR input of {len(data)} bytes exceeds the limit of {max_size}")
    if not data:
        raise DecodeError("empty CBOR input")
    end = item_end(bytes(data), 0, max_depth=max_depth)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing bytes after the CBOR item")


class _Unusual(Exception):
    """An item :func:`_build` leaves to the walk and cbor2 (never leaves this module)."""


# The builder below reads the common items of small maps (claims, COSE_Keys, headers)
# straight into Python values: integers of up to eight bytes, definite byte and text
# strings, false, true, null, and definite arrays and maps of up to 23 items whose keys
# are small integers or short text strings. Anything else, and anything the walk would
# refuse (duplicate keys, nesting past max_depth, bad UTF-8, truncation, trailing
# bytes), raises _Unusual, IndexError or UnicodeDecodeError; loads then takes the walk
# and cbor2, which give the value or the error they always gave. The builder advances
# at least one byte per item and nests at most max_depth deep, as the walk does.


def _build_map(
    data: bytes, pos: int, count: int, level: int, max_depth: int
) -> tuple[dict[Any, Any], int]:
    """The ``count`` pairs of the map whose items (``level`` deep) start at ``pos``."""
    out: dict[Any, Any] = {}
    for _ in range(count):
        initial = data[pos]
        key: Any
        if initial < 0x18:
            key = initial
            pos += 1
        elif 0x20 <= initial < 0x38:
            key = 0x1F - initial
            pos += 1
        elif initial == 0x18:
            key = data[pos + 1]
            pos += 2
        elif 0x60 <= initial < 0x78:
            end = pos + initial - 0x5F
            key = data[pos + 1 : end].decode("utf-8")
            pos = end
        else:
            raise _Unusual
        # the values of claims and COSE_Keys, most frequent first; the rest in _build
        initial = data[pos]
        if initial < 0x18:
            out[key] = initial
            pos += 1
        elif 0x60 <= initial < 0x78:
            end = pos + initial - 0x5F
            out[key] = data[pos + 1 : end].decode("utf-8")
            pos = end
        elif 0x40 <= initial < 0x58:
            end = pos + initial - 0x3F
            out[key] = data[pos + 1 : end]
            pos = end
        elif initial == 0x58:
            end = pos + 2 + data[pos + 1]
            out[key] = data[pos + 2 : end]
            pos = end
        elif initial == 0x1A:
            end = pos + 5
            out[key] = int.from_bytes(data[pos + 1 : end], "big")
            pos = end
        elif 0xA0 < initial < 0xB8:
            if level >= max_depth:
                raise _Unusual
            out[key], pos = _build_map(data, pos + 1, initial - 0xA0, level + 1, max_depth)
        elif 0x20 <= initial < 0x38:
            out[key] = 0x1F - initial
            pos += 1
        else:
            out[key], pos = _build(data, pos, level, max_depth)
    if len(out) != count:  # a duplicate key: the walk says so
        raise _Unusual
    return out, pos


#: The values of the simple values false, true and null (0xf4-0xf6).
_SIMPLE = {20: False, 21: True, 22: None}


def _build(data: bytes, pos: int, level: int, max_depth: int) -> tuple[Any, int]:
    """The item at ``pos`` (nested ``level`` deep) and where it ends."""
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    if info < 24:
        arg = info
        pos += 1
    elif info < 28:
        end = pos + 1 + (1 << (info - 24))
        if end > len(data):
            raise _Unusual
        arg = int.from_bytes(data[pos + 1 : end], "big")
        pos = end
    else:
        raise _Unusual
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2:
        end = pos + arg
        return data[pos:end], end
    if major == 3:
        end = pos + arg
        return data[pos:end].decode("utf-8"), end
    if major in (4, 5):
        if not arg:
            return ({} if major == 5 else []), pos
        if level >= max_depth or arg > 23:
            raise _Unusual
        if major == 5:
            return _build_map(data, pos, arg, level + 1, max_depth)
        items: list[Any] = []
        level += 1
        for _ in range(arg):
            value, pos = _build(data, pos, level, max_depth)
            items.append(value)
        return items, pos
    if initial in (0xF4, 0xF5, 0xF6):
        return _SIMPLE[info], pos
    raise _Unusual


def loads(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Decode untrusted CBOR after :func:`check`; raise only keybound errors.

    A small map of the usual items is built directly (:func:`_build_map`); any other
    input, or any the checks would refuse, is walked and then decoded by cbor2.
    """
    if type(data) is bytes and 0 < len(data) <= max_size and 0 <= max_depth <= MAX_DEPTH_LIMIT:
        initial = data[0]
        if 0xA0 < initial < 0xB8 and max_depth:
            try:
                value, end = _build_map(data, 1, initial - 0xA0, 1, max_depth)
            except (_Unusual, IndexError, UnicodeDecodeError, RecursionError):
                pass  # the walk and cbor2 say what they always said
            else:
                if end == len(data):
                    return value
        # check()'s walk, called directly; anything but one whole item goes through
        # check() again, which raises its own error for it
        try:
            end = _item_end(data, 0, 0, max_depth)
        except IndexError:
            end = -1
        if end != len(data):
            check(data, max_size=max_size, max_depth=max_depth)
    else:
        check(data, max_size=max_size, max_depth=max_depth)
    try:
        return cbor2.loads(bytes(data))
    except Exception as exc:  # cbor2 raises its own errors, ValueError, RecursionError, ...
        raise DecodeError(f"invalid CBOR: {exc}") from exc


#: The heads of arguments below 256, per major type: ``_SHORT_HEADS[major][arg]``.
_SHORT_HEADS = tuple(
    tuple(
        bytes([major << 5 | arg]) if arg < 24 else bytes([major << 5 | 24, arg])
        for arg in range(256)
    )
    for major in range(8)
)


def head(major: int, arg: int) -> bytes:
    """The shortest head of major type ``major`` with argument ``arg`` (RFC 8949 §3, §4.2.1)."""
    if arg < 0x100:
        return _SHORT_HEADS[major][arg]
    initial = major << 5
    if arg < 0x10000:
        return bytes((initial | 25, arg >> 8, arg & 0xFF))
    if arg < 1 << 32:
        return bytes((initial | 26,)) + arg.to_bytes(4, "big")
    if arg < 1 << 64:
        return bytes((initial | 27,)) + arg.to_bytes(8, "big")
    raise ValueError("integer too large for a CBOR head")  # pragma: no cover - bignums refused


def _key_bytes(key: Any) -> bytes:
    """The deterministic encoding of a map key, computed cheaply for integers."""
    if type(key) is int and -(1 << 64) <= key < 1 << 64:
        if 0 <= key < 0x100:
            return _UINT_HEADS[key]
        if -0x100 <= key < 0:
            return _NINT_HEADS[-1 - key]
        return head(0, key) if key >= 0 else head(1, -1 - key)
    return bytes(cbor2.dumps(key))


def _sort_maps(value: Any) -> Any:
    if isinstance(value, dict):
        items = [(_key_bytes(k), k, _sort_maps(v)) for k, v in value.items()]
        items.sort(key=lambda item: item[0])
        return {k: v for _, k, v in items}
    if isinstance(value, list | tuple):
        return [_sort_maps(v) for v in value]
    if isinstance(value, cbor2.CBORTag):
        return cbor2.CBORTag(value.tag, _sort_maps(value.value))
    return value


_UINT_HEADS: tuple[bytes, ...] = _SHORT_HEADS[0]
_NINT_HEADS: tuple[bytes, ...] = _SHORT_HEADS[1]
_BSTR_HEADS: tuple[bytes, ...] = _SHORT_HEADS[2]
_TSTR_HEADS: tuple[bytes, ...] = _SHORT_HEADS[3]


def dumps(value: Any) -> bytes:
    """Encode ``value`` with RFC 8949 §4.2.1 core deterministic encoding.

    Integers, byte and text strings, maps, arrays, ``None`` and booleans are written
    here, maps with their keys sorted by encoded bytes; anything else (floats, tags,
    big integers, subclasses) is sorted and handed to cbor2, which writes it the same
    way wherever it stands.
    """
    kind = type(value)
    if kind is int:
        number: int = value
        if 0 <= number < 0x100:
            return _UINT_HEADS[number]
        if -0x100 <= number < 0:
            return _NINT_HEADS[-1 - number]
        if 0 <= value < 1 << 64:
            return head(0, value)
        if -(1 << 64) <= value < 0:
            return head(1, -1 - value)
    elif kind is bytes:
        data: bytes = value
        size = len(data)
        return (_BSTR_HEADS[size] if size < 0x100 else head(2, size)) + data
    elif kind is str:
        try:
            raw: bytes = value.encode("utf-8")
        except UnicodeEncodeError:
            pass  # cbor2 raises its own error for it below
        else:
            size = len(raw)
            return (_TSTR_HEADS[size] if size < 0x100 else head(3, size)) + raw
    elif kind is dict:
        items = sorted([(_key_bytes(k), v) for k, v in value.items()], key=itemgetter(0))
        return head(5, len(items)) + b"".join([key + dumps(v) for key, v in items])
    elif kind is list or kind is tuple:
        return head(4, len(value)) + b"".join([dumps(v) for v in value])
    elif value is None:
        return b"\xf6"
    elif kind is bool:
        return b"\xf5" if value else b"\xf4"
    return bytes(cbor2.dumps(_sort_maps(value)))


def dumps_ordered(value: Any) -> bytes:
    """Encode ``value`` keeping the caller's map order (for structures with a fixed layout)."""
    return cbor2.dumps(value)


__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "check",
    "dumps",
    "dumps_ordered",
    "head",
    "item_end",
    "loads",
]
