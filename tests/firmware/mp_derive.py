# RFC 9203 §4.3 context derivation, printed for an independent check in
# CPython.  Usage: micropython mp_derive.py MS SALT N1 N2 ID1 ID2 CONTEXT_ID
import sys

import oscore_ace
from mptest import done, eq, hexstr

ms, salt, n1, n2, id1, id2, ctx_id = (bytes.fromhex(a) for a in sys.argv[1:8])
# OSCORE_Input_Material (RFC 9203 §3.2.1): 0 id, 2 ms, 5 salt, 6 contextId
osc = {0: b"\x00", 2: ms, 5: salt, 6: ctx_id}
ctx = oscore_ace.derive_context(osc, n1, n2, id1, id2)
print("SALT", hexstr(oscore_ace.master_salt(salt, n1, n2)))
print("SK", hexstr(ctx.sender_key))
print("RK", hexstr(ctx.recipient_key))
print("IV", hexstr(ctx.common_iv))
eq("roles: sender ID is ID2", ctx.sender_id, id2)
eq("roles: recipient ID is ID1", ctx.recipient_id, id1)
eq("ID Context is contextId", ctx.id_context, ctx_id)
eq("absent salt is the empty byte string", oscore_ace.master_salt(None, n1, n2)[:1], b"\x40")
done()
