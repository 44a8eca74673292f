# keybound firmware: a small, bounded CBOR codec (RFC 8949) for MicroPython.
#
# Supported data model: unsigned and negative integers up to 64 bits, byte
# strings, text strings, arrays, maps, false/true/null and tags (decoded as a
# Tag object holding the tag number and the tagged value).  Floats, undefined,
# other simple values and indefinite-length items are refused: nothing in the
# ACE / OSCORE messages this client exchanges uses them.
#
# Encoding is deterministic in the sense of RFC 8949 §4.2.1 for everything
# but map order: heads are always the shortest form, and a dict is written
# in its own iteration order, which MicroPython does not keep as inserted.
# When order matters, use dumps(obj, sort_keys=True) for the core
# deterministic order (keys sorted by their encoded bytes, RFC 8949 §4.2.1):
# the ACE requests' maps, whose integer keys are then in ascending order.
# (There is no ordered-map type: a class costs heap on the board.)
#
# Decoding is bounded: input length, nesting depth and item counts are capped;
# truncated input, trailing bytes, reserved additional-information values,
# duplicate map keys and non-shortest ("non-preferred") heads are all
# rejected.  Every failure raises CBORError, a ValueError.

from micropython import const

_MAX_INPUT = const(2048)  # default cap on the encoded size accepted by loads()
_MAX_DEPTH = const(8)  # default cap on container nesting
_MAX_ITEMS = const(256)  # cap on the number of elements in one array or map


class CBORError(ValueError):
    """Raised for any input that is not CBOR this codec accepts (RFC 8949)."""


class Tag:
    """A tagged data item (RFC 8949 §3.4): tag number and enclosed value."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value


# ---------------------------------------------------------------- encoding


def _head(buf, major, n):
    # Shortest head for argument n (RFC 8949 §3, preferred serialisation):
    # n itself below 24, else additional information 24..27 and 1, 2, 4 or
    # 8 bytes of argument.
    major <<= 5
    if n < 24:
        buf.append(major | n)
        return
    k = 1
    for info in range(24, 28):
        if n < 1 << 8 * k:
            buf.append(major | info)
            buf.extend(n.to_bytes(k, "big"))
            return
        k *= 2
    raise CBORError("integer over 64 bits")


def _enc(buf, obj, sort_keys, depth):
    if depth > 4 * _MAX_DEPTH:
        # A generous guard against self-referencing containers.
        raise CBORError("too deep")
    depth += 1
    # bool before int: True and False are ints in Python.
    if obj is False:
        buf.append(0xF4)
    elif obj is True:
        buf.append(0xF5)
    elif obj is None:
        buf.append(0xF6)
    elif isinstance(obj, int):
        if obj < 0:
            _head(buf, 1, -1 - obj)
        else:
            _head(buf, 0, obj)
    elif isinstance(obj, (bytes, bytearray, memoryview, str)):
        raw = obj.encode() if isinstance(obj, str) else obj
        _head(buf, 3 if raw is not obj else 2, len(raw))
        buf.extend(raw)
    elif isinstance(obj, (list, tuple)):
        _head(buf, 4, len(obj))
        for item in obj:
            _enc(buf, item, sort_keys, depth)
    elif isinstance(obj, dict):
        pairs = list(obj.items())
        _head(buf, 5, len(pairs))
        if sort_keys:
            # RFC 8949 §4.2.1: sort by the bytewise lexicographic order of
            # the deterministic encodings of the keys.
            pairs = [(dumps(k, True), v) for k, v in pairs]
            pairs.sort(key=lambda kv: kv[0])
        prev = None
        for k, v in pairs:
            if sort_keys:
                if k == prev:
                    raise CBORError("duplicate")
                prev = k
                buf.extend(k)
            else:
                _enc(buf, k, sort_keys, depth)
            _enc(buf, v, sort_keys, depth)
    elif isinstance(obj, Tag):
        _head(buf, 6, obj.tag)
        _enc(buf, obj.value, sort_keys, depth)
    else:
        raise CBORError("cannot encode %s" % type(obj).__name__)


def dumps(obj, sort_keys=False):
    """Encode obj as CBOR (RFC 8949 §4.2.1 preferred serialisation).

    Maps are written in dict order; with sort_keys=True in the core
    deterministic order (keys sorted by their encoded bytes).
    """
    buf = bytearray()
    _enc(buf, obj, sort_keys, 0)
    return bytes(buf)


# ---------------------------------------------------------------- decoding


def _dec(d, p, depth, max_depth):
    # One data item at d[p]; returns (value, position after it).
    if depth > max_depth:
        raise CBORError("nesting>%d" % max_depth)
    if p >= len(d):
        raise CBORError("truncated")
    major = d[p] >> 5
    info = d[p] & 0x1F
    p += 1
    if major == 7:
        if 20 <= info <= 22:
            return (False, True, None)[info - 20], p
        if 25 <= info <= 27:
            raise CBORError("floating")
        if info == 31:
            raise CBORError("lone break")
        if info > 27:
            raise CBORError("reserved")
        raise CBORError("unsupported simple value")
    # The argument (RFC 8949 §3): info itself, or the next 1, 2, 4 or 8
    # bytes, which must not fit a shorter head.
    n = info
    if info == 31:
        raise CBORError("indefinite")
    if info > 27:
        raise CBORError("reserved")
    if info > 23:
        k = 1 << (info - 24)
        if p + k > len(d):
            raise CBORError("truncated")
        n = int.from_bytes(d[p : p + k], "big")
        p += k
        if n < (24 if k == 1 else 1 << 4 * k):
            raise CBORError("non-shortest head")
    if major == 0:
        return n, p
    if major == 1:
        return -1 - n, p
    if major < 4:
        if p + n > len(d):
            raise CBORError("truncated")
        v = d[p : p + n]
        if major == 2:
            return bytes(v), p + n
        try:
            return str(v, "utf-8"), p + n
        except UnicodeError:
            raise CBORError("bad UTF-8") from None
    if major == 6:
        v, p = _dec(d, p, depth + 1, max_depth)
        return Tag(n, v), p
    if n > _MAX_ITEMS:
        raise CBORError("too long")
    if major == 4:
        out = []
        for _ in range(n):
            v, p = _dec(d, p, depth + 1, max_depth)
            out.append(v)
        return out, p
    out = {}
    for _ in range(n):
        k, p = _dec(d, p, depth + 1, max_depth)
        if isinstance(k, (list, dict, Tag)):
            raise CBORError("map key")
        v, p = _dec(d, p, depth + 1, max_depth)
        if k in out:
            raise CBORError("duplicate")
        out[k] = v
    return out, p


def loads(data, max_len=_MAX_INPUT, max_depth=_MAX_DEPTH):
    """Decode exactly one CBOR data item (RFC 8949 §3) from data.

    Raises CBORError for input longer than max_len, nesting deeper than
    max_depth, truncated input, trailing bytes, indefinite lengths, floats,
    reserved values, non-shortest heads and duplicate map keys.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("not bytes")
    if len(data) > max_len:
        raise CBORError("over limit")
    if not len(data):
        raise CBORError("empty")
    # Strings are copied once, out of a view, not sliced (a copy) and then
    # copied again into bytes.
    value, p = _dec(memoryview(data), 0, 0, max_depth)
    if p != len(data):
        raise CBORError("trailing")
    return value
