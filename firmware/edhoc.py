# keybound firmware: EDHOC Initiator (RFC 9528), method 3 (static DH for
# both parties), cipher suite 2 (AES-CCM-16-64-128, SHA-256, MAC length 8,
# P-256), authentication credentials CCS by kid.  Loaded only by the EDHOC
# profile (edhoc_ace.py).  Verified against RFC 9529 §3, byte for byte.
#
#   m1 = ini.message_1()                  METHOD, SUITES_I, G_X, C_I
#   c_r = ini.process_message_2(m2)       G_Y, PLAINTEXT_2, MAC_2 (§5.3)
#   m3 = ini.message_3()                  PLAINTEXT_3, MAC_3, AEAD (§5.4)
#   ini.process_message_4(m4)             key confirmation (§5.5)
#   ini.oscore_context()                  RFC 9528 Appendix A.1
#
# The module is on the heap only for a handshake (edhoc_ace.py loads it and
# drops it again).  Its error messages, and the names of the message parts
# they cite, are one string constant cut when an error is raised (cbor.py,
# "Error messages"): a part is named by its index (_M2, _PT2, ...).
# EDHOC_KDF(PRK, label, context, length) = HKDF-Expand(PRK, info, length),
# info the CBOR sequence (label, bstr context, length) (§4.1.2), on
# oscore._hmac; the AEAD is oscore.ccm.  Every received message is bounded
# (_MAX_MESSAGE bytes) and parsed item by item with the firmware's bounded
# CBOR decoder; a critical EAD item (negative label) aborts (§3.8).

import hashlib

import cbor
import oscore
import p256
from micropython import const

_METHOD = const(3)
_SUITE = const(2)
_MAC_LEN = const(8)
_MAX_MESSAGE = const(255)  # the RS's bound on an EDHOC message
_MAX_EAD = const(8)  # EAD items looked at in one message, at most

_MSG = const(
    "error|message_2|PLAINTEXT_2|C_R|ID_CRED_R|EAD_2|message_3|message_4|"
    "PLAINTEXT_4|EAD_4|%s over %d bytes|%s: too many items|%s: %s|bad %s|"
    "%s: too many EAD|%s: critical EAD %d|%s: bad EAD|EDHOC error %d: %r|"
    "wrong ID_CRED_R|bad MAC_2|C_R = C_I|no CIPHERTEXT_4|message_4 does not verify"
)
_ERROR = const(0)
_M2 = const(1)
_PT2 = const(2)
_C_R = const(3)
_ID_CRED_R = const(4)
_EAD2 = const(5)
_M3 = const(6)
_M4 = const(7)
_PT4 = const(8)
_EAD4 = const(9)
_OVER = const(10)
_TOO_MANY = const(11)
_NOT_CBOR = const(12)
_BAD = const(13)
_TOO_MANY_EAD = const(14)
_CRITICAL = const(15)
_BAD_EAD = const(16)
_PEER_ERROR = const(17)
_WRONG_ID_CRED_R = const(18)
_BAD_MAC_2 = const(19)
_SAME_C = const(20)
_NO_CT4 = const(21)
_M4_MAC = const(22)


class EDHOCError(ValueError):
    """An EDHOC message refused, or an EDHOC error message received (§6)."""


def _m(i):
    return _MSG.split("|")[i]


def _error(i, args=None):
    return EDHOCError(_m(i) if args is None else _m(i) % args)


def _h(*parts):
    h = hashlib.sha256()
    for x in parts:
        h.update(x)
    return h.digest()


def _bstr(b):
    return cbor.dumps(bytes(b))


def kdf(prk, label, context, length):
    """EDHOC_KDF (§4.1.2): HKDF-Expand(PRK, (label, context, length), length)."""
    info = cbor.dumps(label) + _bstr(context) + cbor.dumps(length)
    out = b""
    t = b""
    i = 1
    while len(out) < length:
        t = oscore._hmac(prk, t + info + bytes((i,)))
        out += t
        i += 1
    return out[:length]


def _items(data, what, ends=None):
    # A CBOR sequence (RFC 8742) -> list of items, bounded; the end offset
    # of each item is appended to ends when given.  what: the part's index.
    if len(data) > _MAX_MESSAGE:
        raise _error(_OVER, (_m(what), _MAX_MESSAGE))
    d = memoryview(data)
    out = []
    p = 0
    try:
        while p < len(d):
            if len(out) > 2 * _MAX_EAD + 4:
                raise _error(_TOO_MANY, _m(what))
            v, p = cbor._dec(d, p, 0, 4)
            out.append(v)
            if ends is not None:
                ends.append(p)
    except cbor.CBORError as e:
        raise _error(_NOT_CBOR, (_m(what), e)) from None
    return out


