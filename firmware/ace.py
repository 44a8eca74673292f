# keybound firmware: the ACE-OAuth client flow, common to both profiles.
#
#   1. a token from the AS, over the device's provisioned client-AS OSCORE
#      context (RFC 9200 §5.8): Session.request_token;
#   2. the token to the RS's /authz-info, unprotected, and a client-RS
#      OSCORE context from it: Session.ensure;
#   3. OSCORE-protected requests; start over when the token expired or the
#      RS answers unprotected 4.01 (RFC 9200 §5.3, RFC 9203 §4.3.1).
#
# Steps 1 and 2 are the profile's: oscore_ace.py for the OSCORE profile
# (RFC 9203), edhoc_ace.py for the EDHOC and OSCORE profile, each a Session
# subclass; app.build_session loads the one the bundle names, so a device
# holds the code of its own profile only.  Session.request() is the state
# machine around them.
#
# Network access goes through two injected functions send_as(msg) and
# send_rs(msg) -> response, and time through clock_ms(), so the flow runs
# without a network in tests.
#
# ACE parameters (RFC 9200 §8.10, RFC 9203 §9.2), by number:
#   1 access_token, 2 expires_in, 5 audience, 8 cnf, 9 scope, 30 error,
#   31 error_description, 38 ace_profile (2 = coap_oscore, RFC 9203 §9.1),
#   40 nonce1, 42 nonce2, 43 ace_client_recipientid,
#   44 ace_server_recipientid.

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
_MAX_EXPIRY_S = const(3 * 24 * 3600)  # renew at least this often
_EXPIRY_MARGIN_S = const(10)  # renew slightly before the AS's deadline

# Error messages: one string constant, cut when an error is raised (cbor.py,
# "Error messages").
_MSG = const(
    "%s: Content-Format %r|%s: %s|%s: no map|%s: no %d|%s: %d not a byte string|"
    "bad expiry|%s: %d.%02d error=%r %s"
)
_BAD_FORMAT = const(0)
_NOT_CBOR = const(1)
_NO_MAP = const(2)
_MISSING = const(3)
_NOT_BSTR = const(4)
_BAD_EXPIRY = const(5)
_AS_ERROR = const(6)


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


class Session:
    """The ACE client state for one AS / RS pair; a profile's subclass
    (oscore_ace.Session, edhoc_ace.Session) adds request_token() and ensure().

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
