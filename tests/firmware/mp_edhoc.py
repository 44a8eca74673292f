# RFC 9529 §3 (method 3, cipher suite 2, CCS by kid) on the firmware's
# P-256 and EDHOC Initiator: the published trace (RFC 9528 as published,
# C_R in context_2) from tests/vectors/rfc9529_traces.json, the file the
# CPython EDHOC is checked against; the Initiator object runs the whole
# trace byte for byte, then the refusals: tampered, malformed or invalid
# messages.
# Usage: micropython mp_edhoc.py tests/vectors/rfc9529_traces.json

import json
import sys

import cbor
import edhoc
import keygen
import p256
from mptest import check, done, eq, raises

h = bytes.fromhex

with open(sys.argv[1]) as f:
    T = next(t for t in json.load(f)["traces"] if t["section"] == "RFC 9529 Section 3")
B = {k: h(v) for k, v in T.items() if isinstance(v, str) and k != "section"}
M = {k: h(v) for k, v in T["intermediate"].items()}
check("trace of method 3, suite 2", T["method"] == 3 and T["suite"] == 2)

# ---- P-256 --------------------------------------------------------------
G_X = B["message_1"][6:38]  # 0x03, [6, 2] (0x82 0x06 0x02), 0x58 0x20 G_X, C_I
G_Y = cbor.loads(B["message_2"])[:32]
eq("G_X = X * G", p256.public(B["X"])[0].to_bytes(32, "big"), G_X)
eq("G_Y = Y * G", p256.public(B["Y"])[0].to_bytes(32, "big"), G_Y)
g_y = p256.decompress(G_Y)
g_x = p256.decompress(G_X)
eq("X * G_Y = Y * G_X", p256.ecdh(B["X"], *g_y), p256.ecdh(B["Y"], *g_x))
kid_r, xr, yr = keygen.credential_key(B["CRED_R"])
kid_i, xi, yi = keygen.credential_key(B["CRED_I"])
eq("kid of CRED_R", kid_r, b"\x32")
eq("kid of CRED_I", kid_i, b"\x2b")
eq("ID_CRED_R = {4: kid}", cbor.dumps({4: kid_r}), B["ID_CRED_R"])
eq("ID_CRED_I = {4: kid}", cbor.dumps({4: kid_i}), B["ID_CRED_I"])
eq("PK_R = (x, y) of CRED_R", xr.to_bytes(32, "big") + yr.to_bytes(32, "big"), B["PK_R"])
eq("PK_I = (x, y) of CRED_I", xi.to_bytes(32, "big") + yi.to_bytes(32, "big"), B["PK_I"])
check("G_R = SK_R * G", p256.public(B["SK_R"]) == (xr, yr))
check("G_I = SK_I * G", p256.public(B["SK_I"]) == (xi, yi))
eq("X * G_R = SK_R * G_X", p256.ecdh(B["X"], xr, yr), p256.ecdh(B["SK_R"], *g_x))
eq("SK_I * G_Y = Y * G_I", p256.ecdh(B["SK_I"], *g_y), p256.ecdh(B["Y"], xi, yi))


# ---- the Initiator through the whole trace (RFC 9528 §5) ---------------
KEY_R = (kid_r, xr, yr)


def initiator():
    return edhoc.Initiator(
        B["SK_I"], B["CRED_I"], kid_i, B["CRED_R"], KEY_R, B["C_I"], x=B["X"], suites=[6, 2]
    )


ini = initiator()
eq("message_1", ini.message_1(), B["message_1"])
# MAC_2 over context_2 = << C_R, ID_CRED_R, TH_2, CRED_R >> (§5.3.2)
eq("message_2: C_R", ini.process_message_2(B["message_2"]), B["C_R"])
eq("TH_3", ini.th, M["TH_3"])
eq("PRK_3e2m", ini.prk, M["PRK_3e2m"])
eq("message_3", ini.message_3(), B["message_3"])
eq("TH_4", ini.th, M["TH_4"])
eq("PRK_4e3m", ini.prk, M["PRK_4e3m"])
check("message_4 verifies", ini.process_message_4(B["message_4"]) is None)
prk_out = edhoc.kdf(ini.prk, 7, ini.th, 32)
eq("PRK_out", prk_out, B["PRK_out"])
eq("PRK_exporter", edhoc.kdf(prk_out, 10, b"", 32), M["PRK_exporter"])
eq("OSCORE Master Secret = exporter(0, 16)", ini.exporter(0, 16), M["OSCORE_Master_Secret"])
eq("OSCORE Master Salt = exporter(1, 8)", ini.exporter(1, 8), M["OSCORE_Master_Salt"])
ctx = ini.oscore_context()
eq("OSCORE Sender ID = C_R", ctx.sender_id, B["C_R"])
eq("OSCORE Recipient ID = C_I", ctx.recipient_id, B["C_I"])
one = edhoc.Initiator(B["SK_I"], B["CRED_I"], kid_i, B["CRED_R"], KEY_R, B["C_I"], x=B["X"])
eq("message_1, suite 2 alone", one.message_1()[:2], b"\x03\x02")

