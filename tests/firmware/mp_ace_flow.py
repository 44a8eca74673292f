# The ACE client flow (firmware oscore_ace.Session) without a network: the AS and
# the RS are simulated here, with server-side OSCORE built from the
# firmware's primitives, and the clock is injected.
# Usage: micropython -X heapsize=128K mp_ace_flow.py

import gc

import ace
import cbor
import micropython
import oscore
import oscore_ace
from mptest import check, done, eq, raises

import coap

# CoAP numbers (the firmware keeps its own as const(), private to coap.py)
ACK = 2
BAD_REQUEST = 0x80
CF_ACE_CBOR = 19
CF_CBOR = 60
CHANGED = 0x44
CONTENT_FORMAT = 12
CREATED = 0x41
ECHO = 252
OSCORE = 9
UNAUTHORIZED = 0x81
URI_PATH = 11


def paths(msg):
    return [v for n, v in msg.options if n == URI_PATH]


gc.collect()
micropython.mem_info()  # baseline in the output, for the record

AS_SECRET = bytes(range(32, 48))
DEVICE_SID, DEVICE_RID = b"\x11", b"\x22"
RS_MS, RS_SALT = bytes(range(100, 116)), b"\x5a\x5a"


def server_unprotect(sctx, outer):
    # What an OSCORE server does with a request (RFC 8613 §8.2), test side.
    piv, _kidc, kid = oscore.decode_option(outer.get(OSCORE))
    nonce = sctx.nonce(kid, piv)
    pt = oscore.ccm(sctx.recipient_key, nonce, oscore.aad(10, kid, piv), outer.payload, True)
    options, payload = coap.decode_options(pt, 1)
    return coap.Message(pt[0], options, payload), (kid, piv, nonce)


def server_protect(sctx, inner, state):
    # Response protection reusing the request nonce (RFC 8613 §8.3).
    kid, piv, nonce = state
    ct = oscore.ccm(
        sctx.sender_key, nonce, oscore.aad(10, kid, piv), oscore.plaintext(inner, inner.options)
    )
    return coap.Message(CHANGED, [(OSCORE, b"")], ct, ACK)


def ace_response(code, body):
    m = coap.Message(code, None, cbor.dumps(body), ACK)
    m.add(CONTENT_FORMAT, CF_ACE_CBOR)
    return m


class FakeAS:
    def __init__(self):
        # server role: sender and recipient swapped
        self.ctx = oscore.Context(AS_SECRET, b"", DEVICE_RID, DEVICE_SID)
        self.requests = []
        self.expires_in = 3600
        self.profile = 2
        self.osc_extra = {}
        self.fail = None

    def __call__(self, outer):
        check("token request is OSCORE-protected", outer.get(OSCORE) is not None, outer)
        inner, state = server_unprotect(self.ctx, outer)
        self.requests.append(inner)
        if self.fail is not None:
            return server_protect(self.ctx, ace_response(BAD_REQUEST, {30: self.fail}), state)
        osc = {0: b"\x01", 2: RS_MS, 5: RS_SALT}
        osc.update(self.osc_extra)
        body = {
            1: b"token-%d" % len(self.requests),
            2: self.expires_in,
            8: {4: osc},
            38: self.profile,
        }
        return server_protect(self.ctx, ace_response(CREATED, body), state)


class FakeRS:
    def __init__(self):
        self.ctx = None
        self.tokens = []
        self.values = []
        self.id2 = b"\x07"
        self.same_id = False  # True: answer with the client's own ID1 (a misbehaving RS)
        self.reject_next = False
        self.echo_next = False
        self.seen_echo = None
        self.id_context = None

    def __call__(self, msg):
        path = "/".join(v.decode() for v in paths(msg))
        if path == "authz-info":
            check("authz-info is unprotected", msg.get(OSCORE) is None)
            eq("authz-info Content-Format 19", msg.get_uint(CONTENT_FORMAT), 19)
            body = cbor.loads(msg.payload)
            eq("authz-info keys", sorted(body), [1, 40, 43])
            eq("nonce1 is 8 bytes", len(body[40]), 8)
            self.tokens.append(body[1])
            n2 = b"n2-%05d" % len(self.tokens)
            if body[43] == self.id2 and not self.same_id:
                # a conforming RS picks an ID2 other than the client's ID1 (RFC 9203 §4.2):
                # ID1 is random, so this is 1 in 256 runs
                self.id2 = b"\x08" if self.id2 == b"\x07" else b"\x07"
            if body[43] == self.id2:
                # a misbehaving RS that picks the client's ID1 as its ID2
                return ace_response(CREATED, {42: n2, 44: self.id2})
            # RS role: Sender ID = ID1, Recipient ID = ID2 (RFC 9203 §4.3)
            self.ctx = oscore.Context(
                RS_MS,
                oscore_ace.master_salt(RS_SALT, body[40], n2),
                body[43],
                self.id2,
                self.id_context,
            )
            return ace_response(CREATED, {42: n2, 44: self.id2})
        if msg.get(OSCORE) is None or self.ctx is None or self.reject_next:
            self.reject_next = False
            # unprotected 4.01 with AS Request Creation Hints (RFC 9200 §5.3)
            return ace_response(UNAUTHORIZED, {1: "coap://as/token", 5: "rs1"})
        inner, state = server_unprotect(self.ctx, msg)
        if self.echo_next:
            self.echo_next = False
            r = coap.Message(UNAUTHORIZED)
            r.add(ECHO, b"echo-1234")
            return server_protect(self.ctx, r, state)
        self.seen_echo = inner.get(ECHO)
        self.values.append(cbor.loads(inner.payload))
        reply = coap.Message(CHANGED)
        reply.payload = b"ok"
        return server_protect(self.ctx, reply, state)


