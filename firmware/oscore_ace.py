# keybound firmware: the ACE-OAuth client flow for the OSCORE profile
# (RFC 9203).  Loaded by app.build_session only for a bundle of this profile
# (the default), so an EDHOC-profile device holds none of its code.
#
#   1. POST /token to the AS, protected with the device's provisioned
#      client-AS OSCORE context (RFC 9200 §5.8, RFC 9203 §3.1):
#      Session.request_token;
#   2. POST the access token to the RS's /authz-info, unprotected, with
#      nonce1 and the client's chosen Recipient ID (RFC 9203 §4.1), and
#      derive the client-RS OSCORE context from cnf.osc, nonce1, nonce2 and
#      the two IDs (RFC 9203 §4.3): Session.ensure;
#   3. ace.Session.request: OSCORE-protected requests, starting over when the
#      token expired or the RS answers unprotected 4.01.
#
# cnf method osc is 4 (RFC 9203 §9.5); OSCORE_Input_Material (RFC 9203
# §3.2.1): 0 id, 1 version, 2 ms, 3 hkdf (5 = HMAC 256/256), 4 alg
# (10 = AES-CCM-16-64-128), 5 salt, 6 contextId.

import ace
import cbor
import oscore
from micropython import const

import coap

_CF_ACE_CBOR = const(19)  # application/ace+cbor
_NONCE_LEN = const(8)  # RFC 9203 §4.1.1 recommends 8-byte nonces
_MAX_TOKEN = const(1024)

# Error messages: one string constant, cut when an error is raised (cbor.py,
# "Error messages").
_MSG = const(
    "big token|token: profile %r not coap_oscore|no cnf.osc|bad cnf %s|"
    "authz-info: ID2 equals ID1"
)
_BIG_TOKEN = const(0)
_NOT_OSCORE = const(1)
_NO_CNF_OSC = const(2)
_BAD_CNF = const(3)
_SAME_IDS = const(4)


def _error(i, args=None):
    m = _MSG.split("|")[i]
    return ace.ACEError(m if args is None else m % args)


def master_salt(salt, nonce1, nonce2):
    """RFC 9203 §4.3: Master Salt = bstr(salt) | bstr(N1) | bstr(N2).

    The CBOR encodings, byte-string heads included; a missing salt is the
    empty byte string.
    """
    return cbor.dumps(salt or b"") + cbor.dumps(nonce1) + cbor.dumps(nonce2)


def derive_context(osc, nonce1, nonce2, id1, id2, store=None):
    """The client's OSCORE context for the RS (RFC 9203 §4.3).

    Sender ID = ID2 (the RS's Recipient ID), Recipient ID = ID1.
    """
    return oscore.Context(
        osc[2],
        master_salt(osc.get(5), nonce1, nonce2),
        id2,
        id1,
        osc.get(6),
        osc.get(4, 10),
        store,
    )


class Session(ace.Session):
    """ace.Session for the OSCORE profile; rs_store is the SequenceStore for
    the client-RS contexts (RFC 8613 Appendix B.1)."""

    def request_token(self):
        """Step 1: a token from the AS over the client-AS OSCORE context.

        Checks the 2.01 token response (RFC 9200 §5.8.2, RFC 9203 §3.2):
        {1: access_token, ? 2: expires_in, 8: {4: osc}, ? 38: 2}.
        """
        body = cbor.dumps({5: self.audience, 9: self.scope}, True)
        req = coap.request(coap.POST, self.token_path, body, _CF_ACE_CBOR)
        body = ace._body(oscore.request(self.as_ctx, self.send_as, req), "token")
        token = ace._bstr(body, 1, "token")
        if len(token) > _MAX_TOKEN:
            raise _error(_BIG_TOKEN)
        if body.get(38, 2) != 2:
            raise _error(_NOT_OSCORE, (body.get(38),))
        osc = body.get(8)
        osc = osc.get(4) if isinstance(osc, dict) else None
        if not isinstance(osc, dict):
            raise _error(_NO_CNF_OSC)
        for k in (0, 2, 5, 6):
            ace._bstr(osc, k, "cnf.osc", k < 5)
        for k, want, name in ((1, 1, "version"), (3, 5, "hkdf"), (4, 10, "alg")):
            if osc.get(k, want) != want:
                raise _error(_BAD_CNF, name)
        self._granted(body, token)
        self.osc = osc

    def ensure(self):
        """Make sure a valid token and client-RS context exist.

        Step 2: /authz-info (RFC 9203 §4.1, {1: token, 40: N1, 43: ID1},
        answered {42: N2, 44: ID2}), then the context.  Once the
        context stands, the token and its input material are dropped.
        """
        if self._ready():
            return
        nonce1 = self.rand(_NONCE_LEN)
        id1 = self.rand(1)
        body = cbor.dumps({1: self.token, 40: nonce1, 43: id1}, True)
        req = coap.request(coap.POST, self.authz_info_path, body, _CF_ACE_CBOR)
        body = ace._body(self.send_rs(req), "authz-info")
        nonce2 = ace._bstr(body, 42, "authz-info")
        id2 = ace._bstr(body, 44, "authz-info")
        if id2 == id1:
            # RFC 9203 §4.1: the two Recipient IDs must differ.
            raise _error(_SAME_IDS)
        self.authz_posts += 1
        self.ctx = derive_context(self.osc, nonce1, nonce2, id1, id2, self.rs_store)
        self.token = self.osc = None
