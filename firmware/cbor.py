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

# Error messages.  MicroPython interns every string constant of ten characters
# or fewer as a name (a qstr) for the rest of the board's life, and a longer one
# is a string object of its own on the heap (64 bytes or more on the 64-bit
# port).  Past 300 names the runtime allocates a fifth pool of names, 3.5 KB on
# the 64-bit port, which the EDHOC flow could not afford (firmware/README.md,
# "The EDHOC profile on the board").  So each module's messages are one string
# constant, cut at "|" by _error() only when an error is raised, and indexed by
# const() numbers, which cost nothing at run time.
_MSG = const(
    "truncated|reserved|duplicate|bad UTF-8|cannot encode %s|empty|floating|"
    "indefinite|integer over 64 bits|lone break|map key|nesting>%d|"
    "non-shortest head|not bytes|over limit|too deep|too long|trailing|"
    "unsupported simple value"
)
_TRUNCATED = const(0)
_RESERVED = const(1)
_DUPLICATE = const(2)
_BAD_UTF8 = const(3)
_CANNOT_ENCODE = const(4)
_EMPTY = const(5)
_FLOATING = const(6)
_INDEFINITE = const(7)
_OVER_64_BITS = const(8)
_LONE_BREAK = const(9)
_MAP_KEY = const(10)
_NESTING = const(11)
_NON_SHORTEST = const(12)
_NOT_BYTES = const(13)
_OVER_LIMIT = const(14)
_TOO_DEEP = const(15)
_TOO_LONG = const(16)
_TRAILING = const(17)
_SIMPLE = const(18)


class CBORError(ValueError):
    """Raised for any input that is not CBOR this codec accepts (RFC 8949)."""


def _error(i, args=None):
    m = _MSG.split("|")[i]
    return CBORError(m if args is None else m % args)


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
    raise _error(_OVER_64_BITS)


def _enc(buf, obj, sort_keys, depth):
    if depth > 4 * _MAX_DEPTH:
        # A generous guard against self-referencing containers.
        raise _error(_TOO_DEEP)
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
                    raise _error(_DUPLICATE)
                prev = k
                buf.extend(k)
            else:
                _enc(buf, k, sort_keys, depth)
            _enc(buf, v, sort_keys, depth)
    elif isinstance(obj, Tag):
        _head(buf, 6, obj.tag)
        _enc(buf, obj.value, sort_keys, depth)
    else:
        raise _error(_CANNOT_ENCODE, type(obj).__name__)


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
        raise _error(_NESTING, max_depth)
    if p >= len(d):
        raise _error(_TRUNCATED)
    major = d[p] >> 5
    info = d[p] & 0x1F
    p += 1
    if major == 7:
        if 20 <= info <= 22:
            return (False, True, None)[info - 20], p
        if 25 <= info <= 27:
            raise _error(_FLOATING)
        if info == 31:
            raise _error(_LONE_BREAK)
        if info > 27:
            raise _error(_RESERVED)
        raise _error(_SIMPLE)
    # The argument (RFC 8949 §3): info itself, or the next 1, 2, 4 or 8
    # bytes, which must not fit a shorter head.
    n = info
    if info == 31:
        raise _error(_INDEFINITE)
    if info > 27:
        raise _error(_RESERVED)
    if info > 23:
        k = 1 << (info - 24)
        if p + k > len(d):
            raise _error(_TRUNCATED)
        n = int.from_bytes(d[p : p + k], "big")
        p += k
        if n < (24 if k == 1 else 1 << 4 * k):
            raise _error(_NON_SHORTEST)
    if major == 0:
        return n, p
    if major == 1:
        return -1 - n, p
    if major < 4:
        if p + n > len(d):
            raise _error(_TRUNCATED)
        v = d[p : p + n]
        if major == 2:
            return bytes(v), p + n
        try:
            return str(v, "utf-8"), p + n
        except UnicodeError:
            raise _error(_BAD_UTF8) from None
    if major == 6:
        v, p = _dec(d, p, depth + 1, max_depth)
        return Tag(n, v), p
    if n > _MAX_ITEMS:
        raise _error(_TOO_LONG)
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
            raise _error(_MAP_KEY)
        v, p = _dec(d, p, depth + 1, max_depth)
        if k in out:
            raise _error(_DUPLICATE)
        out[k] = v
    return out, p


def loads(data, max_len=_MAX_INPUT, max_depth=_MAX_DEPTH):
    """Decode exactly one CBOR data item (RFC 8949 §3) from data.

    Raises CBORError for input longer than max_len, nesting deeper than
    max_depth, truncated input, trailing bytes, indefinite lengths, floats,
    reserved values, non-shortest heads and duplicate map keys.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _error(_NOT_BYTES)
    if len(data) > max_len:
        raise _error(_OVER_LIMIT)
    if not len(data):
        raise _error(_EMPTY)
    # Strings are copied once, out of a view, not sliced (a copy) and then
    # copied again into bytes.
    value, p = _dec(memoryview(data), 0, 0, max_depth)
    if p != len(data):
        raise _error(_TRAILING)
    return value