# ---- refusals ----------------------------------------------------------
m2 = B["message_2"]


def after_m1(m2x):
    i = initiator()
    i.message_1()
    return i.process_message_2(m2x)


def flip(b, i):
    b = bytearray(b)
    b[i] ^= 1
    return bytes(b)


# The untampered message_2 verifies above; each of these changes one bit.
# message_2 = 0x58 0x2b, G_Y (32), CIPHERTEXT_2 = PLAINTEXT_2 xor KEYSTREAM_2,
# PLAINTEXT_2 = C_R (1), ID_CRED_R (1), bstr MAC_2 (1 + 8).
raises("MAC_2 tampered", edhoc.EDHOCError, after_m1, flip(m2, len(m2) - 1), contains="MAC_2")
raises("MAC_2 first byte tampered", edhoc.EDHOCError, after_m1, flip(m2, 37), contains="MAC_2")
# C_R is under MAC_2 (context_2 begins with C_R, RFC 9528 §5.3.2).
raises("C_R tampered", edhoc.EDHOCError, after_m1, flip(m2, 34), contains="MAC_2")
raises("G_Y not on the curve", edhoc.EDHOCError, after_m1, b"\x58\x2b" + bytes(32) + m2[34:])
pbytes = p256.P.to_bytes(32, "big")
raises("G_Y x >= p", edhoc.EDHOCError, after_m1, b"\x58\x2b" + pbytes + m2[34:], contains="below p")
raises("message_2 truncated", edhoc.EDHOCError, after_m1, m2[:-3])
raises("message_2 too long", edhoc.EDHOCError, after_m1, bytes(300), contains="over 255")
raises("message_2 not a bstr", edhoc.EDHOCError, after_m1, b"\x01")
raises("message_2 two items", edhoc.EDHOCError, after_m1, m2 + b"\x01")
# Another responder credential (kid 0x33): ID_CRED_R names the wrong one.
other = B["CRED_R"].replace(b"\x02\x41\x32", b"\x02\x41\x33")
i2 = edhoc.Initiator(
    B["SK_I"], B["CRED_I"], kid_i, other, keygen.credential_key(other), B["C_I"], x=B["X"],
    suites=[6, 2],
)  # fmt: skip
i2.message_1()
raises(
    "ID_CRED_R of another credential",
    edhoc.EDHOCError,
    i2.process_message_2,
    m2,
    contains="ID_CRED_R",
)


def at_m4(m4x):
    i = initiator()
    i.message_1()
    i.process_message_2(m2)
    i.message_3()
    return i.process_message_4(m4x)


m4 = B["message_4"]  # 0x48, CIPHERTEXT_4: the CCM tag of an empty PLAINTEXT_4
check("message_4 untampered verifies again", at_m4(m4) is None)
raises("message_4 tag tampered", edhoc.EDHOCError, at_m4, flip(m4, len(m4) - 1), contains="verify")
raises("message_4 first byte tampered", edhoc.EDHOCError, at_m4, flip(m4, 1), contains="verify")
raises("message_4 truncated", edhoc.EDHOCError, at_m4, b"\x47" + m4[1:-1], contains="verify")
raises("message_4 not a bstr", edhoc.EDHOCError, at_m4, b"\x01", contains="CIPHERTEXT_4")
raises("message_4 two items", edhoc.EDHOCError, at_m4, m4 + b"\x40", contains="CIPHERTEXT_4")
# _ead names the message part by its index in edhoc.py's message table: 5 is EAD_2.
raises("critical EAD", edhoc.EDHOCError, edhoc._ead, [-3, b"x"], 5, contains="EAD_2: critical")
check("non-critical EAD ignored", edhoc._ead([3, b"x", 5], 5) is None)
raises(
    "credential off the curve",
    p256.CurveError,
    keygen.credential_key,
    B["CRED_R"].replace(b"\x45\x19", b"\x45\x18"),
)
raises("scalar 0", p256.CurveError, p256.scalar, bytes(32))
raises("scalar n", p256.CurveError, p256.scalar, p256.N.to_bytes(32, "big"))
raises("result at infinity", p256.CurveError, p256.mul, p256.N, p256.GX, p256.GY)
eq("(n - 1) * G = -G", p256.mul(p256.N - 1, p256.GX, p256.GY)[1], p256.P - p256.GY)
draws = iter([bytes(32), p256.N.to_bytes(32, "big"), b"\xff" * 32, B["X"]])
eq("keygen rejects 0, n, 2^256-1", p256.generate(lambda n: next(draws)), B["X"])
eq("conn_id 0x37 as int", edhoc.conn_id(b"\x37"), b"\x37")
eq("conn_id 0x18 as bstr", edhoc.conn_id(b"\x18"), b"\x41\x18")
eq("read_error", edhoc.read_error(b"\x02\x02"), "EDHOC error 2: 2")
done()
