# keybound firmware: a CoAP client over UDP (RFC 7252) for MicroPython.
#
# What it does: confirmable requests with message IDs and random tokens,
# retransmission with exponential back-off (§4.2), piggybacked and separate
# responses (§5.2; a separate CON response is ACKed), option encoding with
# deltas (§3.1), and block-wise transfer of large responses with Block2
# (RFC 7959 §2, in block.py, loaded only when a response is block-wise).
# Message.encode()/Message.decode() are shared with the OSCORE layer, which
# protects a message's code, inner options and payload.
#
# The block-wise loop (fetch, block.rest) works on any exchange function
# "send(message) -> response", so the same code follows blocks over plain
# CoAP and over OSCORE (where Block2 is an inner, class E option).

import gc
import os
import time

from micropython import const

# Message types (RFC 7252 §3)
CON = const(0)
_NON = const(1)
ACK = const(2)
_RST = const(3)

# Method and response codes (RFC 7252 §12.1), as the 8-bit c.dd value
_EMPTY = const(0)
GET = const(1)
POST = const(2)
PUT = const(3)
DELETE = const(4)
CREATED = const(0x41)
CHANGED = const(0x44)
CONTENT = const(0x45)
BAD_REQUEST = const(0x80)
UNAUTHORIZED = const(0x81)
FORBIDDEN = const(0x83)

# Option numbers (CoAP Option Numbers registry)
URI_HOST = const(3)
ETAG = const(4)
URI_PORT = const(7)
OSCORE = const(9)  # RFC 8613 §2
URI_PATH = const(11)
CONTENT_FORMAT = const(12)
BLOCK2 = const(23)  # RFC 7959
PROXY_URI = const(35)
PROXY_SCHEME = const(39)
ECHO = const(252)  # RFC 9175

# Content-Formats (CoAP Content-Formats registry)
CF_OCTETS = const(42)
CF_CBOR = const(60)
CF_ACE_CBOR = const(19)  # application/ace+cbor, RFC 9200 §8.15

_DEFAULT_PORT = const(5683)

# Transmission parameters (RFC 7252 §4.8); times in milliseconds.
_ACK_TIMEOUT_MS = const(2000)
_MAX_RETRANSMIT = const(4)
_MAX_RETRANSMIT_CAP = const(8)  # never back off longer than 2**8 * timeout
_SEPARATE_WAIT_MS = const(30000)  # how long to wait for a separate response
_MAX_DATAGRAM = const(1280)
_MAX_OPTIONS = const(32)


class CoAPError(Exception):
    """A CoAP-level failure: malformed message, reset, or no answer."""


class CoAPTimeout(CoAPError):
    """No acknowledgement or response arrived in time (RFC 7252 §4.2)."""


class Message:
    """A CoAP message (RFC 7252 §3): type, code, message ID, token,
    options as a list of (number, bytes) pairs, and payload."""

    def __init__(self, code=_EMPTY, options=None, payload=b"", mtype=CON, mid=0, token=b""):
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = options if options is not None else []
        self.payload = payload

    # -- options

    def add(self, number, value):
        """Append an option; value is bytes, str or a non-negative int."""
        if isinstance(value, int):
            value = uint(value)
        elif isinstance(value, str):
            value = value.encode()
        self.options.append((number, value))
        return self

    def get(self, number, default=None):
        """The first value of an option, or default."""
        for n, v in self.options:
            if n == number:
                return v
        return default

    def get_uint(self, number, default=None):
        v = self.get(number)
        return default if v is None else int.from_bytes(v, "big")

    # -- wire format

    def encode(self):
        """The message in RFC 7252 §3 wire format."""
        if len(self.token) > 8:
            raise CoAPError("token longer than 8 bytes")
        buf = bytearray()
        buf.append(0x40 | (self.mtype << 4) | len(self.token))
        buf.append(self.code)
        buf.extend(self.mid.to_bytes(2, "big"))
        buf.extend(self.token)
        encode_options(buf, self.options)
        if self.payload:
            buf.append(0xFF)
            buf.extend(self.payload)
        return bytes(buf)

    @staticmethod
    def decode(data):
        """Parse RFC 7252 §3 wire format; raises CoAPError when malformed."""
        if len(data) < 4:
            raise CoAPError("message shorter than 4 bytes")
        b0 = data[0]
        if b0 >> 6 != 1:
            raise CoAPError("unknown CoAP version")
        tkl = b0 & 0x0F
        if tkl > 8:
            raise CoAPError("reserved token length")
        if len(data) < 4 + tkl:
            raise CoAPError("truncated token")
        msg = Message(
            data[1],
            None,
            b"",
            (b0 >> 4) & 3,
            (data[2] << 8) | data[3],
            bytes(data[4 : 4 + tkl]),
        )
        msg.options, msg.payload = decode_options(data, 4 + tkl)
        return msg


