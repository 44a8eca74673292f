# RFC 8613 Appendix C test vectors on the firmware's OSCORE code.
# Usage: micropython mp_vectors.py tests/vectors/rfc8613_appendix_c.json

import json
import sys

import cbor
import oscore
from mptest import check, done, eq

import coap

# CoAP numbers (the firmware keeps its own as const(), private to coap.py)
OSCORE = 9

h = bytes.fromhex

with open(sys.argv[1]) as f:
    V = json.load(f)


def make_ctx(v):
    idc = v["id_context"]
    return oscore.Context(
        h(v["master_secret"]),
        h(v["master_salt"] or ""),  # null: absent, the empty default (RFC 8613 §3.1)
        h(v["sender_id"]),
        h(v["recipient_id"]),
        None if idc is None else h(idc),
    )


contexts = {}
for v in V["vectors"]:
    s = v["section"].split()[0]  # "C.1.1 Client (...)": the requests name it "C.1.1"
    idc = None if v["id_context"] is None else h(v["id_context"])
    ctx = make_ctx(v)
    contexts[s] = (v, ctx)
    eq(
        s + " info (Sender Key)",
        cbor.dumps([h(v["sender_id"]), idc, 10, "Key", 16]),
        h(v["info_sender_key"]),
    )
    eq(
        s + " info (Recipient Key)",
        cbor.dumps([h(v["recipient_id"]), idc, 10, "Key", 16]),
        h(v["info_recipient_key"]),
    )
    eq(s + " info (Common IV)", cbor.dumps([b"", idc, 10, "IV", 13]), h(v["info_common_iv"]))
    eq(s + " Sender Key", ctx.sender_key, h(v["sender_key"]))
    eq(s + " Recipient Key", ctx.recipient_key, h(v["recipient_key"]))
    eq(s + " Common IV", ctx.common_iv, h(v["common_iv"]))
    eq(s + " sender nonce (PIV 0)", ctx.nonce(ctx.sender_id, b"\x00"), h(v["sender_nonce"]))
    eq(
        s + " recipient nonce (PIV 0)",
        ctx.nonce(ctx.recipient_id, b"\x00"),
        h(v["recipient_nonce"]),
    )

states = {}
for v in V["requests"]:
    s = v["section"]
    kv, _ = contexts[v["context"]]
    ctx = make_ctx(kv)  # a fresh context per message
    ctx.seq = v["sender_seq"]
    req = coap.Message.decode(h(v["unprotected"]))
    # class E options (RFC 8613 §4.1): all but Uri-Host, Uri-Port, OSCORE,
    # Proxy-Uri and Proxy-Scheme
    inner = [o for o in req.options if o[0] not in (3, 7, 9, 35, 39)]
    piv = oscore.piv_bytes(v["sender_seq"])
    eq(s + " AAD", oscore.aad(10, ctx.sender_id, piv), h(v["aad"]))
    eq(s + " plaintext", oscore.plaintext(req, inner), h(v["plaintext"]))
    eq(s + " nonce", ctx.nonce(ctx.sender_id, piv), h(v["nonce"]))
    eq(
        s + " AEAD",
        oscore.ccm(ctx.sender_key, h(v["nonce"]), h(v["aad"]), h(v["plaintext"])),
        h(v["ciphertext"]),
    )
    outer, state = ctx.protect(req)
    eq(s + " OSCORE option", outer.get(OSCORE), h(v["option"]))
    eq(s + " protected request bytes", outer.encode(), h(v["protected"]))
    eq(s + " option decodes to its Partial IV", oscore.decode_option(h(v["option"]))[0], piv)
    states[s] = (ctx, state)

for v in V["responses"]:
    s = v["section"]
    ctx, state = states[v["request"]]
    # the server side of the vector, rebuilt from its parts
    eq(
        s + " AEAD",
        oscore.ccm(h(v["key"]), h(v["nonce"]), h(v["aad"]), h(v["plaintext"])),
        h(v["ciphertext"]),
    )
    unprot = coap.Message.decode(h(v["unprotected"]))
    eq(s + " plaintext", oscore.plaintext(unprot, unprot.options), h(v["plaintext"]))
    # a flipped ciphertext bit must not verify
    bad = coap.Message.decode(h(v["protected"]))
    bad.payload = bytes([bad.payload[0] ^ 1]) + bad.payload[1:]
    try:
        ctx.unprotect(bad, state)
        check(s + " tampered response rejected", False, "accepted")
    except oscore.OSCOREError as e:
        check(s + " tampered response rejected", "decryption failed" in str(e), str(e))
    # the client side: unprotect the exact response bytes
    resp = coap.Message.decode(h(v["protected"]))
    eq(s + " OSCORE option", resp.get(OSCORE), h(v["option"]))
    inner = ctx.unprotect(resp, state)
    eq(s + " inner code", inner.code, unprot.code)
    eq(s + " inner payload", inner.payload, unprot.payload)
    eq(s + " inner options", inner.options, unprot.options)

# C.8 carries Partial IV 0: replaying it must now fail the replay window.
ctx, state = states["C.4"]
resp = coap.Message.decode(h(V["responses"][1]["protected"]))
try:
    ctx.unprotect(resp, state)
    check("C.8 replayed response rejected", False, "accepted")
except oscore.OSCOREError as e:
    check("C.8 replayed response rejected", "replay" in str(e), str(e))

done()
