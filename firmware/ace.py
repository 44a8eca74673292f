# keybound firmware: the ACE-OAuth client flow for the OSCORE profile.
#
#   1. POST /token to the AS, protected with the device's provisioned
#      client-AS OSCORE context (RFC 9200 §5.8, RFC 9203 §3.1);
#   2. POST the access token to the RS's /authz-info, unprotected, with
#      nonce1 and the client's chosen Recipient ID (RFC 9203 §4.1);
#   3. derive the client-RS OSCORE context from cnf.osc, nonce1, nonce2 and
#      the two IDs (RFC 9203 §4.3);
#   4. send OSCORE-protected requests; start over when the token expired or
#      the RS answers unprotected 4.01 (RFC 9200 §5.3, RFC 9203 §4.3.1).
#
# Network access goes through two injected functions send_as(msg) and
# send_rs(msg) -> response, and time through clock_ms(), so the flow runs
# without a network in tests.  Session.request() is the whole state machine.
#
# ACE parameters (RFC 9200 §8.10, RFC 9203 §9.2), by number:
#   1 access_token, 2 expires_in, 5 audience, 8 cnf, 9 scope, 30 error,
#   31 error_description, 38 ace_profile (2 = coap_oscore, RFC 9203 §9.1),
#   40 nonce1, 42 nonce2, 43 ace_client_recipientid,
#   44 ace_server_recipientid.
# cnf method osc is 4 (RFC 9203 §9.5); OSCORE_Input_Material (RFC 9203
# §3.2.1): 0 id, 1 version, 2 ms, 3 hkdf (5 = HMAC 256/256), 4 alg
# (10 = AES-CCM-16-64-128), 5 salt, 6 contextId.

import os

import cbor
import oscore
from micropython import const

import coap

# CoAP numbers (coap.py; a const() does not cross modules)
_CONTENT_FORMAT = const(12)
_CREATED = const(0x41)
_UNAUTHORIZED = const(0x81)

_CF_ACE_CBOR = const(19)  # application/ace+cbor
_NONCE_LEN = const(8)  # RFC 9203 §4.1.1 recommends 8-byte nonces
_MAX_EXPIRY_S = const(3 * 24 * 3600)  # renew at least this often
_EXPIRY_MARGIN_S = const(10)  # renew slightly before the AS's deadline
_MAX_TOKEN = const(1024)

# Error messages: one string constant, cut when an error is raised (cbor.py,
# "Error messages").
_MSG = const(
    "%s: Content-Format %r|%s: %s|%s: no map|%s: no %d|%s: %d not a byte string|"
    "big token|token: profile %r not coap_oscore|no cnf.osc|bad expiry|"
    "authz-info: ID2 equals ID1|%s: %d.%02d error=%r %s|bad cnf %s"
)
_BAD_FORMAT = const(0)
_NOT_CBOR = const(1)
_NO_MAP = const(2)
_MISSING = const(3)
_NOT_BSTR = const(4)
_BIG_TOKEN = const(5)
_NOT_OSCORE = const(6)
_NO_CNF_OSC = const(7)
_BAD_EXPIRY = const(8)
_SAME_IDS = const(9)
_AS_ERROR = const(10)
_BAD_CNF = const(11)


class ACEError(ValueError):
    """A failure in the ACE flow (an AS error names its ACE error code)."""


def _error(i, args=None):
    m = _MSG.split("|")[i]
    return ACEError(m if args is None else m % args)


def _body(resp, what):
    # The body of a 2.01 ACE response: a CBOR map with Content-Format 19.
    # Any other code is an error (RFC 9200 §5.8.3), reported with the ACE
    # error code and description when the body has them.
    if resp.code != _CREATED:
        try:
            body = cbor.loads(resp.payload)
        except cbor.CBORError:
            body = None
        if not isinstance(body, dict):
            body = {}
        args = (what, resp.code >> 5, resp.code & 31, body.get(30), body.get(31) or "")
        raise _error(_AS_ERROR, args)
    cf = resp.get_uint(_CONTENT_FORMAT)
    if cf != _CF_ACE_CBOR:
        raise _error(_BAD_FORMAT, (what, cf))
    try:
        body = cbor.loads(resp.payload)
    except cbor.CBORError as e:
        raise _error(_NOT_CBOR, (what, e)) from None
    if not isinstance(body, dict):
        raise _error(_NO_MAP, what)
    return body


def _bstr(d, key, what, required=True):
    v = d.get(key)
    if v is None:
        if required:
            raise _error(_MISSING, (what, key))
    elif not isinstance(v, bytes):
        raise _error(_NOT_BSTR, (what, key))
    return v


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