def uint(n):
    """Option value of uint format: big-endian, shortest, 0 is empty (§3.2)."""
    return n.to_bytes(byte_length(n), "big") if n else b""


def byte_length(n):
    """Bytes needed for a non-negative int (MicroPython has no bit_length)."""
    length = 0
    while n:
        n >>= 8
        length += 1
    return length


def _ext(buf, n):
    # Option delta or length nibble and its extension bytes (§3.1).
    if n < 13:
        return n
    if n < 269:
        buf.append(n - 13)
        return 13
    if n < 65805:
        buf.extend((n - 269).to_bytes(2, "big"))
        return 14
    raise CoAPError("option delta or length too large")


def encode_options(buf, options):
    """Append options, sorted by number (stable), with deltas (§3.1)."""
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        head_at = len(buf)
        buf.append(0)
        ext = bytearray()
        d = _ext(ext, number - last)
        ln = _ext(ext, len(value))
        buf[head_at] = (d << 4) | ln
        buf.extend(ext)
        buf.extend(value)
        last = number


def _nibble(data, pos, n):
    # Resolves an extended delta/length nibble; returns (value, new pos).
    if n < 13:
        return n, pos
    if n == 13:
        if pos >= len(data):
            raise CoAPError("truncated option")
        return data[pos] + 13, pos + 1
    if n == 14:
        if pos + 2 > len(data):
            raise CoAPError("truncated option")
        return ((data[pos] << 8) | data[pos + 1]) + 269, pos + 2
    raise CoAPError("reserved option nibble 15")


def decode_options(data, pos):
    """Parse options and payload starting at pos; returns (options, payload)."""
    options = []
    number = 0
    end = len(data)
    while pos < end:
        b = data[pos]
        pos += 1
        if b == 0xFF:
            if pos == end:
                raise CoAPError("payload marker followed by no payload")
            return options, bytes(data[pos:])
        delta, pos = _nibble(data, pos, b >> 4)
        length, pos = _nibble(data, pos, b & 0x0F)
        if pos + length > end:
            raise CoAPError("truncated option value")
        number += delta
        options.append((number, bytes(data[pos : pos + length])))
        pos += length
        if len(options) > _MAX_OPTIONS:
            raise CoAPError("too many options")
    return options, b""


# ------------------------------------------------------------- URIs


def parse_uri(uri):
    """Split "coap://host:port/a/b" into (host, port, ["a", "b"]).

    Only the coap scheme is accepted; no query or fragment (RFC 7252 §6.4
    in the small).
    """
    if not uri.startswith("coap://"):
        raise CoAPError("only coap:// URIs are supported: %s" % uri)
    rest = uri[7:]
    slash = rest.find("/")
    if slash < 0:
        authority, path = rest, ""
    else:
        authority, path = rest[:slash], rest[slash + 1 :]
    if authority.startswith("["):
        close = authority.find("]")
        host = authority[1:close]
        port_text = authority[close + 2 :]
    elif ":" in authority:
        host, port_text = authority.rsplit(":", 1)
    else:
        host, port_text = authority, ""
    port = int(port_text) if port_text else _DEFAULT_PORT
    segments = [s for s in path.split("/") if s] if path else []
    return host, port, segments


def request(code, path, payload=b"", content_format=None):
    """A request Message for a path such as "/authz-info" or ["a", "b"]."""
    msg = Message(code)
    segments = path if isinstance(path, list) else [s for s in path.split("/") if s]
    for seg in segments:
        msg.add(URI_PATH, seg)
    if content_format is not None:
        msg.add(CONTENT_FORMAT, content_format)
    msg.payload = payload
    return msg


# ------------------------------------------------------------- Block2


def fetch(send, req):
    """Perform req through send(msg) -> response and follow Block2.

    The Block2 code (RFC 7959) lives in block.py and is loaded only when a
    response is block-wise; the usual small response costs no heap for it.
    """
    resp = send(req)
    if resp.get(BLOCK2) is None:
        return resp
    import block

    return block.rest(send, req, resp)


# ------------------------------------------------------------- the client


def resolve(host, port):
    """A socket address for host and port (IPv4 UDP)."""
    import socket

    return socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]


