# keybound firmware: a small, bounded CBOR codec (RFC 8949) for MicroPython.
#
# Supported data model: unsigned and negative integers up to 64 bits, byte
# strings, text strings, arrays, maps, false/true/null and tags (decoded as a
# Tag object holding the tag number and the tagged value).  Floats, undefined,
# other simple values and indefinite-length items are refused: nothing in the
# ACE / OSCORE messages this client exchanges uses them.
#
# Encoding is deterministic in the sense of RFC 8949 §4.2.1 for everything
# but map order: heads are always the shortest form, and a map is written in
# the order the caller gives.  MicroPython's dict does not keep insertion
# order, so pass a list of (key, value) pairs (or a Map) when order matters,
# or use dumps(obj, sort_keys=True) to get the core deterministic order
# (keys sorted by their encoded bytes, RFC 8949 §4.2.1).
#
# Decoding is bounded: input length, nesting depth and item counts are capped;
# truncated input, trailing bytes, reserved additional-information values,
# duplicate map keys and non-shortest ("non-preferred") heads are all
# rejected.  Every failure raises CBORError, a ValueError.

from micropython import const

_MAX_INPUT = const(2048)  # default cap on the encoded size accepted by loads()
_MAX_DEPTH = const(8)  # default cap on container nesting
_MAX_ITEMS = const(256)  # cap on the number of elements in one array or map

_UINT = const(0)
_NINT = const(1)
_BSTR = const(2)
_TSTR = const(3)
_ARRAY = const(4)
_MAP = const(5)
_TAG = const(6)
_SIMPLE = const(7)

_FALSE = const(20)
_TRUE = const(21)
_NULL = const(22)

_U64_MAX = const(0xFFFFFFFFFFFFFFFF)


class CBORError(ValueError):
    """Raised for any input that is not CBOR this codec accepts (RFC 8949)."""


