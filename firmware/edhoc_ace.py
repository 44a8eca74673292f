# keybound firmware: the ACE-OAuth client flow for the EDHOC and OSCORE
# profile (draft-ietf-ace-edhoc-oscore-profile-11).  Imported by app.py only
# for a bundle with "profile": "edhoc", with edhoc.py and p256.py below it.
#
#   1. POST /token over the client-AS OSCORE context with ace_profile 4
#      (coap_edhoc_oscore, provisional) and req_cnf {11 (kccs): CCS}, the
#      device's own credential by value (draft §3.1); the answer carries
#      the token and rs_cnf {11: the RS's CCS} (draft §3.3);
#   2. POST {1: token} to the RS's /authz-info, unprotected: 2.01 (§4.1);
#   3. EDHOC with the RS as Initiator at /.well-known/edhoc (RFC 9528
#      Appendix A.2, the forward flow: message_1 behind a CBOR true,
#      message_3 behind C_R), method 3, cipher suite 2, the device's
#      credential by kid; message_4 verified;
#   4. OSCORE requests over the context EDHOC derives (RFC 9528 A.1); an
#      expired token or an unprotected 4.01 starts over from 1 (ace.Session).
#
# The device's private key and its CCS live in the state folder, written
# once by keygen.py; they are read here and never leave the board.

import gc
import sys

import ace
import cbor
from micropython import const

import coap

_PROFILE = const(4)  # coap_edhoc_oscore, provisional (core/numbers/edhoc_profile.py)
_KCCS = const(11)  # cnf method kccs, provisional
_RS_CNF = const(41)
_CF_EDHOC_CID = const(65)  # application/cid-edhoc+cbor-seq (RFC 9528 §10.9)
_MAX_CCS = const(512)
_MAX_TOKEN = const(1024)  # as ace.py (consts do not cross modules)


def value_bytes(data, key):
    """The encoded bytes of the value of integer key in the CBOR map data.

    A credential is used byte for byte (CRED_R, RFC 9528 §5.3.2), so it is
    cut out of the response rather than decoded and encoded again (the map
    order would not survive MicroPython's dict).  data was decoded once
    already (bounded); None when the key is absent.
    """
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


def _load_edhoc():
    # edhoc.py and p256.py are loaded for a handshake (or a credential
    # check) and dropped after it (_unload): their code, about 14 KB of heap
    # on the 64-bit unix port, is not held while the OSCORE requests run.
    import edhoc

    return edhoc


def _unload():
    if "edhoc" in sys.modules:
        del sys.modules["edhoc"]
        if "p256" in sys.modules:
            del sys.modules["p256"]
        gc.collect()


def load_key(state):
    """(private key, CCS) that keygen.py wrote to the state folder."""
    try:
        with open(state + "/edhoc.key") as f:
            sk = bytes.fromhex(f.read(64))
        with open(state + "/edhoc.ccs", "rb") as f:
            ccs = f.read(_MAX_CCS)
    except OSError:
        raise ace.ACEError("no EDHOC key in %s: run keybound device keygen" % state) from None
    return sk, ccs


def build(cfg, as_ctx, send_as, send_rs):
    """The Session of app.build_session for a bundle of the EDHOC profile.

    EDHOC contexts are new keys every time: their sequence numbers need no
    flash (edhoc.Initiator.oscore_context).
    """
    sk, ccs = load_key(cfg["state_dir"])
    return Session(
        as_ctx, send_as, send_rs, cfg["audience"], cfg["scope"], sk, ccs,
        token_path=cfg["token_path"], authz_info_path=cfg["authz_info_path"],
    )  # fmt: skip


