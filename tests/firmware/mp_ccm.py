# AES-CCM-16-64-128 (firmware oscore.ccm) against cases made by CPython's
# cryptography AESCCM(tag_length=8).  Usage: micropython mp_ccm.py cases.json

import json
import sys

import oscore
from mptest import check, done, eq

h = bytes.fromhex

with open(sys.argv[1]) as f:
    cases = json.load(f)

for i, c in enumerate(cases):
    key, nonce, aad, pt, ct = h(c["key"]), h(c["nonce"]), h(c["aad"]), h(c["pt"]), h(c["ct"])
    name = f"case {i} (pt {len(pt)} B, aad {len(aad)} B)"
    eq(name + " encrypt", oscore.ccm(key, nonce, aad, pt), ct)
    eq(name + " decrypt", oscore.ccm(key, nonce, aad, ct, True), pt)
    for what, args in (
        ("tag", (key, nonce, aad, ct[:-1] + bytes([ct[-1] ^ 0x80]))),
        ("aad", (key, nonce, aad + b"\x00", ct)),
        ("nonce", (key, bytes([nonce[0] ^ 1]) + nonce[1:], aad, ct)),
    ):
        try:
            oscore.ccm(*args, True)
            check(name + " rejects a changed " + what, False, "accepted")
        except oscore.OSCOREError as e:
            check(name + " rejects a changed " + what, str(e) == "decryption failed", str(e))
done()