def conn_id(raw):
    """The encoding of a connection identifier (§3.3.2).

    A one-byte identifier that is the encoding of a CBOR int -24..23 is
    sent as that int (that one byte); any other as a byte string.
    """
    raw = bytes(raw)
    if len(raw) == 1 and (raw[0] < 0x18 or 0x20 <= raw[0] < 0x38):
        return raw
    return _bstr(raw)


def _id_bytes(v, what):
    # A connection identifier or compact kid as decoded: an int -24..23
    # stands for its one-byte encoding, a byte string for itself.
    if isinstance(v, int) and not isinstance(v, bool) and -24 <= v < 24:
        return cbor.dumps(v)
    if isinstance(v, bytes) and len(v) <= 16:
        return v
    raise _error(_BAD, _m(what))


def _ead(items, what):
    # EAD items (label, ? bstr value) (§3.8): a critical one (negative
    # label) is not supported and aborts; others are ignored.
    if len(items) > 2 * _MAX_EAD:
        raise _error(_TOO_MANY_EAD, _m(what))
    for v in items:
        if isinstance(v, int) and not isinstance(v, bool):
            if v < 0:
                raise _error(_CRITICAL, (_m(what), -v))
        elif not isinstance(v, bytes):
            raise _error(_BAD_EAD, _m(what))


def read_error(payload):
    """'EDHOC error ERR_CODE: ERR_INFO' of an EDHOC error message (§6), or None."""
    try:
        items = _items(payload, _ERROR)
    except EDHOCError:
        return None
    if not items or not isinstance(items[0], int):
        return None
    return _m(_PEER_ERROR) % (items[0], items[1] if len(items) > 1 else None)