class Tag:  # noqa: PLW1641 - the tagged value may be unhashable
    """A tagged data item (RFC 8949 §3.4): tag number and enclosed value."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Map:
    """A map whose pairs are encoded in the order given (a list of pairs)."""

    def __init__(self, pairs):
        self.pairs = pairs


# ---------------------------------------------------------------- encoding


def _head(buf, major, n):
    # Shortest head for argument n (RFC 8949 §3, preferred serialisation).
    mt = major << 5
    if n < 24:
        buf.append(mt | n)
    elif n < 0x100:
        buf.append(mt | 24)
        buf.append(n)
    elif n < 0x10000:
        buf.append(mt | 25)
        buf.extend(n.to_bytes(2, "big"))
    elif n < 0x100000000:
        buf.append(mt | 26)
        buf.extend(n.to_bytes(4, "big"))
    elif n <= _U64_MAX:
        buf.append(mt | 27)
        buf.extend(n.to_bytes(8, "big"))
    else:
        raise CBORError("integer does not fit in 64 bits")


def _encode(buf, obj, sort_keys, depth):
    if depth > _MAX_DEPTH * 4:
        # A generous guard against self-referencing containers.
        raise CBORError("structure too deep to encode")
    # bool before int: True and False are ints in Python.
    if obj is False:
        buf.append(0xE0 | _FALSE)
    elif obj is True:
        buf.append(0xE0 | _TRUE)
    elif obj is None:
        buf.append(0xE0 | _NULL)
    elif isinstance(obj, int):
        if obj >= 0:
            _head(buf, _UINT, obj)
        else:
            _head(buf, _NINT, -1 - obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(buf, _BSTR, len(obj))
        buf.extend(obj)
    elif isinstance(obj, str):
        raw = obj.encode("utf-8")
        _head(buf, _TSTR, len(raw))
        buf.extend(raw)
    elif isinstance(obj, (list, tuple)):
        _head(buf, _ARRAY, len(obj))
        for item in obj:
            _encode(buf, item, sort_keys, depth + 1)
    elif isinstance(obj, dict):
        _encode_pairs(buf, list(obj.items()), sort_keys, depth)
    elif isinstance(obj, Map):
        _encode_pairs(buf, obj.pairs, sort_keys, depth)
    elif isinstance(obj, Tag):
        _head(buf, _TAG, obj.tag)
        _encode(buf, obj.value, sort_keys, depth + 1)
    else:
        raise CBORError("cannot encode %s" % type(obj).__name__)


def _encode_pairs(buf, pairs, sort_keys, depth):
    _head(buf, _MAP, len(pairs))
    if not sort_keys:
        for k, v in pairs:
            _encode(buf, k, sort_keys, depth + 1)
            _encode(buf, v, sort_keys, depth + 1)
        return
    # RFC 8949 §4.2.1: sort by the bytewise lexicographic order of the
    # deterministic encodings of the keys.
    encoded = []
    for k, v in pairs:
        kb = bytearray()
        _encode(kb, k, sort_keys, depth + 1)
        encoded.append((bytes(kb), v))
    encoded.sort(key=lambda kv: kv[0])
    prev = None
    for kb, v in encoded:
        if kb == prev:
            raise CBORError("duplicate map key")
        prev = kb
        buf.extend(kb)
        _encode(buf, v, sort_keys, depth + 1)


def dumps(obj, sort_keys=False):
    """Encode obj as CBOR (RFC 8949 §4.2.1 preferred serialisation).

    Maps are written in the order given; with sort_keys=True in the core
    deterministic order (keys sorted by their encoded bytes).
    """
    buf = bytearray()
    _encode(buf, obj, sort_keys, 0)
    return bytes(buf)


def head(major, n):
    """The encoded head of a data item (RFC 8949 §3), e.g. head(2, 8)."""
    buf = bytearray()
    _head(buf, major, n)
    return bytes(buf)


# ---------------------------------------------------------------- decoding


class _Reader:
    # Decoding state: the input, the read position and the limits.
    def __init__(self, data, max_depth):
        self.data = data
        self.pos = 0
        self.max_depth = max_depth

    def take(self, n):
        start = self.pos
        end = start + n
        if end > len(self.data):
            raise CBORError("truncated input at offset %d" % start)
        self.pos = end
        return self.data[start:end]

    def argument(self, info):
        # Returns the argument of a head; info is the low 5 bits.
        if info < 24:
            return info
        if info == 24:
            n = self.take(1)[0]
            minimum = 24
        elif info == 25:
            n = int.from_bytes(self.take(2), "big")
            minimum = 0x100
        elif info == 26:
            n = int.from_bytes(self.take(4), "big")
            minimum = 0x10000
        elif info == 27:
            n = int.from_bytes(self.take(8), "big")
            minimum = 0x100000000
        elif info == 31:
            raise CBORError("indefinite-length items are not supported")
        else:
            raise CBORError("reserved additional information value %d" % info)
        if n < minimum:
            raise CBORError("non-shortest head (argument %d)" % n)
        return n

    def item(self, depth):
        if depth > self.max_depth:
            raise CBORError("nesting deeper than %d" % self.max_depth)
        ib = self.take(1)[0]
        major = ib >> 5
        info = ib & 0x1F
        if major == _SIMPLE:
            if info == _FALSE:
                return False
            if info == _TRUE:
                return True
            if info == _NULL:
                return None
            if 25 <= info <= 27:
                raise CBORError("floating-point values are not supported")
            if info == 31:
                raise CBORError("unexpected break code")
            if 28 <= info <= 30:
                raise CBORError("reserved additional information value %d" % info)
            raise CBORError("unsupported simple value")
        n = self.argument(info)
        if major == _UINT:
            return n
        if major == _NINT:
            return -1 - n
        if major == _BSTR:
            return bytes(self.take(n))
        if major == _TSTR:
            raw = self.take(n)
            try:
                return str(raw, "utf-8")
            except UnicodeError:
                raise CBORError("text string is not valid UTF-8") from None
        if major == _ARRAY:
            if n > _MAX_ITEMS:
                raise CBORError("array of %d items is too long" % n)
            out = []
            for _ in range(n):
                out.append(self.item(depth + 1))
            return out
        if major == _MAP:
            if n > _MAX_ITEMS:
                raise CBORError("map of %d pairs is too long" % n)
            out = {}
            for _ in range(n):
                k = self.item(depth + 1)
                if isinstance(k, (list, dict, Tag)):
                    raise CBORError("map key of unsupported type")
                v = self.item(depth + 1)
                if k in out:
                    raise CBORError("duplicate map key %r" % (k,))
                out[k] = v
            return out
        # major == _TAG
        return Tag(n, self.item(depth + 1))


def loads(data, max_len=_MAX_INPUT, max_depth=_MAX_DEPTH):
    """Decode exactly one CBOR data item (RFC 8949 §3) from data.

    Raises CBORError for input longer than max_len, nesting deeper than
    max_depth, truncated input, trailing bytes, indefinite lengths, floats,
    reserved values, non-shortest heads and duplicate map keys.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CBORError("input must be bytes")
    if len(data) > max_len:
        raise CBORError("input of %d bytes exceeds the %d-byte limit" % (len(data), max_len))
    if not len(data):
        raise CBORError("empty input")
    r = _Reader(data, max_depth)
    value = r.item(0)
    if r.pos != len(data):
        raise CBORError("%d trailing bytes after the data item" % (len(data) - r.pos))
    return value
