# RFC 9529 §3 (method 3, cipher suite 2, CCS by kid) on the firmware's
# P-256 and EDHOC Initiator, every intermediate value byte for byte, then
# the refusals: tampered, malformed or invalid messages.
# Usage: micropython mp_edhoc.py tests/firmware/rfc9529_trace_method3.json

import json
import sys

import cbor
import edhoc
import oscore
import p256
from mptest import check, done, eq, raises

h = bytes.fromhex

with open(sys.argv[1]) as f:
    V = json.load(f)
B = {k: h(v) for k, v in V.items() if isinstance(v, str) and k != "source"}


def bstr(b):
    return cbor.dumps(b)


# ---- P-256 --------------------------------------------------------------
eq("G_X = X * G", p256.public(B["X"])[0].to_bytes(32, "big"), B["G_X"])
eq("G_Y = Y * G", p256.public(B["Y"])[0].to_bytes(32, "big"), B["G_Y"])
g_y = p256.decompress(B["G_Y"])
g_x = p256.decompress(B["G_X"])
eq("G_XY = X * G_Y", p256.ecdh(B["X"], *g_y), B["G_XY"])
eq("G_XY = Y * G_X", p256.ecdh(B["Y"], *g_x), B["G_XY"])
kid_r, xr, yr = edhoc.credential_key(B["CRED_R"])
kid_i, xi, yi = edhoc.credential_key(B["CRED_I"])
eq("kid of CRED_R", kid_r, b"\x32")
eq("kid of CRED_I", kid_i, b"\x2b")
check("G_R = SK_R * G", p256.public(B["SK_R"]) == (xr, yr))
check("G_I = SK_I * G", p256.public(B["SK_I"]) == (xi, yi))
eq("G_RX = X * G_R", p256.ecdh(B["X"], xr, yr), B["G_RX"])
eq("G_IY = SK_I * G_Y", p256.ecdh(B["SK_I"], *g_y), B["G_IY"])

# ---- key schedule, step by step (RFC 9528 §4) --------------------------
eq("H(message_1)", edhoc._h(B["message_1"]), B["H_message_1"])
th2 = edhoc._h(bstr(B["G_Y"]), bstr(B["H_message_1"]))
eq("TH_2", th2, B["TH_2"])
prk2e = oscore._hmac(th2, B["G_XY"])
eq("PRK_2e", prk2e, B["PRK_2e"])
eq("KEYSTREAM_2", edhoc.kdf(prk2e, 0, th2, 11), B["KEYSTREAM_2"])
salt = edhoc.kdf(prk2e, 1, th2, 32)
eq("SALT_3e2m", salt, B["SALT_3e2m"])
prk3e2m = oscore._hmac(salt, B["G_RX"])
eq("PRK_3e2m", prk3e2m, B["PRK_3e2m"])
eq("ID_CRED_R", cbor.dumps({4: kid_r}), B["ID_CRED_R"])
ctx2 = B["ID_CRED_R"] + bstr(th2) + B["CRED_R"]
eq("MAC_2", edhoc.kdf(prk3e2m, 2, ctx2, 8), B["MAC_2"])
eq(
    "CIPHERTEXT_2",
    bytes(B["PLAINTEXT_2"][i] ^ B["KEYSTREAM_2"][i] for i in range(11)),
    B["CIPHERTEXT_2"],
)
th3 = edhoc._h(bstr(th2), B["PLAINTEXT_2"], B["CRED_R"])
eq("TH_3", th3, B["TH_3"])
salt4 = edhoc.kdf(prk3e2m, 5, th3, 32)
eq("SALT_4e3m", salt4, B["SALT_4e3m"])
prk4e3m = oscore._hmac(salt4, B["G_IY"])
eq("PRK_4e3m", prk4e3m, B["PRK_4e3m"])
ctx3 = B["ID_CRED_I"] + bstr(th3) + B["CRED_I"]
eq("MAC_3", edhoc.kdf(prk4e3m, 6, ctx3, 8), B["MAC_3"])
eq("K_3", edhoc.kdf(prk3e2m, 3, th3, 16), B["K_3"])
eq("IV_3", edhoc.kdf(prk3e2m, 4, th3, 13), B["IV_3"])
a3 = cbor.dumps(["Encrypt0", b"", th3])
eq("CIPHERTEXT_3", oscore.ccm(B["K_3"], B["IV_3"], a3, B["PLAINTEXT_3"]), B["CIPHERTEXT_3"])
th4 = edhoc._h(bstr(th3), B["PLAINTEXT_3"], B["CRED_I"])
eq("TH_4", th4, B["TH_4"])
eq("K_4", edhoc.kdf(prk4e3m, 8, th4, 16), B["K_4"])
eq("IV_4", edhoc.kdf(prk4e3m, 9, th4, 13), B["IV_4"])
a4 = cbor.dumps(["Encrypt0", b"", th4])
eq("CIPHERTEXT_4", oscore.ccm(B["K_4"], B["IV_4"], a4, b""), B["CIPHERTEXT_4"])
prk_out = edhoc.kdf(prk4e3m, 7, th4, 32)
eq("PRK_out", prk_out, B["PRK_out"])
eq("PRK_exporter", edhoc.kdf(prk_out, 10, b"", 32), B["PRK_exporter"])


