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
_CON = const(0)
_NON = const(1)
_ACK = const(2)
_RST = const(3)

# Method and response codes (RFC 7252 §12.1), as the 8-bit c.dd value
GET = const(1)
POST = const(2)
_CREATED = const(0x41)
_CHANGED = const(0x44)
_CONTENT = const(0x45)
_BAD_REQUEST = const(0x80)
_UNAUTHORIZED = const(0x81)

# Option numbers (CoAP Option Numbers registry)
_ETAG = const(4)
_OSCORE = const(9)  # RFC 8613 §2
_URI_PATH = const(11)
_CONTENT_FORMAT = const(12)
_BLOCK2 = const(23)  # RFC 7959
_ECHO = const(252)  # RFC 9175

# Content-Formats (CoAP Content-Formats registry)
_CF_OCTETS = const(42)
_CF_CBOR = const(60)
_CF_ACE_CBOR = const(19)  # application/ace+cbor, RFC 9200 §8.15

# Transmission parameters (RFC 7252 §4.8); times in milliseconds.
_ACK_TIMEOUT_MS = const(2000)
_MAX_RETRANSMIT = const(4)
_MAX_RETRANSMIT_CAP = const(8)  # never back off longer than 2**8 * timeout
_SEPARATE_WAIT_MS = const(30000)  # how long to wait for a separate response
_TOKEN_LEN = const(4)
_MAX_DATAGRAM = const(1280)
_MAX_OPTIONS = const(32)
_MAX_STALE = const(8)  # queued datagrams read before a request is sent

# Error messages: one string constant, cut when an error is raised (cbor.py,
# "Error messages").
_MSG = const(
    "bad token|not CoAP|bad option|no payload|no separate response in %d ms|"
    "no response (%d retransmissions)|peer reset"
)
_BAD_TOKEN = const(0)
_NOT_COAP = const(1)
_BAD_OPTION = const(2)
_NO_PAYLOAD = const(3)
_NO_SEPARATE_RESPONSE = const(4)
_NO_RESPONSE_RETRANSMISSIONS = const(5)
_PEER_RESET = const(6)


class CoAPError(Exception):
    """A CoAP-level failure: malformed message, reset, or no answer."""


def _error(i, args=None):
    m = _MSG.split("|")[i]
    return CoAPError(m if args is None else m % args)


class Message:
    """A CoAP message (RFC 7252 §3): type, code, message ID, token,
    options as a list of (number, bytes) pairs, and payload."""

    def __init__(self, code=0, options=None, payload=b"", mtype=_CON, mid=0, token=b""):
        self.mtype = mtype
        self.code = code
        self.mid = mid
        self.token = token
        self.options = [] if options is None else options
        self.payload = payload

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
        for o in self.options:
            if o[0] == number:
                return o[1]
        return default

    def get_uint(self, number):
        """An option of uint format as an int, or None when absent."""
        v = self.get(number)
        return None if v is None else int.from_bytes(v, "big")

    def encode(self):
        """The message in RFC 7252 §3 wire format."""
        tkl = len(self.token)
        if tkl > 8:
            raise _error(_BAD_TOKEN)
        buf = bytearray((0x40 | self.mtype << 4 | tkl, self.code, self.mid >> 8, self.mid & 0xFF))
        buf.extend(self.token)
        encode_options(buf, self.options)
        if self.payload:
            buf.append(0xFF)
            buf.extend(self.payload)
        return buf

    @staticmethod
    def decode(data, view=False):
        """Parse RFC 7252 §3 wire format; raises CoAPError when malformed.

        With view the payload is a memoryview of data (see decode_options).
        """
        if len(data) < 4 or data[0] >> 6 != 1:
            raise _error(_NOT_COAP)
        tkl = data[0] & 0x0F
        if tkl > 8 or len(data) < 4 + tkl:
            raise _error(_BAD_TOKEN)
        options, payload = decode_options(data, 4 + tkl, view)
        mv = memoryview(data)
        return Message(
            data[1],
            options,
            payload,
            data[0] >> 4 & 3,
            data[2] << 8 | data[3],
            bytes(mv[4 : 4 + tkl]),
        )


def uint(n):
    """Option value of uint format: big-endian, shortest, 0 is empty (§3.2)."""
    k = 0
    m = n
    while m:  # MicroPython ints have no bit_length()
        m >>= 8
        k += 1
    return n.to_bytes(k, "big")


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
    raise _error(_BAD_OPTION)


