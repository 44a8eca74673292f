# The firmware's replay window for responses that carry a Partial IV
# (RFC 8613 §7.4), on the RFC 8613 Appendix C.1.1 client context.
# Usage: micropython mp_replay.py responses.json
# responses.json: {"vectors": <tests/vectors/rfc8613_appendix_c.json path>,
#                  "responses": [[seq, hex], ...]},
# each a protected response to the C.4 request; they are unprotected in order
# and "ACCEPT seq" or "REFUSE seq <error>" is printed for each.

import json
import sys

import oscore

import coap

h = bytes.fromhex

with open(sys.argv[1]) as f:
    case = json.load(f)
with open(case["vectors"]) as f:
    V = json.load(f)

k = V["vectors"][0]  # C.1.1, the client
ctx = oscore.Context(h(k["master_secret"]), h(k["master_salt"]), h(k["sender_id"]),
                     h(k["recipient_id"]))  # fmt: skip
req = V["requests"][0]
ctx.seq = req["sender_seq"]
_, state = ctx.protect(coap.Message.decode(h(req["unprotected"])))

for seq, hx in case["responses"]:
    try:
        ctx.unprotect(coap.Message.decode(h(hx)), state)
        print("ACCEPT", seq)
    except oscore.OSCOREError as e:
        print("REFUSE", seq, e)
print("DONE")