class Initiator:
    """One EDHOC session as Initiator, method 3, cipher suite 2.

    sk_i is the device's private key (32 bytes), cred_i its CCS (CRED_I,
    byte for byte as the AS and RS hold it) and kid_i that CCS's kid;
    cred_r the RS's CCS (from rs_cnf) and key_r its (kid, x, y), from
    keygen.credential_key, which checked the point; c_i the connection
    identifier (raw bytes, the device's OSCORE Recipient ID later); x, the
    ephemeral key, is drawn from rand unless given (tests), as is suites,
    SUITES_I (the selected suite 2 last).
    """

    def __init__(self, sk_i, cred_i, kid_i, cred_r, key_r, c_i, rand=None, x=None, suites=_SUITE):
        self.sk_i = sk_i
        self.cred_i = cred_i
        self.kid_i = kid_i
        self.cred_r = cred_r
        self.kid_r, gx_r, gy_r = key_r
        self.g_r = (gx_r, gy_r)
        self.c_i = bytes(c_i)
        self.suites = suites
        self.x = x if x is not None else p256.generate(rand)
        self.c_r = self.th = self.prk = None

    def message_1(self):
        """message_1 (§5.2.1): (METHOD 3, SUITES_I, G_X, C_I); no EAD_1."""
        g_x = p256.public(self.x)[0].to_bytes(32, "big")
        m1 = cbor.dumps(_METHOD) + cbor.dumps(self.suites) + _bstr(g_x) + conn_id(self.c_i)
        self.h1 = _h(m1)
        return m1

    def process_message_2(self, m2):
        """Verify message_2 (§5.3.3); returns C_R (raw bytes)."""
        items = _items(m2, _M2)
        if len(items) != 1 or not isinstance(items[0], bytes) or len(items[0]) < 34:
            raise _error(_BAD, _m(_M2))
        gc = items[0]
        try:
            g_y = p256.decompress(gc[:32])
            g_xy = p256.ecdh(self.x, *g_y)
            g_rx = p256.ecdh(self.x, *self.g_r)
        except p256.CurveError as e:
            raise _error(_NOT_CBOR, (_m(_M2), e)) from None
        th2 = _h(_bstr(gc[:32]), _bstr(self.h1))
        prk2e = oscore._hmac(th2, g_xy)
        ct = gc[32:]
        ks = kdf(prk2e, 0, th2, len(ct))
        pt2 = bytes(ct[i] ^ ks[i] for i in range(len(ct)))
        ends = []
        items = _items(pt2, _PT2, ends)
        if len(items) < 3 or not isinstance(items[2], bytes) or len(items[2]) != _MAC_LEN:
            raise _error(_BAD, _m(_PT2))
        c_r = _id_bytes(items[0], _C_R)
        id_cred = items[1]
        if isinstance(id_cred, dict):
            # by value {14: CCS} must be the expected credential; {4: kid} in
            # full form is not allowed: a kid alone is always compact (§3.5.3.2)
            if id_cred != {14: cbor.loads(self.cred_r, 512)}:
                raise _error(_WRONG_ID_CRED_R)
            id_cred_r = b"\xa1\x0e" + self.cred_r
        elif _id_bytes(id_cred, _ID_CRED_R) == self.kid_r:
            id_cred_r = cbor.dumps({4: self.kid_r})
        else:
            raise _error(_WRONG_ID_CRED_R)
        _ead(items[3:], _EAD2)
        ead2 = pt2[ends[2] :]  # EAD_2: what follows MAC_2
        salt = kdf(prk2e, 1, th2, 32)
        prk3e2m = oscore._hmac(salt, g_rx)
        # context_2 = << C_R, ID_CRED_R, TH_2, CRED_R, ? EAD_2 >> (§5.3.2)
        mac2 = kdf(prk3e2m, 2, conn_id(c_r) + id_cred_r + _bstr(th2) + self.cred_r + ead2, _MAC_LEN)
        diff = 0
        for i in range(_MAC_LEN):
            diff |= mac2[i] ^ items[2][i]
        if diff:
            raise _error(_BAD_MAC_2)
        if c_r == self.c_i:
            raise _error(_SAME_C)
        self.th = _h(_bstr(th2), pt2, self.cred_r)  # TH_3
        self.prk = prk3e2m
        self.g_y = g_y
        self.c_r = c_r
        return c_r

    def message_3(self):
        """message_3 (§5.4.2); no EAD_3."""
        th3 = self.th
        try:
            g_iy = p256.ecdh(self.sk_i, *self.g_y)
        except p256.CurveError as e:
            raise _error(_NOT_CBOR, (_m(_M3), e)) from None
        prk4e3m = oscore._hmac(kdf(self.prk, 5, th3, 32), g_iy)
        id_cred_i = cbor.dumps({4: self.kid_i})
        mac3 = kdf(prk4e3m, 6, id_cred_i + _bstr(th3) + self.cred_i, _MAC_LEN)
        pt3 = conn_id(self.kid_i) + _bstr(mac3)
        k3 = kdf(self.prk, 3, th3, 16)
        iv3 = kdf(self.prk, 4, th3, 13)
        ct3 = oscore.ccm(k3, iv3, cbor.dumps(["Encrypt0", b"", th3]), pt3)
        self.th = _h(_bstr(th3), pt3, self.cred_i)  # TH_4
        self.prk = prk4e3m
        self.x = self.g_y = None  # the ephemeral key is done with
        return _bstr(ct3)

    def process_message_4(self, m4):
        """Verify message_4 (§5.5.3): key confirmation from the Responder."""
        items = _items(m4, _M4)
        if len(items) != 1 or not isinstance(items[0], bytes):
            raise _error(_NO_CT4)
        th4 = self.th
        try:
            pt4 = oscore.ccm(
                kdf(self.prk, 8, th4, 16),
                kdf(self.prk, 9, th4, 13),
                cbor.dumps(["Encrypt0", b"", th4]),
                items[0],
                True,
            )
        except oscore.OSCOREError:
            raise _error(_M4_MAC) from None
        _ead(_items(pt4, _PT4), _EAD4)

    def exporter(self, label, length):
        """EDHOC_Exporter(label, h'', length) (§4.2.1), after message_3."""
        prk_out = kdf(self.prk, 7, self.th, 32)
        return kdf(kdf(prk_out, 10, b"", 32), label, b"", length)

    def oscore_context(self, store=None):
        """The OSCORE context of RFC 9528 Appendix A.1, for the Initiator.

        Master Secret = EDHOC_Exporter(0, h'', 16), Master Salt =
        EDHOC_Exporter(1, h'', 8); Sender ID = C_R, Recipient ID = C_I;
        AES-CCM-16-64-128 and HKDF-SHA-256 of cipher suite 2.  Keys are new
        for every session (a fresh ephemeral key), so a RAM-only sequence
        store never reuses a nonce.
        """
        return oscore.Context(
            self.exporter(0, 16), self.exporter(1, 8), self.c_r, self.c_i, None, 10, store
        )
