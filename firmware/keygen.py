# keybound firmware: the device's own EDHOC key pair, made on the board,
# read back, and offered to the AS.
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
#
# For edhoc_ace.py, which loads this module only for these steps and drops
# it after them (its code is not held through a handshake): load_key reads
# the pair at boot, request_token is step 1 of the EDHOC profile, the token
# request with the CCS as req_cnf and the RS's CCS out of rs_cnf, both
# credentials read and checked by credential_key (the handshake takes the
# kids and the RS's point from there).  ace.py, coap.py and p256.py are
# imported where they are used: keygen() on a board needs only p256.

import binascii
import os

import cbor
from micropython import const

# CoAP numbers (coap.py; a const() does not cross modules)
_CF_ACE_CBOR = const(19)

KEY = "/edhoc.key"
CCS = "/edhoc.ccs"
_PROFILE = const(4)  # coap_edhoc_oscore, provisional (core/numbers/edhoc_profile.py)
_KCCS = const(11)  # cnf method kccs, provisional
_RS_CNF = const(41)
_MAX_CCS = const(512)
_MAX_TOKEN = const(1024)  # as ace.py (consts do not cross modules)


def credential(sk, kid, subject=None):
    """The CCS bytes of private key sk's public key."""
    import p256

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
    import p256

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


def credential_key(ccs):
    """(kid, x, y) of a CCS with an EC2 P-256 COSE_Key in cnf (RFC 9528 §3.5.2).

    The point is checked to be on P-256 (p256.check_point); p256.CurveError
    for anything else.  edhoc.Initiator takes the kid and the point from
    here (its caller keeps them with the credential).
    """
    import p256

    try:
        key = cbor.loads(ccs, 512)[8][1]
        kid, x, y = key[2], key[-2], key[-3]
    except (cbor.CBORError, KeyError, TypeError):
        raise p256.CurveError("credential: not a CCS") from None
    if key.get(1) != 2 or key.get(-1) != 1 or not isinstance(kid, bytes):
        raise p256.CurveError("credential: no P-256 kid")
    if not isinstance(x, bytes) or not isinstance(y, bytes) or len(x) != 32 or len(y) != 32:
        raise p256.CurveError("credential: bad coordinates")
    x = int.from_bytes(x, "big")
    y = int.from_bytes(y, "big")
    try:
        p256.check_point(x, y)
    except p256.CurveError as e:
        raise p256.CurveError("credential: %s" % e) from None
    return kid, x, y


def load_key(state):
    """(private key, CCS) that keygen wrote to the state folder."""
    import ace

    try:
        with open(state + KEY) as f:
            sk = bytes.fromhex(f.read(64))
        with open(state + CCS, "rb") as f:
            ccs = f.read(_MAX_CCS)
    except OSError:
        raise ace.ACEError("no EDHOC key in %s: run keybound device keygen" % state) from None
    return sk, ccs


def value_bytes(data, key):
    """The encoded bytes of the value of integer key in the CBOR map data.

    A credential is used byte for byte (CRED_R, RFC 9528 §5.3.2), so it is
    cut out of the response rather than decoded and encoded again (the map
    order would not survive MicroPython's dict).  data was decoded once
    already (bounded); None when the key is absent.
    """
    import ace

    d = memoryview(data)
    n = d[0] & 31
    p = 1
    if d[0] >> 5 != 5 or n > 24:
        raise ace.ACEError("not a small CBOR map")
    if n == 24:
        n = d[1]
        p = 2
    for _ in range(n):
        k, p = cbor._dec(d, p, 0, 8)
        start = p
        p = cbor._dec(d, p, 0, 8)[1]
        if k == key:
            return bytes(d[start:p])
    return None


def request_token(session):
    """Step 1 of edhoc_ace.Session (draft §3.1-3.3): POST /token with req_cnf
    {11: the device's CCS}; the answer is {1: token, ? 2: expires_in, 38: 4,
    41: {11: CCS}}, the RS's credential checked and kept as session.cred_r,
    its kid and point as session.key_r, the device's kid as session.kid_i.
    p256.py (loaded here) is dropped again by edhoc_ace.Session.ensure."""
    import ace
    import p256

    import coap

    # The device's own credential, checked here rather than at boot: p256.py
    # is not loaded at boot, when the heap holds the most besides it.
    try:
        kid_i = credential_key(session.ccs)[0]
    except p256.CurveError as e:
        raise ace.ACEError("stored edhoc.ccs: %s" % e) from None
    # {4 (req_cnf): {11 (kccs): CCS}, 5: audience, 9: scope, 38: 4}, the
    # CCS spliced in as stored.
    body = bytearray(b"\xa4\x04\xa1\x0b")
    body.extend(session.ccs)
    body.extend(cbor.dumps(5) + cbor.dumps(session.audience))
    body.extend(cbor.dumps(9) + cbor.dumps(session.scope))
    body.extend(cbor.dumps(38) + cbor.dumps(_PROFILE))
    req = coap.request(coap.POST, session.token_path, bytes(body), _CF_ACE_CBOR)
    resp = ace.oscore.request(session.as_ctx, session.send_as, req)
    got = ace._body(resp, "token")
    token = ace._bstr(got, 1, "token")
    if len(token) > _MAX_TOKEN:
        raise ace.ACEError("token: too large")
    if got.get(38) != _PROFILE:
        raise ace.ACEError("token: profile %r not coap_edhoc_oscore" % (got.get(38),))
    rs_cnf = got.get(_RS_CNF)
    if not isinstance(rs_cnf, dict) or list(rs_cnf) != [_KCCS]:
        raise ace.ACEError("token: rs_cnf not kccs")
    cred_r = value_bytes(value_bytes(resp.payload, _RS_CNF), _KCCS)
    if len(cred_r) > _MAX_CCS:
        raise ace.ACEError("token: rs_cnf too large")
    try:
        key_r = credential_key(cred_r)
    except p256.CurveError as e:
        raise ace.ACEError("token: rs_cnf: %s" % e) from None
    session._granted(got, token)
    session.cred_r = cred_r
    session.kid_i = kid_i
    session.key_r = key_r


def main(state="state", kid=None, subject=None):
    """keygen() and print 'CCS <hex>' (new) or 'CCS <hex> existing'."""
    ccs, created = keygen(state, kid and bytes.fromhex(kid), subject)
    print("CCS", binascii.hexlify(ccs).decode(), "" if created else "existing")