class Clock:
    def __init__(self):
        self.ms = 0

    def __call__(self):
        return self.ms


def make(fake_as=None, fake_rs=None):
    fake_as = fake_as or FakeAS()
    fake_rs = fake_rs or FakeRS()
    clock = Clock()
    as_ctx = oscore.Context(AS_SECRET, b"", DEVICE_SID, DEVICE_RID)
    s = oscore_ace.Session(as_ctx, fake_as, fake_rs, "rs1", "temp:rw", clock_ms=clock)
    return s, fake_as, fake_rs, clock


def post(s, value):
    return s.request(coap.request(coap.POST, "/temp", cbor.dumps(value), CF_CBOR))


# 1. the first request runs the whole flow
s, fas, frs, clock = make()
resp = post(s, 21)
eq("first request answered 2.04", resp.code, CHANGED)
eq("first request payload", resp.payload, b"ok")
eq("token request body", cbor.loads(fas.requests[0].payload), {5: "rs1", 9: "temp:rw"})
eq("token request Content-Format 19", fas.requests[0].get_uint(CONTENT_FORMAT), 19)
eq("token request path", paths(fas.requests[0]), [b"token"])
eq("token posted to the RS", frs.tokens, [b"token-1"])
eq("RS got the value", frs.values, [21])
eq("client Sender ID is ID2", s.ctx.sender_id, frs.id2)

# 2. the next request reuses token and context
post(s, 22)
eq("no new token while valid", (s.tokens_requested, s.authz_posts), (1, 1))
eq("RS got both values", frs.values, [21, 22])

# 3. expiry: expires_in 3600 s; after it the flow starts over
clock.ms += 3600 * 1000
post(s, 23)
eq("expired token renewed", (s.tokens_requested, s.authz_posts), (2, 2))
eq("new token posted", frs.tokens[-1], b"token-2")

# 4. RS answers 4.01 unprotected (lost context): new token, new context
frs.reject_next = True
old_ctx = s.ctx
resp = post(s, 24)
eq("4.01 leads to a new token", (s.tokens_requested, s.authz_posts), (3, 3))
check("old context dropped", s.ctx is not old_ctx)
eq("value delivered after restart", frs.values[-1], 24)

# 5. a 4.01 that persists is raised, not retried forever
s2, _, frs2, _ = make()
frs2.ctx = None


class AlwaysReject(FakeRS):
    def __call__(self, msg):
        if msg.get(OSCORE) is not None:
            return ace_response(UNAUTHORIZED, {1: "coap://as/token"})
        return FakeRS.__call__(self, msg)


s3, fas3, _, _ = make(fake_rs=AlwaysReject())
try:
    post(s3, 1)
    check("persistent 4.01 raised", False, "no exception")
except oscore.UnprotectedResponse as e:
    eq("persistent 4.01 raised", e.response.code, UNAUTHORIZED)
eq("only one restart", s3.tokens_requested, 2)

# 6. Echo from the RS: one retry carrying the Echo value inside
s4, _, frs4, _ = make()
post(s4, 1)
frs4.echo_next = True
resp = post(s4, 2)
eq("Echo retry answered", resp.code, CHANGED)
eq("Echo value sent back inside OSCORE", frs4.seen_echo, b"echo-1234")


# 7. refusals
class SameId(FakeRS):
    def __init__(self):
        FakeRS.__init__(self)
        self.same_id = True

    def __call__(self, msg):
        if msg.get(OSCORE) is None and paths(msg) == [b"authz-info"]:
            self.id2 = cbor.loads(msg.payload)[43]
        return FakeRS.__call__(self, msg)


s5, _, _, _ = make(fake_rs=SameId())
raises("ID1 == ID2 refused", ace.ACEError, post, s5, 1, contains="ID2 equals ID1")

for name, attr, value, needle in (
    ("ace_profile 1 refused", "profile", 1, "coap_oscore"),
    ("hkdf -10 refused", "osc_extra", {3: -10}, "hkdf"),
    ("alg 11 refused", "osc_extra", {4: 11}, "alg"),
    ("version 2 refused", "osc_extra", {1: 2}, "version"),
    ("ms as text refused", "osc_extra", {2: "secret"}, "byte string"),
    ("AS error 6 raised", "fail", 6, "error=6"),
):
    fa = FakeAS()
    setattr(fa, attr, value)
    sx, _, _, _ = make(fake_as=fa)
    raises(name, ace.ACEError, post, sx, 1, contains=needle)

sx, fa, frx, _ = make()
fa.osc_extra = {6: b"\x33"}
frx.id_context = b"\x33"
post(sx, 5)
eq("contextId becomes the ID Context", sx.ctx.id_context, b"\x33")


# 8. wrong Content-Format from the RS
class NoCF(FakeRS):
    def __call__(self, msg):
        r = FakeRS.__call__(self, msg)
        if msg.get(OSCORE) is None:
            r.options = [o for o in r.options if o[0] != CONTENT_FORMAT]
        return r


s6, _, _, _ = make(fake_rs=NoCF())
raises(
    "authz-info without Content-Format 19 refused",
    ace.ACEError,
    post,
    s6,
    1,
    contains="Content-Format",
)

gc.collect()
print(f"HEAP in use after the flow: {gc.mem_alloc()} of {gc.mem_alloc() + gc.mem_free()} bytes")
done()
