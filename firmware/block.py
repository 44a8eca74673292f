# keybound firmware: Block2, block-wise transfer of large responses
# (RFC 7959 §2).  coap.fetch() imports this module only when a response
# carries Block2, so small responses need none of this code in RAM.

from micropython import const

import coap

# CoAP numbers (coap.py; a const() does not cross modules)
_BLOCK2 = const(23)
_ETAG = const(4)

_MAX_BODY = const(16384)  # cap on a reassembled body


def block_value(num, more, szx):
    """Block option value (RFC 7959 §2.2): NUM, M bit and SZX."""
    return coap.uint((num << 4) | (8 if more else 0) | szx)


def parse_block(value):
    """Block option value -> (num, more, szx); SZX 7 is reserved (§2.2)."""
    n = int.from_bytes(value, "big")
    szx = n & 7
    if szx == 7:
        raise coap.CoAPError("reserved block size exponent 7")
    return n >> 4, bool(n & 8), szx


def rest(send, req, resp, max_body=_MAX_BODY):
    """Fetch the blocks after the first response resp (RFC 7959 §2.4).

    While a response carries Block2 with M=1, ask for the next block with
    the same request options and Block2 = (num + 1, szx).  The body is
    capped at max_body bytes and checked for block numbering and a stable
    ETag.  Returns the last response with the whole body as its payload.
    """
    blk = resp.get(_BLOCK2)
    body = bytearray()
    etag = resp.get(_ETAG)
    expect = 0
    while True:
        num, more, szx = parse_block(blk)
        if num != expect:
            raise coap.CoAPError("unexpected block %d (wanted %d)" % (num, expect))
        if resp.get(_ETAG) != etag:
            raise coap.CoAPError("representation changed during block-wise transfer")
        if more and len(resp.payload) != 1 << (szx + 4):
            raise coap.CoAPError("block %d has the wrong size" % num)
        if len(body) + len(resp.payload) > max_body:
            raise coap.CoAPError("block-wise body exceeds %d bytes" % max_body)
        body.extend(resp.payload)
        if not more:
            break
        # Later blocks keep the block size; byte offsets stay aligned because
        # num is counted in units of this size.
        expect = num + 1
        nxt = coap.Message(req.code, [o for o in req.options if o[0] != _BLOCK2], req.payload)
        nxt.add(_BLOCK2, block_value(expect, False, szx))
        resp = send(nxt)
        blk = resp.get(_BLOCK2)
        if blk is None:
            raise coap.CoAPError("block-wise response lost its Block2 option")
    resp.payload = body  # a bytearray; copying 16 KB into bytes costs RAM
    resp.options = [o for o in resp.options if o[0] != _BLOCK2]
    return resp
