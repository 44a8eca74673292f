# keybound firmware: the device's own EDHOC key pair, made on the board.
#
# keygen(state, kid, subject) draws a P-256 private key from os.urandom
# (rejection sampling into [1, n-1], p256.generate) and writes it, once, to
# <state>/edhoc.key (64 hex digits), and the public credential to
# <state>/edhoc.ccs: a CWT Claims Set {2: subject, 8: {1: COSE_Key}} with
# the COSE_Key {1: 2, 2: kid, -1: 1, -2: x, -3: y} (RFC 9528 §3.5.2), in
# the core deterministic encoding (RFC 8949 §4.2.1), as keybound's CPython
# side writes it.  An existing key is never overwritten: keygen then only
# reports the credential it has.  The private key never leaves the state
# folder (no bundle carries it); `keybound device keygen` runs this over
# the serial port and fetches the CCS, printed as "CCS <hex>".

import binascii
import os

import cbor
import p256

KEY = "/edhoc.key"
CCS = "/edhoc.ccs"


def credential(sk, kid, subject=None):
    """The CCS bytes of private key sk's public key."""
    x, y = p256.public(sk)
    key = {1: 2, 2: kid, -1: 1, -2: x.to_bytes(32, "big"), -3: y.to_bytes(32, "big")}
    claims = {8: {1: key}}
    if subject:
        claims[2] = subject
    return cbor.dumps(claims, True)


def keygen(state="state", kid=None, subject=None, rand=os.urandom):
    """Make the key pair unless there is one; returns (ccs, created)."""
    try:
        os.stat(state)
    except OSError:
        os.mkdir(state)
    try:
        os.stat(state + KEY)
    except OSError:
        pass
    else:
        with open(state + CCS, "rb") as f:
            return f.read(512), False  # written once, never replaced
    sk = p256.generate(rand)
    ccs = credential(sk, kid or rand(4), subject)
    # The credential first: a power cut between the two writes leaves no
    # key, and the next keygen starts over with a new one.
    with open(state + CCS, "wb") as f:
        f.write(ccs)
    with open(state + KEY + ".tmp", "w") as f:
        f.write(binascii.hexlify(sk).decode())
    os.rename(state + KEY + ".tmp", state + KEY)
    return ccs, True


def main(state="state", kid=None, subject=None):
    """keygen() and print 'CCS <hex>' (new) or 'CCS <hex> existing'."""
    ccs, created = keygen(state, kid and bytes.fromhex(kid), subject)
    print("CCS", binascii.hexlify(ccs).decode(), "" if created else "existing")
