# Sender sequence numbers across a crash (RFC 8613 Appendix B.1.1).
# Usage: micropython mp_seqno.py STATE_FILE COUNT CHUNK DELAY_MS
# Protects COUNT requests with one fixed context whose sequence numbers are
# persisted in STATE_FILE, printing "PIV <hex>" after each one; the pytest
# side kills the process part-way and runs it again.

import sys
import time

import oscore
from mptest import hexstr

import coap

# CoAP numbers (the firmware keeps its own as const(), private to coap.py)
OSCORE = 9

path, count, chunk, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = oscore.SequenceStore(path, chunk)
ctx = oscore.Context(bytes(range(16)), b"salt", b"\x01", b"\x02", store=store)
print("START", ctx.seq)
print("FP", store.fingerprint)
for _ in range(count):
    outer, state = ctx.protect(coap.request(coap.GET, "/temp"))
    piv, _, kid = oscore.decode_option(outer.get(OSCORE))
    print("PIV", hexstr(piv))
    time.sleep_ms(delay)
print(f"END writes={store.writes}")
