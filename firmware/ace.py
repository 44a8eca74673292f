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

import os

import cbor
import oscore
from micropython import const

import coap

# ACE parameters (RFC 9200 §8.10, RFC 9203 §9.2)
ACCESS_TOKEN = const(1)
EXPIRES_IN = const(2)
AUDIENCE = const(5)
CNF = const(8)
SCOPE = const(9)
ERROR = const(30)
ERROR_DESCRIPTION = const(31)
ACE_PROFILE = const(38)
NONCE1 = const(40)
NONCE2 = const(42)
ACE_CLIENT_RECIPIENTID = const(43)
ACE_SERVER_RECIPIENTID = const(44)

# cnf method osc (RFC 9203 §9.5) and OSCORE_Input_Material (RFC 9203 §3.2.1)
CNF_OSC = const(4)
OSC_ID = const(0)
OSC_VERSION = const(1)
OSC_MS = const(2)
OSC_HKDF = const(3)
OSC_ALG = const(4)
OSC_SALT = const(5)
OSC_CONTEXT_ID = const(6)

PROFILE_COAP_OSCORE = const(2)  # ACE Profile registry (RFC 9203 §9.1)
_HMAC_256_256 = const(5)  # hkdf names an HMAC algorithm; 5 = HMAC 256/256
_NONCE_LEN = const(8)  # RFC 9203 §4.1.1 recommends 8-byte nonces
_MAX_EXPIRY_S = const(3 * 24 * 3600)  # renew at least this often
_EXPIRY_MARGIN_S = const(10)  # renew slightly before the AS's deadline
_MAX_TOKEN = const(1024)


