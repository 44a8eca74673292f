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
# once by keygen.py; they are read (keygen.load_key) and never leave the
# board.  Step 1 is keygen.request_token.  This module stays loaded while
# the device runs; keygen.py (at boot and for each token request), p256.py
# (for each token request and handshake) and edhoc.py (for each handshake)
# are loaded only for those steps and dropped after them.

import gc
import sys

import ace
import cbor
from micropython import const

import coap

# CoAP numbers (coap.py; a const() does not cross modules)
_CF_ACE_CBOR = const(19)
_CHANGED = const(0x44)
_CREATED = const(0x41)

_CF_EDHOC_CID = const(65)  # application/cid-edhoc+cbor-seq (RFC 9528 §10.9)

# Error messages: one string constant, cut when an error is raised (cbor.py,
# "Error messages").
_MSG = const("authz-info: %d.%02d|%s refused: %d.%02d %s")
_AUTHZ_INFO = const(0)
_REFUSED = const(1)


def build(cfg, as_ctx, send_as, send_rs):
    """The Session of app.build_session for a bundle of the EDHOC profile.

    EDHOC contexts are new keys every time: their sequence numbers need no
    flash (edhoc.Initiator.oscore_context).
    """
    import keygen

    try:
        sk, ccs = keygen.load_key(cfg["state_dir"])
    finally:
        sys.modules.pop("keygen", None)
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
        self.cred_r = self.key_r = self.kid_i = None  # keygen.request_token
        self.handshakes = 0

    def request_token(self):
        """Step 1 (draft §3.1-3.3), keygen.request_token: keygen.py is loaded for it
        and dropped again, so its code is not held through the handshake."""
        gc.collect()  # keygen's and p256's code onto a collected heap
        import keygen

        try:
            keygen.request_token(self)
        finally:
            sys.modules.pop("keygen", None)

    def ensure(self):
        """Steps 2 and 3: the token to /authz-info, then EDHOC."""
        try:
            self._ensure()
        finally:
            # edhoc.py and p256.py are loaded for a handshake (p256.py alone
            # for a token request, keygen.request_token) and dropped after it:
            # their code is not held while the OSCORE requests run.
            edhoc = sys.modules.pop("edhoc", None)
            if sys.modules.pop("p256", None) or edhoc:
                gc.collect()

    def _ensure(self):
        if self._ready():
            return
        body = cbor.dumps({1: self.token})
        resp = self.send_rs(coap.request(coap.POST, self.authz_info_path, body, _CF_ACE_CBOR))
        if resp.code != _CREATED:
            code = (resp.code >> 5, resp.code & 31)
            raise ace.ACEError(_MSG.split("|")[_AUTHZ_INFO] % code)
        self.authz_posts += 1
        # The token and its copies go before the handshake: the RS holds it now,
        # and a round whose handshake fails starts with a new token.
        body = resp = self.token = None
        # C_I: one byte, a CBOR int -24..23 (RFC 9528 §3.3.2), later the
        # device's OSCORE Recipient ID.
        b = self.rand(1)[0] % 48
        gc.collect()  # edhoc's code onto a collected heap, below the exchange's garbage
        import edhoc

        gc.collect()  # one free run for the handshake after the module loaded
        # No collection every app.GC_THRESHOLD bytes while P-256 runs: its integer
        # arithmetic allocates about a megabyte per scalar multiplication, and
        # those collections made a handshake five times slower.
        threshold = gc.threshold()
        gc.threshold(-1)
        try:
            ini = edhoc.Initiator(
                self.sk, self.ccs, self.kid_i, self.cred_r, self.key_r,
                bytes((b if b < 24 else b + 8,)), self.rand,
            )  # fmt: skip
            c_r = ini.process_message_2(self._edhoc(b"\xf5" + ini.message_1(), "message_1"))
            ini.process_message_4(self._edhoc(edhoc.conn_id(c_r) + ini.message_3(), "message_3"))
        finally:
            gc.threshold(threshold)
        self.ctx = ini.oscore_context()
        self.handshakes += 1

    def _edhoc(self, payload, what):
        req = coap.request(coap.POST, "/.well-known/edhoc", payload, _CF_EDHOC_CID)
        resp = self.send_rs(req)
        if resp.code != _CHANGED:
            import edhoc

            why = edhoc.read_error(bytes(resp.payload)) or bytes(resp.payload[:40])
            args = (what, resp.code >> 5, resp.code & 31, why)
            raise edhoc.EDHOCError(_MSG.split("|")[_REFUSED] % args)
        return bytes(resp.payload)

    def forget(self):
        super().forget()
        self.cred_r = self.key_r = None
