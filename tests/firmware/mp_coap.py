# The firmware CoAP client (and OSCORE client) against real servers started
# by tests/test_firmware.py on 127.0.0.1.
# Usage: micropython mp_coap.py MODE PORT [ARGS...]
#   get         GET /hello
#   block       GET /big (Block2), prints "BODY <len> <sha256 hex>"
#   separate    GET /slow (empty ACK, then a separate CON response)
#   retransmit  GET /hello through a relay that drops the first datagram
#   timeout     GET to a port where nobody answers
#   oscore      OSCORE GET /hello and /big; ARGS: secret salt sid rid [echo]

import hashlib
import sys

import block
import oscore
from mptest import check, done, eq, hexstr

import coap

# CoAP numbers (the firmware keeps its own as const(), private to coap.py)
BLOCK2 = 23
CF_OCTETS = 42
CON = 0
CONTENT = 0x45
CONTENT_FORMAT = 12

mode, port = sys.argv[1], int(sys.argv[2])
client = coap.Client(ack_timeout_ms=300, max_retransmit=3, separate_wait_ms=5000)
send = client.sender("127.0.0.1", port)

if mode == "get":
    resp = coap.fetch(send, coap.request(coap.GET, "/hello"))
    eq("GET code 2.05", resp.code, CONTENT)
    eq("GET payload", resp.payload, b"hello world")
    eq("GET Content-Format 0", resp.get_uint(CONTENT_FORMAT), 0)
    eq("no retransmission needed", client.retransmissions, 0)
elif mode == "block":
    sent = []

    def counting(msg):
        sent.append(msg.get(BLOCK2))
        return send(msg)

    resp = coap.fetch(counting, coap.request(coap.GET, "/big"))
    eq("Block2 code 2.05", resp.code, CONTENT)
    check("several blocks requested", len(sent) >= 3, f"requests: {len(sent)}")
    eq(
        "later requests carry Block2 num 1..",
        [block.parse_block(b)[0] for b in sent[1:]],
        list(range(1, len(sent))),
    )
    print(f"BODY {len(resp.payload)} {hexstr(hashlib.sha256(resp.payload).digest())}")
elif mode == "separate":
    resp = send(coap.request(coap.GET, "/slow"))
    eq("separate response code", resp.code, CONTENT)
    eq("separate response type CON", resp.mtype, CON)
    eq("separate response payload", resp.payload, b"slow")
elif mode == "retransmit":
    resp = send(coap.request(coap.GET, "/hello"))
    eq("payload after a lost datagram", resp.payload, b"hello world")
    check("retransmitted at least once", client.retransmissions >= 1, client.retransmissions)
elif mode == "timeout":
    client.max_retransmit = 2
    try:
        send(coap.request(coap.GET, "/hello"))
        check("times out", False, "got an answer")
    except coap.CoAPError as e:
        check("times out", "no response (2 retransmissions)" in str(e), str(e))
    eq("retransmissions counted", client.retransmissions, 2)
elif mode == "oscore":
    h = bytes.fromhex
    secret, salt, sid, rid = h(sys.argv[3]), h(sys.argv[4]), h(sys.argv[5]), h(sys.argv[6])
    ctx = oscore.Context(secret, salt, sid, rid)

    def osend(msg):
        return oscore.request(ctx, send, msg)

    first_seq = ctx.seq
    resp = osend(coap.request(coap.GET, "/hello"))
    eq("OSCORE GET code", resp.code, CONTENT)
    eq("OSCORE GET payload", resp.payload, b"hello world")
    if len(sys.argv) > 7 and sys.argv[7] == "echo":
        # The server lost its replay window: 4.01 + Echo, then a retry.
        eq("Echo round trip used two sequence numbers", ctx.seq - first_seq, 2)
    else:
        eq("one sequence number per request", ctx.seq - first_seq, 1)
    resp = coap.fetch(osend, coap.request(coap.GET, "/big"))
    eq("OSCORE Block2 code", resp.code, CONTENT)
    print(f"BODY {len(resp.payload)} {hexstr(hashlib.sha256(resp.payload).digest())}")
    resp = osend(coap.request(coap.POST, "/echo", b"\x01\x02\x03", CF_OCTETS))
    eq("OSCORE POST echoes the payload", resp.payload, b"\x01\x02\x03")
else:
    check("known mode", False, mode)
client.close()
done()