class Client:
    """A CoAP client endpoint on one UDP socket (RFC 7252 §4).

    exchange(addr, msg) sends msg as a confirmable request with a fresh
    message ID and token, retransmits with exponential back-off, and returns
    the response (piggybacked on the ACK, or separate).  ack_timeout_ms,
    ack_random_factor and max_retransmit default to RFC 7252 §4.8 values and
    can be lowered for tests.
    """

    def __init__(
        self,
        sock=None,
        ack_timeout_ms=_ACK_TIMEOUT_MS,
        ack_random_factor=1.5,
        max_retransmit=_MAX_RETRANSMIT,
        separate_wait_ms=_SEPARATE_WAIT_MS,
        token_length=4,
        rand=os.urandom,
    ):
        if sock is None:
            import socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock = sock
        self.ack_timeout_ms = ack_timeout_ms
        self.ack_random_factor = ack_random_factor
        self.max_retransmit = min(max_retransmit, _MAX_RETRANSMIT_CAP)
        self.separate_wait_ms = separate_wait_ms
        self.token_length = token_length
        self.rand = rand
        self.mid = int.from_bytes(rand(2), "big")
        self.retransmissions = 0  # counter, for diagnostics and tests
        self._last_separate = -1  # message ID of the last separate response

    def close(self):
        self.sock.close()

    def _next_mid(self):
        self.mid = (self.mid + 1) & 0xFFFF
        return self.mid

    def _initial_timeout(self):
        # ACK_TIMEOUT * random in [1, ACK_RANDOM_FACTOR] (§4.8)
        r = int.from_bytes(self.rand(2), "big") / 65535
        return int(self.ack_timeout_ms * (1 + (self.ack_random_factor - 1) * r))

    def _recv(self, timeout_ms):
        # One datagram or None after timeout_ms.
        self.sock.settimeout(max(timeout_ms, 1) / 1000)
        try:
            data, _ = self.sock.recvfrom(_MAX_DATAGRAM)
        except OSError:
            # A timeout is an OSError (ETIMEDOUT or EAGAIN) on MicroPython.
            return None
        try:
            return Message.decode(data)
        except CoAPError:
            return None  # silently ignore malformed datagrams (§4.2)

    def _send_empty(self, addr, mtype, mid):
        self.sock.sendto(Message(_EMPTY, None, b"", mtype, mid).encode(), addr)

    def exchange(self, addr, msg):
        """Send msg as a CON request to addr; return the response Message."""
        # Collect garbage before the exchange, while little is live: the
        # receive buffer needs one contiguous block on a small heap.
        gc.collect()
        msg.mtype = CON
        msg.mid = self._next_mid()
        msg.token = self.rand(self.token_length)
        wire = msg.encode()
        timeout = self._initial_timeout()
        attempt = 0
        acked = False
        self.sock.sendto(wire, addr)
        deadline = time.ticks_add(time.ticks_ms(), timeout)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                if acked:
                    raise CoAPTimeout("no separate response within %d ms" % self.separate_wait_ms)
                if attempt >= self.max_retransmit:
                    raise CoAPTimeout("no response after %d retransmissions" % attempt)
                attempt += 1
                self.retransmissions += 1
                timeout *= 2  # exponential back-off (§4.2)
                self.sock.sendto(wire, addr)
                deadline = time.ticks_add(time.ticks_ms(), timeout)
                continue
            resp = self._recv(left)
            if resp is None:
                continue
            if resp.mtype in (ACK, _RST) and resp.mid == msg.mid:
                if resp.mtype == _RST:
                    raise CoAPError("request was reset by the peer")
                if resp.code == _EMPTY:
                    # Empty ACK: the response will come separately (§5.2.2).
                    if not acked:
                        acked = True
                        deadline = time.ticks_add(time.ticks_ms(), self.separate_wait_ms)
                    continue
                if resp.token != msg.token:
                    continue
                return resp  # piggybacked response (§5.2.1)
            if resp.mtype in (CON, _NON) and resp.code != _EMPTY:
                if resp.token == msg.token:
                    if resp.mtype == CON:
                        self._send_empty(addr, ACK, resp.mid)
                        self._last_separate = resp.mid
                    return resp  # separate response (§5.2.2)
                if resp.mtype == CON:
                    if resp.mid == self._last_separate:
                        # Our ACK of the previous separate response was
                        # lost and it was retransmitted: ACK it again.
                        self._send_empty(addr, ACK, resp.mid)
                    else:
                        # A CON we cannot match: reject it (§4.2).
                        self._send_empty(addr, _RST, resp.mid)
            # Anything else (duplicates, stray ACKs) is ignored.

    def sender(self, host, port):
        """A send(msg) -> response function bound to one peer."""
        addr = resolve(host, port)

        def send(msg):
            return self.exchange(addr, msg)

        return send
