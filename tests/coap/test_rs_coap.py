"""The Resource Server over real CoAP/UDP on 127.0.0.1 (RFC 9200 §5.10, RFC 9203 §4)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

import aiocoap
import pytest
from aiocoap import oscore
from aiocoap.message import Direction

from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core import cbor, cwt
from keybound.core.authz_info import AuthzInfoRequest, AuthzInfoResponse
from keybound.core.exi import encode_exi_sequence
from keybound.core.resource_server import ResourceServer, RsPolicy
from keybound.core.scope import AifScope
from keybound.core.token_store import VerifiedToken
from tests.helpers.rs import (
    AS_URI,
    AUDIENCE,
    FakeClock,
    Keys,
    client_context,
    client_ctx,
    establish,
    material,
    mint,
    mint_claims,
    post_authz_info,
    request,
    run,
    serving,
)


def code(message: aiocoap.Message) -> str:
    return f"{int(message.code) >> 5}.{int(message.code) & 0x1F:02d}"


async def plain_answer(client: aiocoap.Context, port: int, path: str) -> str:
    """The code of an answer that the RS could not protect (no usable context)."""
    try:
        response = await request(client, port, aiocoap.GET, path)
    except oscore.NotAProtectedMessage as exc:
        return code(exc.plain_message)
    return code(response)


def error_of(message: aiocoap.Message) -> Any:
    assert message.opt.content_format == 19
    return cbor.loads(message.payload)[30]


# ---- the happy path --------------------------------------------------------------------------


def test_authz_info_then_oscore_get() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat), mat)
            response = await request(client, port, aiocoap.GET, "/temp")
            assert code(response) == "2.05"
            assert response.payload == b"21.50"
            assert len(site.contexts) == 1

    run(body())


def test_nested_sign1_token_is_accepted() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys, require_signature=True) as (_, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat, nested=True), mat)
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            other = material(b"\x02")
            response = await post_authz_info(
                client, port, AuthzInfoRequest(mint(keys, other), os.urandom(8), b"\x07").encode()
            )
            assert code(response) == "4.01"

    run(body())


def test_aif_scope_needs_no_declaration() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            mat = material()
            scope = AifScope.of([("/led", 1 | 4)])
            await establish(client, port, mint(keys, mat, scope=scope), mat)
            assert code(await request(client, port, aiocoap.PUT, "/led", b"on")) == "2.04"
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "4.03"

    run(body())


def test_unprotected_request_gets_creation_hints() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            response = await request(client, port, aiocoap.GET, "/temp")
            assert code(response) == "4.01"
            assert response.opt.content_format == 19
            assert cbor.loads(response.payload) == {1: AS_URI, 5: AUDIENCE, 9: "temp.read"}

    run(body())


def test_cnonce_round_trip() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys, require_cnonce=True) as (_, port), client_ctx() as client:
            hints = cbor.loads((await request(client, port, aiocoap.GET, "/temp")).payload)
            cnonce = hints[39]
            mat = material()
            without = mint(keys, mat)
            response = await post_authz_info(
                client, port, AuthzInfoRequest(without, os.urandom(8), b"\x42").encode()
            )
            assert code(response) == "4.01"
            decoded = cwt.decode(without, keys.token_key).token
            with_cnonce = cwt.encode(
                decoded.replace(cnonce=cnonce),
                cwt.Encrypt0(keys.token_key),
                random_bytes=os.urandom,
            )
            await establish(client, port, with_cnonce, mat)
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"

    run(body())


# ---- token errors ------------------------------------------------------------------------------


def _post(keys: Keys, token: bytes, id1: bytes = b"\x42", **policy: Any) -> aiocoap.Message:
    async def body() -> aiocoap.Message:
        async with serving(keys, **policy) as (_, port), client_ctx() as client:
            return await post_authz_info(
                client, port, AuthzInfoRequest(token, os.urandom(8), id1).encode()
            )

    return run(body())


def test_token_for_another_audience_is_forbidden() -> None:
    keys = Keys()
    response = _post(keys, mint(keys, material(), aud="rs2"))
    assert code(response) == "4.03"
    assert response.opt.content_format == 19


def test_malformed_claims_of_an_authentic_token_are_bad_requests() -> None:
    """RFC 9200 §5.10.1.1, RFC 9203 §4.2: 4.00, never 4.01, when only the claims are wrong."""
    keys = Keys()
    for changes, ace_code in (({9: 42}, 6), ({8: {4: {0: b"\x01"}}}, 1), ({6: "now"}, 1)):
        response = _post(keys, mint_claims(keys, material(), changes))
        assert code(response) == "4.00"
        assert error_of(response) == ace_code


def test_expired_token_is_unauthorized() -> None:
    keys = Keys()
    response = _post(keys, mint(keys, material(), now=time.time() - 1000, lifetime=60))
    assert code(response) == "4.01"


def test_tampered_token_is_unauthorized() -> None:
    keys = Keys()
    token = bytearray(mint(keys, material()))
    token[-3] ^= 0x01
    assert code(_post(keys, bytes(token))) == "4.01"


def test_token_under_unknown_key_is_unauthorized() -> None:
    keys = Keys()
    stranger = Keys()
    assert code(_post(keys, mint(stranger, material()))) == "4.01"


def test_unsupported_profile_is_bad_request() -> None:
    keys = Keys()
    response = _post(keys, mint(keys, material(), ace_profile=1))
    assert code(response) == "4.00"
    assert error_of(response) == 8  # incompatible_ace_profiles


def test_truncated_token_is_unauthorized() -> None:
    keys = Keys()
    token = mint(keys, material())
    assert code(_post(keys, token[: len(token) // 2])) == "4.01"


def test_exi_sequence_rollback_is_refused() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys, has_clock=False) as (_, port), client_ctx() as client:

            async def post(seq: int, mat: Any) -> str:
                token = mint(keys, mat, lifetime=None, exi=60, cti=encode_exi_sequence(seq))
                response = await post_authz_info(
                    client, port, AuthzInfoRequest(token, os.urandom(8), b"\x42").encode()
                )
                return code(response)

            first = material(b"\x01")
            assert await post(5, first) == "2.01"
            assert await post(5, material(b"\x02")) == "4.01"  # same number, other token
            assert await post(4, material(b"\x03")) == "4.01"  # rollback
            assert await post(6, material(b"\x04")) == "2.01"
            no_exi = mint(keys, material(b"\x05"))
            response = await post_authz_info(
                client, port, AuthzInfoRequest(no_exi, os.urandom(8), b"\x42").encode()
            )
            assert code(response) == "4.01"  # no clock: exi is required

    run(body())


# ---- payload errors ------------------------------------------------------------------------------


def test_malformed_payloads_are_bad_requests() -> None:
    keys = Keys()
    good = AuthzInfoRequest(mint(keys, material()), os.urandom(8), b"\x42").encode()
    payloads = [
        b"",
        b"\xff",
        good[:-5],  # truncated
        b"\x81" * 300 + b"\x00",  # deeply nested
        cbor.dumps([1, 2, 3]),
        cbor.dumps({1: b"token"}),  # nonce1 and id missing
        cbor.dumps({1: "text", 40: os.urandom(8), 43: b"\x01"}),
        cbor.dumps({1: b"t", 40: b"short", 43: b"\x01"}),
        cbor.dumps({1: b"t", 40: os.urandom(8), 43: b"\x01" * 9}),
        cbor.dumps({1: b"t", 40: os.urandom(8), 43: b"\x01", 99: 0}),
        b"\x5a\xff\xff\xff\xff",  # a byte string announcing 4 GiB
    ]

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            for payload in payloads:
                response = await post_authz_info(client, port, payload)
                assert code(response) == "4.00", payload[:16]
                assert response.opt.content_format == 19
                assert error_of(response) == 1  # invalid_request

    run(body())


def test_oversized_payload_is_too_large() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            payload = AuthzInfoRequest(os.urandom(1100), os.urandom(8), b"\x42").encode()
            response = await post_authz_info(client, port, payload)
            assert code(response) == "4.13"

    run(body())


def test_server_id_differs_from_client_id() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            for id1 in (b"\x00", b"\x01", b"", b"\x00\x01"):
                mat = material(id1 + b"m")
                response = await post_authz_info(
                    client, port, AuthzInfoRequest(mint(keys, mat), os.urandom(8), id1).encode()
                )
                assert code(response) == "2.01"
                assert AuthzInfoResponse.decode(response.payload).server_recipient_id != id1

    run(body())


# ---- access decisions ---------------------------------------------------------------------------


def test_scope_escalation_is_forbidden() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat, scope="temp.read"), mat)
            response = await request(client, port, aiocoap.PUT, "/led", b"on")
            assert code(response) == "4.03"
            assert code(await request(client, port, aiocoap.GET, "/led")) == "4.03"

    run(body())


def test_method_outside_the_scope_is_method_not_allowed() -> None:
    """RFC 9200 §5.10.2: a token for ``/led`` GET doing PUT ``/led`` gets 4.05."""
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat, scope="led.read"), mat)
            assert code(await request(client, port, aiocoap.GET, "/led")) == "2.05"
            response = await request(client, port, aiocoap.PUT, "/led", b"on")
            assert code(response) == "4.05"
            assert cbor.loads(response.payload)[31] == "scope allows /led, but not PUT"
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "4.03"

    run(body())


def test_unknown_oscore_context_is_unauthorized() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            mat = material()
            fake = client_context(
                mat, os.urandom(8), b"\x42", AuthzInfoResponse(os.urandom(8), b"\x33")
            )
            client.client_credentials[f"coap://127.0.0.1:{port}/*"] = fake
            assert await plain_answer(client, port, "/temp") == "4.01"

    run(body())


def test_replayed_oscore_request_is_refused() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            mat = material()
            context = await establish(client, port, mint(keys, mat), mat)
            plain = aiocoap.Message(code=aiocoap.GET, uri_path=["temp"])
            plain.direction = Direction.OUTGOING
            protected, _ = context.protect(plain)
            protected.mtype = aiocoap.CON
            protected.token = b"\x11\x22"
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.setblocking(False)
                answers = []
                for mid in (1001, 1002, 1003):  # a fresh message ID each time: no deduplication
                    protected.mid = mid
                    await loop.sock_sendto(raw, protected.encode(), ("127.0.0.1", port))
                    data = await asyncio.wait_for(loop.sock_recv(raw, 2048), 5)
                    answers.append(aiocoap.Message.decode(data))
            first, replay, again = answers
            assert code(first) == "2.04"
            assert first.opt.oscore is not None
            assert code(replay) == "4.01"
            assert replay.opt.oscore is None
            assert code(again) == "4.01"

    run(body())


def test_capacity_limit_and_expired_eviction() -> None:
    keys = Keys()
    clock = FakeClock()

    async def body() -> None:
        async with (
            serving(keys, capacity=2, clock=clock) as (_, port),
            client_ctx() as client,
        ):

            async def post(mat: Any, lifetime: int = 300) -> str:
                token = mint(keys, mat, lifetime=lifetime, now=clock.now)
                response = await post_authz_info(
                    client, port, AuthzInfoRequest(token, os.urandom(8), b"\x42").encode()
                )
                return code(response)

            assert await post(material(b"\x01"), lifetime=10) == "2.01"
            assert await post(material(b"\x02")) == "2.01"
            assert await post(material(b"\x03")) == "5.03"
            clock.now += 20  # the first token expires: it may be evicted
            assert await post(material(b"\x03")) == "2.01"
            assert await post(material(b"\x04")) == "5.03"

    run(body())


def test_new_token_for_same_key_supersedes_old_context() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            mat = material()
            old = await establish(client, port, mint(keys, mat), mat)
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            new = await establish(client, port, mint(keys, mat), mat, id1=b"\x43")
            assert len(site.contexts) == 1
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            client.client_credentials[f"coap://127.0.0.1:{port}/*"] = old
            assert await plain_answer(client, port, "/temp") == "4.01"  # RFC 8613 §8.2: no context
            assert new is not old

    run(body())


def test_reposting_same_token_rekeys() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            mat = material()
            token = mint(keys, mat)
            first = await establish(client, port, token, mat)
            second = await establish(client, port, token, mat)
            assert first.sender_key != second.sender_key
            assert len(site.contexts) == 1
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            client.client_credentials[f"coap://127.0.0.1:{port}/*"] = first
            assert await plain_answer(client, port, "/temp") == "4.01"  # RFC 8613 §8.2: no context

    run(body())


def test_token_update_over_oscore() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (_, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat, scope="temp.read"), mat)
            assert code(await request(client, port, aiocoap.PUT, "/led", b"on")) == "4.03"
            update = AuthzInfoRequest(mint(keys, mat, scope="temp.read led.write")).encode()
            response = await request(client, port, aiocoap.POST, "/authz-info", update)
            assert code(response) == "2.01"
            assert code(await request(client, port, aiocoap.PUT, "/led", b"on")) == "2.04"
            other = AuthzInfoRequest(mint(keys, material(b"\x09"), scope="led.write")).encode()
            response = await request(client, port, aiocoap.POST, "/authz-info", other)
            assert code(response) == "4.00"  # another key: not an update of this context

    run(body())


def test_expired_context_is_removed() -> None:
    keys = Keys()
    clock = FakeClock()

    async def body() -> None:
        async with serving(keys, clock=clock) as (site, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat, lifetime=30, now=clock.now), mat)
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            clock.now += 31
            response = await request(client, port, aiocoap.GET, "/temp")
            assert code(response) == "4.01"
            assert cbor.loads(response.payload)[5] == AUDIENCE
            assert len(site.contexts) == 0

    run(body())


def test_stored_token_is_refused_at_exactly_its_exp() -> None:
    """RFC 8392 §3.1.4: at ``exp`` the token is no longer accepted, also at request time."""
    keys = Keys()
    clock = FakeClock()
    clock.now = float(int(clock.now))

    async def body() -> None:
        async with serving(keys, clock=clock) as (site, port), client_ctx() as client:
            mat = material()
            await establish(client, port, mint(keys, mat, lifetime=30, now=clock.now), mat)
            clock.now += 29
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            clock.now += 1  # exactly exp
            response = await request(client, port, aiocoap.GET, "/temp")
            assert code(response) == "4.01"
            assert cbor.loads(response.payload)[5] == AUDIENCE  # creation hints, no context
            assert len(site.contexts) == 0

    run(body())


def test_token_log_lines_are_built_only_when_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """At WARNING the site describes no token (describe() is not free); at INFO it does."""
    keys = Keys()
    described: list[str] = []
    original = VerifiedToken.describe

    def counting(self: VerifiedToken) -> str:
        described.append("called")
        return original(self)

    monkeypatch.setattr(VerifiedToken, "describe", counting)
    site = ResourceServerSite(
        ResourceServer(RsPolicy(audience=AUDIENCE, as_uri=AS_URI, token_keys=(keys.token_key,)))
    )
    logger = logging.getLogger("keybound.rs")
    level = logger.level

    def post() -> None:
        token = mint(keys, material(os.urandom(4)), lifetime=60, now=int(time.time()))
        payload = AuthzInfoRequest(token, os.urandom(8), b"\x42").encode()
        assert run(site.post_token(payload, "test")).code == aiocoap.CREATED

    try:
        logger.setLevel(logging.WARNING)
        post()
        assert described == []
        logger.setLevel(logging.INFO)
        post()
        assert described == ["called"]
    finally:
        logger.setLevel(level)
