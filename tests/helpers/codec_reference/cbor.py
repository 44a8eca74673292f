"""Reference copy (keybound 0.1.0).

Bounded CBOR (RFC 8949) on top of cbor2.

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

from typing import Any

import cbor2

from keybound.core.errors import DecodeError, PayloadTooLarge

DEFAULT_MAX_SIZE = 16 * 1024
DEFAULT_MAX_DEPTH = 16

#: Tags cbor2 decodes into Python objects; refused on untrusted input.
_SEMANTIC_TAGS = frozenset(
    {0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 100, 256, 258, 260, 261, 1004, 55799}
)


def _head(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Decode one item head at ``pos``: (major type, additional info, argument, new pos)."""
    if pos >= len(data):
        raise DecodeError("truncated CBOR")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, info, pos
    if info in (24, 25, 26, 27):
        n = 1 << (info - 24)
        if pos + n > len(data):
            raise DecodeError("truncated CBOR")
        return major, info, int.from_bytes(data[pos : pos + n], "big"), pos + n
    if info == 31:
        return major, info, -1, pos
    raise DecodeError(f"reserved CBOR additional information {info}")


def _skip_string(data: bytes, pos: int, major: int, arg: int) -> int:
    if arg >= 0:
        end = pos + arg
        if end > len(data):
            raise DecodeError("truncated CBOR string")
        return end
    # Indefinite-length string: definite chunks of the same major type, then a break.
    while True:
        if pos >= len(data):
            raise DecodeError("truncated CBOR")
        if data[pos] == 0xFF:
            return pos + 1
        chunk_major, _, chunk_len, pos = _head(data, pos)
        if chunk_major != major or chunk_len < 0:
            raise DecodeError("bad chunk in indefinite-length string")
        pos += chunk_len
        if pos > len(data):
            raise DecodeError("truncated CBOR string")


def _item_end(data: bytes, pos: int, depth: int, max_depth: int) -> int:
    """Check one complete data item starting at ``pos`` and return where it ends."""
    # Each stack entry: [remaining items or -1 for indefinite, is_map, key positions]
    stack: list[list[Any]] = []
    while True:
        if len(stack) + depth > max_depth:
            raise DecodeError(f"CBOR nested deeper than {max_depth}")
        if stack and stack[-1][0] == -1 and pos < len(data) and data[pos] == 0xFF:
            frame = stack.pop()
            if frame[1] and frame[3] % 2:
                raise DecodeError("CBOR map with an odd number of items")
            pos += 1
            if stack:  # the finished indefinite container is one item of its parent
                _close_child(stack, pos, data)
        else:
            start = pos
            major, info, arg, pos = _head(data, pos)
            if major in (0, 1):
                if info == 31:
                    raise DecodeError("indefinite length on an integer")
            elif major in (2, 3):
                pos = _skip_string(data, pos, major, arg)
            elif major in (4, 5):
                count = arg * 2 if (major == 5 and arg >= 0) else arg
                if count >= 0 and count > len(data) - pos:
                    raise DecodeError("CBOR container longer than its input")
                stack.append([count, major == 5, set(), 0])
                if count != 0:
                    _note_item(stack, start, pos, data, is_container=True)
                    continue
                stack.pop()
            elif major == 6:
                if info == 31:
                    raise DecodeError("indefinite length on a tag")
                if arg in _SEMANTIC_TAGS:
                    raise DecodeError(f"CBOR tag {arg} is not accepted here")
                stack.append([1, False, [], 0, "tag"])
                continue
            else:  # major 7
                if info == 31:
                    raise DecodeError("unexpected CBOR break")
                if info == 24 and arg < 32:
                    raise DecodeError("badly encoded CBOR simple value")
            _note_item(stack, start, pos, data, is_container=False)
        # Close every frame that has received all its items.
        while stack and stack[-1][0] == 0:
            stack.pop()
            if stack:
                _close_child(stack, pos, data)
        if not stack:
            return pos