class Session:
    """The ACE client state for one AS / RS pair.

    as_ctx is the provisioned client-AS oscore.Context; send_as and send_rs
    are exchange functions msg -> response; rs_store is the SequenceStore
    for client-RS contexts; clock_ms gives monotonic milliseconds (by
    default time.ticks_ms, unwrapped).
    """

    def __init__(
        self,
        as_ctx,
        send_as,
        send_rs,
        audience,
        scope,
        rs_store=None,
        clock_ms=None,
        rand=os.urandom,
        token_path="/token",
        authz_info_path="/authz-info",
    ):
        self.as_ctx = as_ctx
        self.send_as = send_as
        self.send_rs = send_rs
        self.audience = audience
        self.scope = scope
        self.rs_store = rs_store
        self.clock_ms = clock_ms or self._ticks
        self.rand = rand
        self.token_path = token_path
        self.authz_info_path = authz_info_path
        self.ctx = None  # client-RS oscore.Context once established
        self.token = None  # the access token until it is posted
        self.osc = None  # and its OSCORE_Input_Material
        self.deadline_ms = None  # None: no known expiry
        self.tokens_requested = 0
        self.authz_posts = 0
        import time

        self._last = time.ticks_ms()
        self._total = 0

    def _ticks(self):
        # Milliseconds that never wrap: time.ticks_ms wraps (after about 12
        # days on an ESP32); differences are folded into a running total,
        # exact as long as calls are less than half a wrap period apart.
        import time

        now = time.ticks_ms()
        self._total += time.ticks_diff(now, self._last)
        self._last = now
        return self._total

    def request_token(self):
        """Step 1: a token from the AS over the client-AS OSCORE context.

        Checks the 2.01 token response (RFC 9200 §5.8.2, RFC 9203 §3.2):
        {1: access_token, ? 2: expires_in, 8: {4: osc}, ? 38: 2}.
        """
        body = cbor.dumps({5: self.audience, 9: self.scope}, True)
        req = coap.request(coap.POST, self.token_path, body, _CF_ACE_CBOR)
        body = _body(oscore.request(self.as_ctx, self.send_as, req), "token")
        token = _bstr(body, 1, "token")
        if len(token) > _MAX_TOKEN:
            raise _error(_BIG_TOKEN)
        if body.get(38, 2) != 2:
            raise _error(_NOT_OSCORE, (body.get(38),))
        osc = body.get(8)
        osc = osc.get(4) if isinstance(osc, dict) else None
        if not isinstance(osc, dict):
            raise _error(_NO_CNF_OSC)
        for k in (0, 2, 5, 6):
            _bstr(osc, k, "cnf.osc", k < 5)
        for k, want, name in ((1, 1, "version"), (3, 5, "hkdf"), (4, 10, "alg")):
            if osc.get(k, want) != want:
                raise _error(_BAD_CNF, name)
        self._granted(body, token)
        self.osc = osc

    def _granted(self, body, token):
        # A new token (either profile): an older context is void; renew
        # before expires_in runs out.
        life = body.get(2)
        if life is not None and (not isinstance(life, int) or life <= 0):
            raise _error(_BAD_EXPIRY)
        self.tokens_requested += 1
        self.token = token
        self.ctx = None  # a context derived from an older token is void
        self.deadline_ms = None
        if life is not None:
            life = min(life, _MAX_EXPIRY_S)
            self.deadline_ms = self.clock_ms() + 1000 * max(life - _EXPIRY_MARGIN_S, life // 2)

    def _ready(self):
        # True while the context stands; else a token is at hand (either
        # profile): an expired one is dropped, a missing one requested.
        if self.deadline_ms is not None and self.clock_ms() >= self.deadline_ms:
            self.forget()
        if self.ctx is not None:
            return True
        if self.token is None:
            self.request_token()
        return False

    def ensure(self):
        """Make sure a valid token and client-RS context exist.

        Steps 2 and 3: /authz-info (RFC 9203 §4.1, {1: token, 40: N1,
        43: ID1}, answered {42: N2, 44: ID2}), then the context.  Once the
        context stands, the token and its input material are dropped.
        """
        if self._ready():
            return
        nonce1 = self.rand(_NONCE_LEN)
        id1 = self.rand(1)
        body = cbor.dumps({1: self.token, 40: nonce1, 43: id1}, True)
        req = coap.request(coap.POST, self.authz_info_path, body, _CF_ACE_CBOR)
        body = _body(self.send_rs(req), "authz-info")
        nonce2 = _bstr(body, 42, "authz-info")
        id2 = _bstr(body, 44, "authz-info")
        if id2 == id1:
            # RFC 9203 §4.1: the two Recipient IDs must differ.
            raise _error(_SAME_IDS)
        self.authz_posts += 1
        self.ctx = derive_context(self.osc, nonce1, nonce2, id1, id2, self.rs_store)
        self.token = self.osc = None

    def forget(self):
        """Drop token and context, e.g. after the RS rejected them."""
        self.token = self.osc = self.ctx = self.deadline_ms = None

    def request(self, req, blockwise=True):  # noqa: RET503 - the loop returns or raises
        """Send req to the RS over OSCORE; returns the inner response.

        Starts over once (new token, new /authz-info) when the RS answers
        with an unprotected 4.01, e.g. AS Request Creation Hints (RFC 9200
        §5.3) after it lost or rejected the token.
        """
        for attempt in (0, 1):
            self.ensure()

            def send(msg, ctx=self.ctx):
                return oscore.request(ctx, self.send_rs, msg)

            try:
                return coap.fetch(send, req) if blockwise else send(req)
            except oscore.UnprotectedResponse as e:
                if e.response.code != _UNAUTHORIZED or attempt:
                    raise
                self.forget()
            send = None  # the old context goes before the next ensure()