class Session(ace.Session):
    """ace.Session for the EDHOC profile: sk (32 bytes) and ccs are the
    device's key and credential; the RS's comes with each token."""

    def __init__(self, as_ctx, send_as, send_rs, audience, scope, sk, ccs, **kw):
        super().__init__(as_ctx, send_as, send_rs, audience, scope, **kw)
        self.sk = sk
        self.ccs = ccs  # checked before each token request (request_token)
        self.cred_r = None
        self.handshakes = 0

    def request_token(self):
        """Step 1 (draft §3.1-3.3): {1: token, ? 2: expires_in, 38: 4, 41: {11: CCS}}."""
        edhoc = _load_edhoc()  # unloaded again by ensure(), which called this
        # The device's own credential, checked here rather than at boot: edhoc.py
        # is not loaded at boot, when the heap holds the most besides it.
        try:
            edhoc.credential_key(self.ccs)
        except edhoc.EDHOCError as e:
            raise ace.ACEError("stored edhoc.ccs: %s" % e) from None
        # {4 (req_cnf): {11 (kccs): CCS}, 5: audience, 9: scope, 38: 4}, the
        # CCS spliced in as stored.
        body = bytearray(b"\xa4\x04\xa1\x0b")
        body.extend(self.ccs)
        body.extend(cbor.dumps(5) + cbor.dumps(self.audience))
        body.extend(cbor.dumps(9) + cbor.dumps(self.scope))
        body.extend(cbor.dumps(38) + cbor.dumps(_PROFILE))
        req = coap.request(coap.POST, self.token_path, bytes(body), coap.CF_ACE_CBOR)
        resp = ace.oscore.request(self.as_ctx, self.send_as, req)
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
            edhoc.credential_key(cred_r)
        except edhoc.EDHOCError as e:
            raise ace.ACEError("token: rs_cnf: %s" % e) from None
        self._granted(got, token)
        self.cred_r = cred_r

    def ensure(self):
        """Steps 2 and 3: the token to /authz-info, then EDHOC."""
        if self.ctx is None:
            # Loaded before the token's messages, onto a collected heap: the
            # code lands in the free runs before their garbage splits them.
            gc.collect()
            _load_edhoc()
        try:
            self._ensure()
        finally:
            _unload()

    def _ensure(self):
        if self._ready():
            return
        body = cbor.dumps({1: self.token})
        resp = self.send_rs(coap.request(coap.POST, self.authz_info_path, body, coap.CF_ACE_CBOR))
        if resp.code != coap.CREATED:
            raise ace.ACEError("authz-info: %d.%02d" % (resp.code >> 5, resp.code & 31))
        self.authz_posts += 1
        body = resp = None  # the token's copies go before the handshake
        # C_I: one byte, a CBOR int -24..23 (RFC 9528 §3.3.2), later the
        # device's OSCORE Recipient ID.
        b = self.rand(1)[0] % 48
        edhoc = _load_edhoc()
        gc.collect()  # one free run for the handshake after the module loaded
        # No collection every app.GC_THRESHOLD bytes while P-256 runs: its integer
        # arithmetic allocates about a megabyte per scalar multiplication, and
        # those collections made a handshake five times slower.
        threshold = gc.threshold()
        gc.threshold(-1)
        try:
            ini = edhoc.Initiator(
                self.sk, self.ccs, self.cred_r, bytes((b if b < 24 else b + 8,)), self.rand
            )
            c_r = ini.process_message_2(self._edhoc(b"\xf5" + ini.message_1(), "message_1"))
            ini.process_message_4(self._edhoc(edhoc.conn_id(c_r) + ini.message_3(), "message_3"))
        finally:
            gc.threshold(threshold)
        self.ctx = ini.oscore_context()
        self.handshakes += 1
        self.token = None

    def _edhoc(self, payload, what):
        req = coap.request(coap.POST, "/.well-known/edhoc", payload, _CF_EDHOC_CID)
        resp = self.send_rs(req)
        if resp.code != coap.CHANGED:
            edhoc = _load_edhoc()
            why = edhoc.read_error(bytes(resp.payload)) or bytes(resp.payload[:40])
            raise edhoc.EDHOCError(
                "%s refused: %d.%02d %s" % (what, resp.code >> 5, resp.code & 31, why)
            )
        return bytes(resp.payload)

    def forget(self):
        super().forget()
        self.cred_r = None
