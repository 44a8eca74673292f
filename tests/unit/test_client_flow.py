"""The sans-IO client flow (core.client_flow) against peers built from keybound.core itself.

The peers below are not mocks of a transport: they are the AS and RS protocol steps
(token issue, /authz-info, RFC 9203 derivation) computed with the same core functions
the servers use, so the flow's messages are checked for real. The flow over UDP is
tested with the real servers in the end-to-end tests.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from keybound.core import cbor, cwt
from keybound.core.authz_info import AuthzInfoRequest, AuthzInfoResponse
from keybound.core.client_flow import AceClient, FlowError, Reply, Send
from keybound.core.keys import Key
from keybound.core.oscore_derivation import derive_context_parameters, derive_keys
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.scope import Scope
from keybound.core.token import AccessToken, CnfOsc

RS_KEY = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"rs")


class Peers:
    """The AS and RS steps, computed with keybound.core."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.tokens_issued = 0
        self.rs_context = None
        self.rs_lost_state = False
        self.seen: list[Send] = []

    def answer(self, send: Send) -> Reply:
        self.seen.append(send)
        if send.peer == "as":
            assert send.security == "as"
            assert send.path == "token"
            body = cbor.loads(send.payload)
            assert body == {5: "coap://rs", 9: "temp.read"}
            material = OscoreInputMaterial(
                id=os.urandom(2), version=None, ms=os.urandom(16), hkdf=None, alg=None,
                salt=os.urandom(8), context_id=None,
            )  # fmt: skip
            token = AccessToken(
                aud=("coap://rs",), scope=Scope.from_claim("temp.read"), cnf=CnfOsc(material),
                ace_profile=2,
            )  # fmt: skip
            self.tokens_issued += 1
            response = {
                1: cwt.encode(token, cwt.Encrypt0(RS_KEY), random_bytes=os.urandom),
                2: self.expires_in,
                8: {4: material.to_cbor_map()},
                38: 2,
            }
            return Reply((2, 1), cbor.dumps(response), 19)
        if send.path == "authz-info":
            assert send.security is None
            assert send.content_format == 19
            post = AuthzInfoRequest.decode(send.payload)
            token = cwt.decode(post.access_token, RS_KEY).token
            assert isinstance(token.cnf, CnfOsc)
            nonce2, id2 = os.urandom(8), b"\x42"
            assert post.nonce1 is not None
            assert post.client_recipient_id is not None
            self.rs_context = derive_context_parameters(
                token.cnf.material, post.nonce1, nonce2, post.client_recipient_id, id2, role="rs"
            )
            self.rs_lost_state = False
            return Reply((2, 1), AuthzInfoResponse(nonce2, id2).encode(), 19)
        assert send.security == "rs"
        if self.rs_context is None or self.rs_lost_state:
            return Reply((4, 1), cbor.dumps({1: "coap://as/token", 5: "coap://rs"}), 19)
        return Reply((2, 5), b"21.5")


def drive(flow: Generator[Send, Reply, Reply], peers: Peers, client: AceClient) -> Reply:
    reply: Reply | None = None
    try:
        send = next(flow)
        while True:
            reply = peers.answer(send)
            if send.security == "rs":
                # Both ends must hold mirrored contexts with the same keys.
                assert client.context is not None
                assert peers.rs_context is not None
                mine, theirs = derive_keys(client.context), derive_keys(peers.rs_context)
                assert mine.sender_key == theirs.recipient_key
                assert mine.recipient_key == theirs.sender_key
                assert mine.common_iv == theirs.common_iv
            send = flow.send(reply)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def test_full_flow_then_reuse() -> None:
    peers, client = (
        Peers(),
        AceClient(audience="coap://rs", scope="temp.read", random_bytes=os.urandom),
    )
    reply = drive(client.request("GET", "temp", now=0), peers, client)
    assert reply.code == (2, 5)
    assert reply.payload == b"21.5"
    assert [s.path for s in peers.seen] == ["token", "authz-info", "temp"]
    peers.seen.clear()
    drive(client.request("GET", "temp", now=10), peers, client)
    assert [s.path for s in peers.seen] == ["temp"], "a second request reuses token and context"


def test_expired_token_is_renewed() -> None:
    peers, client = (
        Peers(expires_in=60),
        AceClient(audience="coap://rs", scope="temp.read", random_bytes=os.urandom),
    )
    drive(client.request("GET", "temp", now=0), peers, client)
    peers.seen.clear()
    drive(client.request("GET", "temp", now=100), peers, client)
    assert [s.path for s in peers.seen] == ["token", "authz-info", "temp"]
    assert peers.tokens_issued == 2


def test_rs_lost_state_starts_over_once() -> None:
    peers, client = (
        Peers(),
        AceClient(audience="coap://rs", scope="temp.read", random_bytes=os.urandom),
    )
    drive(client.request("GET", "temp", now=0), peers, client)
    peers.rs_lost_state = True
    peers.seen.clear()
    reply = drive(client.request("GET", "temp", now=1), peers, client)
    assert reply.code == (2, 5)
    assert [s.path for s in peers.seen] == ["temp", "token", "authz-info", "temp"]
    assert any("starting over" in line for line in client.log)


def test_refused_token_request_raises_with_the_ace_error() -> None:
    client = AceClient(audience="coap://rs", scope="admin", random_bytes=os.urandom)
    flow = client.request("GET", "temp", now=0)
    next(flow)
    with pytest.raises(FlowError, match=r"4\.00 error=6 \(scope not allowed\)"):
        flow.send(Reply((4, 0), cbor.dumps({30: 6, 31: "scope not allowed"}), 19))


def test_bad_recipient_id() -> None:
    with pytest.raises(Exception, match="recipient ID"):
        AceClient(audience="a", scope=None, recipient_id=b"", random_bytes=os.urandom)