# ---- the Initiator, message by message ---------------------------------
# The Initiator follows RFC 9528 as published: context_2 begins with C_R.
# The trace's MAC_2 (a draft without it) does not verify there, so the
# Initiator is run on the trace up to message_2, and the published MAC_2
# rule is checked by the RS (lakers) in test_firmware_edhoc.py.
eq("MAC_2 with C_R in context_2", len(edhoc.kdf(prk3e2m, 2, B["C_R"] + ctx2, 8)), 8)


def initiator():
    return edhoc.Initiator(B["SK_I"], B["CRED_I"], B["CRED_R"], B["C_I"], x=B["X"], suites=[6, 2])


ini = initiator()
eq("message_1", ini.message_1(), B["message_1"])
raises(
    "draft MAC_2 refused", edhoc.EDHOCError, ini.process_message_2, B["message_2"], contains="MAC_2"
)
one = edhoc.Initiator(B["SK_I"], B["CRED_I"], B["CRED_R"], B["C_I"], x=B["X"])
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


raises("MAC_2 tampered", edhoc.EDHOCError, after_m1, flip(m2, len(m2) - 1), contains="MAC_2")
# C_R is not under MAC_2 but under TH_3: a changed C_R changes message_3,
# which the Responder then refuses (MAC_3, RFC 9528 §5.4.3).
raises("G_Y not on the curve", edhoc.EDHOCError, after_m1, b"\x58\x2b" + bytes(32) + m2[34:])
pbytes = p256.P.to_bytes(32, "big")
raises("G_Y x >= p", edhoc.EDHOCError, after_m1, b"\x58\x2b" + pbytes + m2[34:], contains="below p")
raises("message_2 truncated", edhoc.EDHOCError, after_m1, m2[:-3])
raises("message_2 too long", edhoc.EDHOCError, after_m1, bytes(300), contains="over 255")
raises("message_2 not a bstr", edhoc.EDHOCError, after_m1, b"\x01")
raises("message_2 two items", edhoc.EDHOCError, after_m1, m2 + b"\x01")
# Another responder credential (kid 0x33): ID_CRED_R names the wrong one.
other = B["CRED_R"].replace(b"\x02\x41\x32", b"\x02\x41\x33")
i2 = edhoc.Initiator(B["SK_I"], B["CRED_I"], other, B["C_I"], x=B["X"], suites=[6, 2])
i2.message_1()
raises(
    "ID_CRED_R of another credential",
    edhoc.EDHOCError,
    i2.process_message_2,
    m2,
    contains="ID_CRED_R",
)
raises("critical EAD", edhoc.EDHOCError, edhoc._ead, [-3, b"x"], "EAD_2", contains="critical")
check("non-critical EAD ignored", edhoc._ead([3, b"x", 5], "EAD_2") is None)
raises(
    "credential off the curve",
    edhoc.EDHOCError,
    edhoc.credential_key,
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