def encode_options(buf, options):
    """Append options, sorted by number, with deltas (§3.1).

    Repeated options (Uri-Path segments) keep their order: MicroPython's
    sort is not stable, so the index is part of the key.
    """
    last = 0
    for number, _, value in sorted([(o[0], i, o[1]) for i, o in enumerate(options)]):
        at = len(buf)
        buf.append(0)
        d = _ext(buf, number - last)
        buf[at] = d << 4 | _ext(buf, len(value))
        buf.extend(value)
        last = number


def _nibble(data, pos, n):
    # Resolves an extended delta/length nibble; returns (value, new pos).
    if n < 13:
        return n, pos
    if n == 13 and pos < len(data):
        return data[pos] + 13, pos + 1
    if n == 14 and pos + 2 <= len(data):
        return (data[pos] << 8 | data[pos + 1]) + 269, pos + 2
    raise _error(_BAD_OPTION)


def decode_options(data, pos, view=False):
    """Parse options and payload starting at pos; returns (options, payload).

    Option values are bytes copied out of data; the payload too, or with
    view a memoryview of data, valid as long as data is.
    """
    options = []
    number = 0
    end = len(data)
    mv = memoryview(data)  # slices copy once, into the bytes kept
    while pos < end:
        b = data[pos]
        pos += 1
        if b == 0xFF:
            if pos == end:
                raise _error(_NO_PAYLOAD)
            return options, mv[pos:] if view else bytes(mv[pos:])
        delta, pos = _nibble(data, pos, b >> 4)
        length, pos = _nibble(data, pos, b & 0x0F)
        if pos + length > end or len(options) >= _MAX_OPTIONS:
            raise _error(_BAD_OPTION)
        number += delta
        options.append((number, bytes(mv[pos : pos + length])))
        pos += length
    return options, b""


def request(code, path, payload=b"", content_format=None):
    """A request Message for a path such as "/authz-info" or ["a", "b"]."""
    msg = Message(code, None, payload)
    for seg in path if isinstance(path, list) else path.split("/"):
        if seg:
            msg.add(_URI_PATH, seg)
    if content_format is not None:
        msg.add(_CONTENT_FORMAT, content_format)
    return msg


def fetch(send, req):
    """Perform req through send(msg) -> response and follow Block2.

    The Block2 code (RFC 7959) lives in block.py and is loaded only when a
    response is block-wise; the usual small response costs no heap for it.
    """
    resp = send(req)
    if resp.get(_BLOCK2) is None:
        return resp
    import block

    return block.rest(send, req, resp)