def _note_item(
    stack: list[list[Any]], start: int, end: int, data: bytes, *, is_container: bool
) -> None:
    """Account for an item that just started (containers) or ended (scalars)."""
    parent_index = -2 if is_container else -1
    if len(stack) < (2 if is_container else 1):
        return
    parent = stack[parent_index]
    if parent[1] and parent[3] % 2 == 0:  # in a map, even positions are keys
        if is_container:
            raise DecodeError("CBOR map key that is a container")
        _check_key(parent, data[start:end])
    if not is_container:
        parent[3] += 1
        if parent[0] > 0:
            parent[0] -= 1


def _close_child(stack: list[list[Any]], end: int, data: bytes) -> None:
    parent = stack[-1]
    if parent[1] and parent[3] % 2 == 0:  # pragma: no cover - containers as keys refused earlier
        raise DecodeError("CBOR map key that is a container")
    parent[3] += 1
    if parent[0] > 0:
        parent[0] -= 1


def _fast_key(encoded: bytes) -> Any:
    """The value of a small integer or short string key without a decoder call, else a miss."""
    initial = encoded[0]
    major, info = initial >> 5, initial & 0x1F
    if info < 24 or (info <= 27 and len(encoded) == 1 + (1 << (info - 24))):
        if major == 0:
            return info if info < 24 else int.from_bytes(encoded[1:], "big")
        if major == 1:
            return -1 - (info if info < 24 else int.from_bytes(encoded[1:], "big"))
    if major == 2 and info < 24:
        return encoded[1:]
    if major == 3 and info < 24:
        try:
            return encoded[1:].decode("utf-8")
        except UnicodeDecodeError:
            return _MISS
    return _MISS


_MISS = object()


def _check_key(frame: list[Any], encoded: bytes) -> None:
    key = _fast_key(encoded)
    if key is _MISS:
        try:
            key = cbor2.loads(encoded)
        except Exception as exc:
            raise DecodeError("bad CBOR map key") from exc
    if isinstance(key, cbor2.CBORTag):
        raise DecodeError("CBOR map key that is tagged")
    # Python equality, not CBOR's: 1, 1.0 and true are one key once decoded into a
    # dict, so a map holding two of them would silently lose a value.
    try:
        duplicate = key in frame[2]
    except TypeError as exc:
        raise DecodeError("CBOR map key that is not hashable") from exc
    if duplicate:
        raise DecodeError(f"duplicate CBOR map key {key!r}")
    frame[2].add(key)


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
    end = _item_end(bytes(data), 0, 0, max_depth)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} trailing bytes after the CBOR item")


def loads(
    data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH
) -> Any:
    """Decode untrusted CBOR after :func:`check`; raise only keybound errors."""
    check(data, max_size=max_size, max_depth=max_depth)
    try:
        return cbor2.loads(bytes(data))
    except Exception as exc:  # cbor2 raises its own errors, ValueError, RecursionError, ...
        raise DecodeError(f"invalid CBOR: {exc}") from exc


def _int_head(major: int, arg: int) -> bytes:
    """The encoded head of an unsigned argument (RFC 8949 §3): the bytes a key sorts by."""
    if arg < 24:
        return bytes([major << 5 | arg])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if arg < 1 << (8 * size):
            return bytes([major << 5 | info]) + arg.to_bytes(size, "big")
    raise ValueError("integer too large for a map key")  # pragma: no cover - bignums refused


def _key_bytes(key: Any) -> bytes:
    """The deterministic encoding of a map key, computed cheaply for integers."""
    if type(key) is int and -(1 << 64) <= key < 1 << 64:
        return _int_head(0, key) if key >= 0 else _int_head(1, -1 - key)
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


def dumps(value: Any) -> bytes:
    """Encode ``value`` with RFC 8949 §4.2.1 core deterministic encoding."""
    return cbor2.dumps(_sort_maps(value))


def dumps_ordered(value: Any) -> bytes:
    """Encode ``value`` keeping the caller's map order (for structures with a fixed layout)."""
    return cbor2.dumps(value)


__all__ = ["DEFAULT_MAX_DEPTH", "DEFAULT_MAX_SIZE", "check", "dumps", "dumps_ordered", "loads"]