class ACEError(ValueError):
    """A failure in the ACE flow; .code is the ACE error value if known."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


def _decode_map(resp, what):
    # The body of an ACE response: a CBOR map with Content-Format 19.
    cf = resp.get_uint(coap.CONTENT_FORMAT)
    if cf != coap.CF_ACE_CBOR:
        raise ACEError("%s: Content-Format %r, expected 19" % (what, cf))
    try:
        body = cbor.loads(resp.payload)
    except cbor.CBORError as e:
        raise ACEError("%s: %s" % (what, e)) from None
    if not isinstance(body, dict):
        raise ACEError("%s: body is not a CBOR map" % what)
    return body


def _error_from(resp, what):
    # Turns a non-success response into an ACEError (RFC 9200 §5.8.3).
    code = None
    detail = ""
    try:
        body = cbor.loads(resp.payload)
        if isinstance(body, dict):
            code = body.get(ERROR)
            detail = body.get(ERROR_DESCRIPTION) or ""
    except cbor.CBORError:
        pass
    return ACEError(
        "%s: %d.%02d error=%r %s" % (what, resp.code >> 5, resp.code & 31, code, detail),
        code,
    )


def _bstr(d, key, what, required=True):
    v = d.get(key)
    if v is None:
        if required:
            raise ACEError("%s: missing %d" % (what, key))
        return None
    if not isinstance(v, bytes):
        raise ACEError("%s: parameter %d is not a byte string" % (what, key))
    return v


# ------------------------------------------------------------ messages


def token_request(audience, scope):
    """The token request body (RFC 9200 §5.8.1): {5: audience, 9: scope}."""
    return cbor.dumps(cbor.Map([(AUDIENCE, audience), (SCOPE, scope)]))


def parse_token_response(resp):
    """Check a 2.01 token response (RFC 9200 §5.8.2, RFC 9203 §3.2).

    Returns (access_token, expires_in or None, osc) where osc is the
    OSCORE_Input_Material map.
    """
    if resp.code != coap.CREATED:
        raise _error_from(resp, "token request")
    body = _decode_map(resp, "token response")
    token = _bstr(body, ACCESS_TOKEN, "token response")
    if len(token) > _MAX_TOKEN:
        raise ACEError("token response: access token too large")
    profile = body.get(ACE_PROFILE, PROFILE_COAP_OSCORE)
    if profile != PROFILE_COAP_OSCORE:
        raise ACEError("token response: ace_profile %r is not coap_oscore (2)" % (profile,))
    expires_in = body.get(EXPIRES_IN)
    if expires_in is not None and (not isinstance(expires_in, int) or expires_in <= 0):
        raise ACEError("token response: bad expires_in")
    cnf = body.get(CNF)
    if not isinstance(cnf, dict) or not isinstance(cnf.get(CNF_OSC), dict):
        raise ACEError("token response: cnf has no osc (4) input material")
    osc = cnf[CNF_OSC]
    _bstr(osc, OSC_ID, "cnf.osc")
    _bstr(osc, OSC_MS, "cnf.osc")
    _bstr(osc, OSC_SALT, "cnf.osc", False)
    _bstr(osc, OSC_CONTEXT_ID, "cnf.osc", False)
    if osc.get(OSC_VERSION, 1) != 1:
        raise ACEError("cnf.osc: unsupported OSCORE version")
    if osc.get(OSC_HKDF, _HMAC_256_256) != _HMAC_256_256:
        raise ACEError("cnf.osc: unsupported hkdf (only HMAC 256/256 = 5)")
    if osc.get(OSC_ALG, oscore.ALG_AES_CCM_16_64_128) != oscore.ALG_AES_CCM_16_64_128:
        raise ACEError("cnf.osc: unsupported alg (only AES-CCM-16-64-128 = 10)")
    return token, expires_in, osc


def authz_info_request(token, nonce1, id1):
    """The /authz-info body (RFC 9203 §4.1): {1: token, 40: N1, 43: ID1}."""
    return cbor.dumps(
        cbor.Map([(ACCESS_TOKEN, token), (NONCE1, nonce1), (ACE_CLIENT_RECIPIENTID, id1)])
    )


def parse_authz_info_response(resp, id1):
    """Check the 2.01 /authz-info answer (RFC 9203 §4.2); returns (N2, ID2)."""
    if resp.code != coap.CREATED:
        raise _error_from(resp, "authz-info")
    body = _decode_map(resp, "authz-info response")
    nonce2 = _bstr(body, NONCE2, "authz-info response")
    id2 = _bstr(body, ACE_SERVER_RECIPIENTID, "authz-info response")
    if id2 == id1:
        # RFC 9203 §4.1: the two Recipient IDs must differ.
        raise ACEError("authz-info response: ID2 equals ID1")
    return nonce2, id2


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
        osc[OSC_MS],
        master_salt(osc.get(OSC_SALT), nonce1, nonce2),
        sender_id=id2,
        recipient_id=id1,
        id_context=osc.get(OSC_CONTEXT_ID),
        alg=osc.get(OSC_ALG, oscore.ALG_AES_CCM_16_64_128),
        store=store,
    )


# ------------------------------------------------------------ the session


class MonotonicClock:
    """Milliseconds that never wrap, from time.ticks_ms.

    ticks_ms wraps (after about 12 days on an ESP32); differences are folded
    into a running total, which is exact as long as calls are less than half
    a wrap period apart.
    """

    def __init__(self):
        import time

        self._time = time
        self._last = time.ticks_ms()
        self.total = 0

    def __call__(self):
        now = self._time.ticks_ms()
        self.total += self._time.ticks_diff(now, self._last)
        self._last = now
        return self.total


class Session:
    """The ACE client state for one AS / RS pair.

    as_ctx is the provisioned client-AS oscore.Context; send_as and send_rs
    are exchange functions msg -> response; rs_store is the SequenceStore
    for client-RS contexts; clock_ms gives monotonic milliseconds.
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
        self.clock_ms = clock_ms if clock_ms is not None else MonotonicClock()
        self.rand = rand
        self.token_path = token_path
        self.authz_info_path = authz_info_path
        self.ctx = None  # client-RS oscore.Context once established
        self.token = None
        self.osc = None
        self.deadline_ms = None  # None: the token has no known expiry
        self.tokens_requested = 0
        self.authz_posts = 0

    # -- steps

    def request_token(self):
        """Step 1: a token from the AS over the client-AS OSCORE context."""
        req = coap.request(
            coap.POST,
            self.token_path,
            token_request(self.audience, self.scope),
            coap.CF_ACE_CBOR,
        )
        resp = oscore.request(self.as_ctx, self.send_as, req)
        token, expires_in, osc = parse_token_response(resp)
        self.tokens_requested += 1
        self.token = token
        self.osc = osc
        if expires_in is None:
            self.deadline_ms = None
        else:
            life = min(expires_in, _MAX_EXPIRY_S)
            life = max(life - _EXPIRY_MARGIN_S, life // 2)
            self.deadline_ms = self.clock_ms() + life * 1000
        self.ctx = None  # a context derived from an older token is void

    def post_token(self):
        """Steps 2 and 3: /authz-info, then derive the client-RS context."""
        self.ctx = None  # reposting makes new keys; the old context goes
        nonce1 = self.rand(_NONCE_LEN)
        id1 = self.rand(1)
        req = coap.request(
            coap.POST,
            self.authz_info_path,
            authz_info_request(self.token, nonce1, id1),
            coap.CF_ACE_CBOR,
        )
        resp = self.send_rs(req)
        nonce2, id2 = parse_authz_info_response(resp, id1)
        self.authz_posts += 1
        self.ctx = derive_context(self.osc, nonce1, nonce2, id1, id2, self.rs_store)

    def expired(self):
        return self.deadline_ms is not None and self.clock_ms() >= self.deadline_ms

    def forget(self):
        """Drop token and context, e.g. after the RS rejected them."""
        self.token = None
        self.osc = None
        self.ctx = None
        self.deadline_ms = None

    def ensure(self):
        """Make sure a valid token and client-RS context exist."""
        if self.token is None or self.expired():
            self.forget()
            self.request_token()
        if self.ctx is None:
            self.post_token()

    # -- the public call

    def request(self, req, blockwise=True):
        """Send req to the RS over OSCORE; returns the inner response.

        Starts over once (new token, new /authz-info) when the RS answers
        with an unprotected 4.01, e.g. AS Request Creation Hints (RFC 9200
        §5.3) after it lost or rejected the token.
        """
        for attempt in range(2):
            self.ensure()

            def send(msg, ctx=self.ctx):
                return oscore.request(ctx, self.send_rs, msg)

            try:
                if blockwise:
                    return coap.fetch(send, req)
                return send(req)
            except oscore.UnprotectedResponse as e:
                if e.response.code != coap.UNAUTHORIZED or attempt:
                    raise
                self.forget()
        raise ACEError("unreachable")