class Client:
    """A CoAP client endpoint on one UDP socket (RFC 7252 §4).

    exchange(addr, msg) sends msg as a confirmable request with a fresh
    message ID and token, retransmits with exponential back-off, and returns
    the response (piggybacked on the ACK, or separate).  ack_timeout_ms,
    max_retransmit and separate_wait_ms default to RFC 7252 §4.8 values and
    can be lowered for tests; ACK_RANDOM_FACTOR is 1.5.
    """

    def __init__(
        self,
        ack_timeout_ms=_ACK_TIMEOUT_MS,
        max_retransmit=_MAX_RETRANSMIT,
        separate_wait_ms=_SEPARATE_WAIT_MS,
    ):
        import select
        import socket

        # The receive buffer is allocated once, here at boot while the heap
        # is still in one piece, and every datagram is read into it: a
        # 1280-byte block per response (sock.recv) is hard to find on a heap
        # fragmented by the flow.  MicroPython sockets have no recv_into,
        # and readinto() reads until the buffer is full or the socket would
        # block: so the socket is non-blocking, poll() waits for a datagram
        # and readinto() returns as soon as the queue is empty.
        self.buf = bytearray(_MAX_DATAGRAM)
        self.sock = sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        self.poller = poller = select.poll()
        poller.register(sock, select.POLLIN)
        self.ack_timeout_ms = ack_timeout_ms
        self.max_retransmit = min(max_retransmit, _MAX_RETRANSMIT_CAP)
        self.separate_wait_ms = separate_wait_ms
        self.mid = int.from_bytes(os.urandom(2), "big")
        self.retransmissions = 0  # counter, for diagnostics and tests
        self._last_separate = -1  # message ID of the last separate response

    def close(self):
        self.sock.close()

    def exchange(self, addr, msg):
        """Send msg as a CON request to addr; return the response Message.

        The payload of a response with an OSCORE option is a memoryview of
        the receive buffer, valid until the next exchange (oscore.py decrypts
        it at once); any other payload is bytes of its own.
        """
        # Collect garbage before the exchange, while little is live: the
        # receive buffer needs one contiguous block on a small heap.
        gc.collect()
        sock = self.sock
        buf = self.buf
        poller = self.poller
        self.mid = mid = (self.mid + 1) & 0xFFFF
        msg.mtype = _CON
        msg.mid = mid
        msg.token = token = os.urandom(_TOKEN_LEN)
        wire = msg.encode()
        # ACK_TIMEOUT * random in [1, ACK_RANDOM_FACTOR = 1.5] (§4.8)
        timeout = self.ack_timeout_ms
        timeout += timeout * int.from_bytes(os.urandom(2), "big") // 131070
        attempt = 0
        acked = False
        # Datagrams that queued up since the last exchange (late duplicates,
        # a separate response sent again) are read and answered before the
        # request goes out, so none is read together with its response:
        # readinto() takes all that is queued.  A bounded number, so a flood
        # cannot hold the request back.
        for _ in range(_MAX_STALE):
            try:
                n = sock.readinto(buf)
                if not n:
                    break
                self._reply(addr, Message.decode(memoryview(buf)[:n], True))
            except OSError:
                break
            except CoAPError:
                continue
        sock.sendto(wire, addr)
        deadline = time.ticks_add(time.ticks_ms(), timeout)
        while True:
            left = time.ticks_diff(deadline, time.ticks_ms())
            if left <= 0:
                if acked:
                    raise _error(_NO_SEPARATE_RESPONSE, self.separate_wait_ms)
                if attempt >= self.max_retransmit:
                    raise _error(_NO_RESPONSE_RETRANSMISSIONS, attempt)
                attempt += 1
                self.retransmissions += 1
                timeout *= 2  # exponential back-off (§4.2)
                sock.sendto(wire, addr)
                deadline = time.ticks_add(time.ticks_ms(), timeout)
                continue
            # ipoll() yields a reused tuple per ready socket: no garbage.
            ready = False
            for _ in poller.ipoll(left):
                ready = True
            if not ready:
                continue
            try:
                # None: nothing queued after all.
                n = sock.readinto(buf)
                if not n:
                    continue
                # Options are copied out of the buffer.  A protected payload
                # stays a view of it: OSCORE decrypts it before the next
                # exchange reads into the buffer again.  Any other payload
                # is copied, so the buffer is free for the next read.
                resp = Message.decode(memoryview(buf)[:n], True)
                if resp.get(_OSCORE) is None:
                    resp.payload = bytes(resp.payload)
            except (OSError, CoAPError):
                # Malformed datagrams are ignored (§4.2).
                continue
            t = resp.mtype
            if t >= _ACK and resp.mid == mid:
                if t == _RST:
                    raise _error(_PEER_RESET)
                if resp.code == 0:
                    # Empty ACK: the response will come separately (§5.2.2).
                    if not acked:
                        acked = True
                        deadline = time.ticks_add(time.ticks_ms(), self.separate_wait_ms)
                    continue
                if resp.token == token:
                    return resp  # piggybacked response (§5.2.1)
                continue
            ours = t < _ACK and resp.code and resp.token == token
            if ours and t == _CON:
                self._last_separate = resp.mid
            self._reply(addr, resp, ours)
            if ours:
                return resp  # separate response (§5.2.2)
            # Anything else (duplicates, stray ACKs) is ignored.

    def _reply(self, addr, resp, ours=False):
        # A separate response is ACKed; so is the previous one when our ACK
        # was lost and it came again.  Any other CON we cannot match is
        # rejected with RST (§4.2); other messages need no answer.
        if resp.mtype == _CON and resp.code:
            reply = _ACK if ours or resp.mid == self._last_separate else _RST
            self.sock.sendto(bytes((0x40 | reply << 4, 0, resp.mid >> 8, resp.mid & 0xFF)), addr)

    def sender(self, host, port):
        """A send(msg) -> response function bound to one peer (IPv4 UDP)."""
        import socket

        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
        return lambda msg: self.exchange(addr, msg)
