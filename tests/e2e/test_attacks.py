"""Attacks on the PoP architecture against the RS and the AS as real processes; each is refused.

SECURITY.md maps every test here to the threat it answers
(draft-ietf-oauth-pop-architecture §4: token manufacture and modification,
disclosure, redirect, reuse, repudiation).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import pytest
from joserfc.jwk import ECKey

from keybound.core import cwt, dpop
from keybound.core.dpop_state import ReplayedProof
from keybound.core.errors import InvalidDPoPProof
from keybound.core.exi import encode_exi_sequence
from keybound.core.keys import Key
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.scope import TextScope
from keybound.core.token import AccessToken, CnfKey, CnfOsc
from keybound.tools.http.replay_cache import InMemoryReplayCache
from tests.helpers import soak
from tests.helpers.dpop import create_proof
from tests.helpers.ports import free_udp_port

UNAUTHORIZED, BAD_REQUEST, FORBIDDEN = 0x81, 0x80, 0x83
METHOD_NOT_ALLOWED, TOO_LARGE = 0x85, 0x8D
CREATED, CONTENT = 0x41, 0x45
#: RFC 9200 §5.8.3 ``error`` values: ACE abbreviations, or the OAuth name where none exists.
INVALID_REQUEST, INVALID_SCOPE, INCOMPATIBLE_ACE_PROFILES = 1, 6, 8
INVALID_TOKEN = "invalid_token"


def post_token(fleet: soak.Fleet, token: bytes, id1: bytes = b"\x42") -> aiocoap.Message:
    reply = soak.probe(fleet.rs_port, soak.authz_info_datagram(token, os.urandom(8), id1), 5)
    assert reply is not None
    return aiocoap.Message.decode(reply)


def refused(message: aiocoap.Message, code: int, error: int | str) -> dict[int, Any]:
    """The reply is ``code`` with an RFC 9200 §5.8.3 error map whose ``error`` is ``error``."""
    assert int(message.code) == code, (message.code, message.payload)
    assert message.opt.content_format == 19
    body: dict[int, Any] = cbor2.loads(message.payload)
    assert body.get(30) == error, body
    return body


def signed(fleet: soak.Fleet, token: AccessToken, key: Key | None = None) -> bytes:
    """``token`` as the AS issues it: its Sign1 nested in an Encrypt0 for the RS."""
    assert fleet.as_signing_key is not None
    encrypt = cwt.Encrypt0(key or fleet.token_key)
    return cwt.encode(
        token, cwt.Nested(cwt.Sign1(fleet.as_signing_key), encrypt), random_bytes=os.urandom
    )


def oscore_get(fleet: soak.Fleet, context: Any, mid: int, port: int | None = None) -> int:
    """Send one protected GET /temp; the inner code, or the outer one if unprotected."""
    plain = aiocoap.Message(code=aiocoap.GET, uri_path=["temp"])
    datagram, request_id = soak.protect_with_id(context, plain, mid)
    reply = soak.probe(port or fleet.rs_port, datagram, 5)
    assert reply is not None
    message = aiocoap.Message.decode(reply)
    if message.opt.oscore is None:
        return int(message.code)
    message.direction = soak.Direction.INCOMING
    inner, _ = context.unprotect(message, request_id)
    return int(inner.code)


# ---- token manufacture and modification -----------------------------------------------------


def test_manufactured_token_with_guessed_key_is_refused(fleet: soak.Fleet) -> None:
    guessed = Key.generate_symmetric(16, random_bytes=os.urandom, kid=fleet.token_key.kid)
    refused(
        post_token(fleet, fleet.mint(soak.material(), key=guessed)), UNAUTHORIZED, INVALID_TOKEN
    )


def test_modified_token_bit_flips_are_refused(fleet: soak.Fleet) -> None:
    token = fleet.mint(soak.material())
    for position in range(0, len(token), max(1, len(token) // 24)):
        flipped = bytearray(token)
        flipped[position] ^= 0x01
        refused(post_token(fleet, bytes(flipped)), UNAUTHORIZED, INVALID_TOKEN)


# ---- token redirect -----------------------------------------------------------------------


def test_token_for_another_audience_is_refused(fleet: soak.Fleet) -> None:
    # encrypted for the other RS: this RS cannot even open it
    door_key = Key.from_jwk(fleet.bundles[soak.NO_CLOCK_AUDIENCE]["token_key"])
    token = fleet.mint(soak.material(), audience=soak.NO_CLOCK_AUDIENCE, key=door_key)
    refused(post_token(fleet, token), UNAUTHORIZED, INVALID_TOKEN)
    # under this RS's key but naming another audience (a confused AS)
    token = fleet.mint(soak.material(), audience=soak.NO_CLOCK_AUDIENCE)
    refused(post_token(fleet, token), FORBIDDEN, INVALID_TOKEN)


# ---- token reuse and replay -------------------------------------------------------------------


def test_replayed_oscore_request_with_fresh_message_id_is_refused(fleet: soak.Fleet) -> None:
    context, _ = soak.establish_raw(fleet, b"\x51")
    plain = aiocoap.Message(code=aiocoap.GET, uri_path=["temp"])
    datagram, request_id = soak.protect_with_id(context, plain, 0x5100)
    first = aiocoap.Message.decode(soak.probe(fleet.rs_port, datagram, 5) or b"")
    first.direction = soak.Direction.INCOMING
    assert int(context.unprotect(first, request_id)[0].code) == CONTENT
    replay = bytearray(datagram)
    replay[2:4] = (0x5101).to_bytes(2, "big")  # a fresh CoAP message ID: not deduplication
    answer = aiocoap.Message.decode(soak.probe(fleet.rs_port, bytes(replay), 5) or b"")
    assert answer.opt.oscore is None
    assert int(answer.code) == UNAUTHORIZED
    assert b"Replay" in answer.payload


def test_reposted_token_replaces_the_old_context(fleet: soak.Fleet) -> None:
    """RFC 9203 §4.1: a re-post makes new nonces and keys; the old context must go."""
    mat = soak.material()
    token = fleet.mint(mat)

    def post(mid: int) -> soak.RecordingContext:
        nonce1 = os.urandom(8)
        reply = soak.probe(fleet.rs_port, soak.authz_info_datagram(token, nonce1, b"\x61", mid), 5)
        message = aiocoap.Message.decode(reply or b"")
        assert int(message.code) == CREATED
        return soak.client_side(mat, nonce1, b"\x61", message.payload)

    old = post(10)
    assert oscore_get(fleet, old, 0x6100) == CONTENT
    new = post(11)
    assert oscore_get(fleet, new, 0x6101) == CONTENT
    # the old one is gone: RFC 8613 §8.2, no security context for its kid is 4.01
    assert oscore_get(fleet, old, 0x6102) == UNAUTHORIZED
    assert oscore_get(fleet, new, 0x6103) == CONTENT  # exactly one live context


@pytest.fixture(scope="module")
def door_rs(fleet: soak.Fleet) -> Iterator[int]:
    """A second RS without a clock (tokens carry exi and a sequence number in cti)."""
    root: Path = fleet.root / "door"
    root.mkdir(exist_ok=True)
    port = free_udp_port()
    bundle = root / "rs-bundle.json"
    bundle.write_text(json.dumps(fleet.bundles[soak.NO_CLOCK_AUDIENCE]))
    bundle.chmod(0o600)
    (root / "rs.toml").write_text(
        f'bundle = "rs-bundle.json"\nlisten = "127.0.0.1:{port}"\nstate = "state.db"\n'
        '[resources."/temp"]\nGET = ["open"]\n'
    )
    argv = [
        soak.sys.executable,
        "-m",
        "keybound.tools.cli.rs_commands",
        "serve",
        "--config",
        "rs.toml",
    ]
    server = soak.ServerProcess("door-rs", argv, root / "rs.log", root)
    server.start(lambda: soak.probe(port, soak.coap_get(".well-known/core"), 0.3) is not None)
    try:
        yield port
    finally:
        server.stop()


def exi_token(fleet: soak.Fleet, sequence: int, mat: OscoreInputMaterial | None = None) -> bytes:
    key = Key.from_jwk(fleet.bundles[soak.NO_CLOCK_AUDIENCE]["token_key"])
    token = AccessToken(
        iss=soak.ISSUER,
        aud=(soak.NO_CLOCK_AUDIENCE,),
        exi=600,
        cti=encode_exi_sequence(sequence),
        scope=TextScope.parse("open"),
        ace_profile=2,
        cnf=CnfOsc(mat or soak.material()),
    )
    return signed(fleet, token, key)


def test_old_exi_sequence_number_is_refused(fleet: soak.Fleet, door_rs: int) -> None:
    """RFC 9200 §5.10.3: an RS without a clock refuses a sequence number below its mark."""

    def post(sequence: int) -> aiocoap.Message:
        datagram = soak.authz_info_datagram(exi_token(fleet, sequence), os.urandom(8), b"\x07")
        return aiocoap.Message.decode(soak.probe(door_rs, datagram, 5) or b"")

    assert int(post(50).code) == CREATED
    refused(post(10), UNAUTHORIZED, INVALID_TOKEN)


def test_lower_exi_sequence_number_for_the_same_key_is_refused(
    fleet: soak.Fleet, door_rs: int
) -> None:
    """RFC 9200 §5.10.3: sequence 5, then 9 for the same PoP key, then 5 again is refused,
    both posted to /authz-info in the clear and as an update over the OSCORE context."""
    mat = soak.material()

    def post(sequence: int, id1: bytes, mid: int) -> aiocoap.Message:
        datagram = soak.authz_info_datagram(
            exi_token(fleet, sequence, mat), os.urandom(8), id1, mid
        )
        return aiocoap.Message.decode(soak.probe(door_rs, datagram, 5) or b"")

    assert int(post(500, b"\x0a", 0xB000).code) == CREATED
    nonce1 = os.urandom(8)
    datagram = soak.authz_info_datagram(exi_token(fleet, 900, mat), nonce1, b"\x0a", 0xB001)
    current = aiocoap.Message.decode(soak.probe(door_rs, datagram, 5) or b"")
    assert int(current.code) == CREATED
    context = soak.client_side(mat, nonce1, b"\x0a", current.payload)
    body = refused(post(500, b"\x0a", 0xB002), UNAUTHORIZED, INVALID_TOKEN)
    assert "500 is not above 900" in body[31]
    update = aiocoap.Message(
        code=aiocoap.POST, uri_path=["authz-info"], content_format=19,
        payload=cbor2.dumps({1: exi_token(fleet, 500, mat)}),
    )  # fmt: skip
    datagram, request_id = soak.protect_with_id(context, update, 0xB003)
    answer = aiocoap.Message.decode(soak.probe(door_rs, datagram, 5) or b"")
    answer.direction = soak.Direction.INCOMING
    inner, _ = context.unprotect(answer, request_id)
    assert int(inner.code) == UNAUTHORIZED
    assert cbor2.loads(inner.payload)[30] == INVALID_TOKEN
    assert "500 is not above 900" in cbor2.loads(inner.payload)[31]


# ---- key confusion ---------------------------------------------------------------------------


def test_mac_keyed_with_the_public_key_is_refused(fleet: soak.Fleet) -> None:
    """HMAC under the AS's public key (the classic RS256/HS256 confusion, in COSE)."""
    public = Key.from_jwk(fleet.bundles[soak.CLOCK_AUDIENCE]["as_public_key"])
    public_bytes = json.dumps(public.to_jwk(), sort_keys=True).encode()[:32]
    mac_key = Key.symmetric(public_bytes, kid=public.kid)
    now = int(time.time())
    token = AccessToken(
        iss=soak.ISSUER, aud=(soak.CLOCK_AUDIENCE,), exp=now + 300, iat=now,
        cti=os.urandom(8), scope=TextScope.parse("read"), ace_profile=2,
        cnf=CnfOsc(soak.material()),
    )  # fmt: skip
    refused(post_token(fleet, cwt.encode(token, cwt.Mac0(mac_key))), UNAUTHORIZED, INVALID_TOKEN)


def test_dtls_profile_token_is_refused(fleet: soak.Fleet) -> None:
    """A COSE_Key cnf token of the DTLS profile (RFC 9202) is no OSCORE credential."""
    now = int(time.time())
    token = AccessToken(
        iss=soak.ISSUER, aud=(soak.CLOCK_AUDIENCE,), exp=now + 300, iat=now,
        cti=os.urandom(8), scope=TextScope.parse("read"), ace_profile=1,
        cnf=CnfKey(Key.generate_ec2(kid=b"dtls").public_key()),
    )  # fmt: skip
    refused(post_token(fleet, signed(fleet, token)), BAD_REQUEST, INCOMPATIBLE_ACE_PROFILES)
    token = AccessToken(
        iss=soak.ISSUER, aud=(soak.CLOCK_AUDIENCE,), exp=now + 300, iat=now,
        cti=os.urandom(8), scope=TextScope.parse("read"), ace_profile=2,
        cnf=CnfKey(Key.generate_ec2(kid=b"dtls").public_key()),
    )  # fmt: skip
    refused(post_token(fleet, signed(fleet, token)), BAD_REQUEST, INCOMPATIBLE_ACE_PROFILES)


# ---- scope escalation and stolen contexts -----------------------------------------------------


def test_scope_escalation_is_refused(fleet: soak.Fleet) -> None:
    # a genuine token with a scope this RS does not know is refused at /authz-info
    refused(
        post_token(fleet, fleet.mint(soak.material(), scope="admin")), BAD_REQUEST, INVALID_SCOPE
    )
    # a read token cannot write: POST /temp over its own context
    context, _ = soak.establish_raw(fleet, b"\x71")
    plain = aiocoap.Message(code=aiocoap.POST, uri_path=["temp"], payload=b"99")
    datagram, request_id = soak.protect_with_id(context, plain, 0x7100)
    answer = aiocoap.Message.decode(soak.probe(fleet.rs_port, datagram, 5) or b"")
    answer.direction = soak.Direction.INCOMING
    inner = context.unprotect(answer, request_id)[0]
    assert int(inner.code) == METHOD_NOT_ALLOWED  # /temp is covered, POST is not (RFC 9200 §5.10.2)
    assert cbor2.loads(inner.payload)[30] == "insufficient_scope"

    # and the AS does not grant a scope the client was not given (RFC 9200 §5.8.3)
    async def ask() -> aiocoap.Message:
        client = await aiocoap.Context.create_client_context()
        ctx = fleet.client_context("client-0")
        try:
            client.client_credentials[f"{fleet.as_base}/*"] = ctx
            request = aiocoap.Message(
                code=aiocoap.POST, uri=f"{fleet.as_base}/token", content_format=19,
                payload=cbor2.dumps({5: soak.CLOCK_AUDIENCE, 9: "write"}),
            )  # fmt: skip
            response: aiocoap.Message = await client.request(request).response
            return response
        finally:
            await client.shutdown()

    answer = asyncio.run(asyncio.wait_for(ask(), 20))
    assert int(answer.code) == BAD_REQUEST
    assert cbor2.loads(answer.payload)[30] == 6  # invalid_scope


def test_second_client_cannot_use_first_clients_context(fleet: soak.Fleet) -> None:
    first, _ = soak.establish_raw(fleet, b"\x81")
    second, _ = soak.establish_raw(fleet, b"\x82")
    assert oscore_get(fleet, first, 0x8100) == CONTENT
    second.sender_id = first.sender_id  # claim the first client's kid with the second's keys
    # RFC 8613 §8.2: a known kid whose keys do not decrypt is 4.00 (Bad Request)
    assert oscore_get(fleet, second, 0x8101) == BAD_REQUEST
    assert oscore_get(fleet, first, 0x8102) == CONTENT


# ---- oversized and deeply nested CBOR ---------------------------------------------------------


def test_oversized_and_nested_cbor_to_authz_info(fleet: soak.Fleet) -> None:
    def send(payload: bytes) -> aiocoap.Message:
        message = aiocoap.Message(code=aiocoap.POST, uri_path=["authz-info"], payload=payload)
        message.opt.content_format = 19
        message.mtype, message.mid, message.token = aiocoap.CON, 0x9000, b"\x90"
        return aiocoap.Message.decode(soak.probe(fleet.rs_port, message.encode(), 5) or b"")

    refused(send(b"\x81" * 900 + b"\x00"), BAD_REQUEST, INVALID_REQUEST)
    refused(send(b"\xa1\x01" * 400 + b"\x00"), BAD_REQUEST, INVALID_REQUEST)
    refused(send(cbor2.dumps({1: b"\x00" * 1100})), TOO_LARGE, INVALID_REQUEST)
    nested_token = cbor2.dumps({1: b"\x81" * 500 + b"\x00", 40: os.urandom(8), 43: b"\x01"})
    refused(send(nested_token), UNAUTHORIZED, INVALID_TOKEN)


def test_oversized_and_nested_cbor_to_token(fleet: soak.Fleet) -> None:
    async def ask(payload: bytes) -> aiocoap.Message:
        client = await aiocoap.Context.create_client_context()
        ctx = fleet.client_context("client-1")
        try:
            client.client_credentials[f"{fleet.as_base}/*"] = ctx
            request = aiocoap.Message(
                code=aiocoap.POST, uri=f"{fleet.as_base}/token", content_format=19,
                payload=payload,
            )  # fmt: skip
            response: aiocoap.Message = await client.request(request).response
            return response
        finally:
            await client.shutdown()

    for payload in (
        b"\x81" * 400 + b"\x00",
        b"\xa1\x05" * 300 + b"\x00",
        cbor2.dumps({5: "x" * 900, 9: "read"}),
    ):
        answer = asyncio.run(asyncio.wait_for(ask(payload), 20))
        refused(answer, BAD_REQUEST, INVALID_REQUEST)


# ---- a flood of tokens ------------------------------------------------------------------------


def test_authz_info_flood_does_not_starve_a_legitimate_client(tmp_path: Path) -> None:
    """Policy (core.token_store.TokenStore): at most ``capacity`` tokens, one per PoP key;
    expired tokens are evicted first; live tokens are never evicted, so a full store refuses
    new tokens with 5.03 (service unavailable) instead of dropping a working client.
    Forged tokens never enter the store at all."""
    capacity = 8
    fleet = soak.Fleet(tmp_path, capacity=capacity)
    fleet.provision()
    try:
        fleet.start_rs()
        legit, legit_token = soak.establish_raw(fleet, b"\xa0")
        # 300 valid-looking tokens under a guessed key: all refused, none stored
        guessed = Key.generate_symmetric(16, random_bytes=os.urandom, kid=fleet.token_key.kid)
        datagrams = [
            soak.authz_info_datagram(
                fleet.mint(soak.material(), key=guessed), os.urandom(8), b"\x01", i
            )
            for i in range(300)
        ]
        replies = soak.exchange(fleet.rs_port, datagrams, wait=5)
        codes = {int(aiocoap.Message.decode(r).code) for r in replies if r is not None}
        assert codes == {UNAUTHORIZED}
        assert oscore_get(fleet, legit, 0xA000) == CONTENT
        # genuine tokens fill the store; the next one is refused, the legitimate client goes on
        for i in range(capacity - 1):
            assert int(post_token(fleet, fleet.mint(soak.material()), bytes([i])).code) == CREATED
        full = post_token(fleet, fleet.mint(soak.material()), b"\x33")
        assert int(full.code) == 0xA3  # 5.03: full, never 5.00
        assert oscore_get(fleet, legit, 0xA001) == CONTENT
        # the same PoP key re-posting its token replaces its own entry, even when full
        assert int(post_token(fleet, legit_token, b"\xa0").code) == CREATED
        assert not soak.log_problems(fleet.servers[0].log_text())
    finally:
        fleet.stop()


# ---- DPoP ------------------------------------------------------------------------------------


def test_dpop_proof_replayed_at_another_resource_server_is_refused() -> None:
    key = ECKey.generate_key("P-256")
    now = int(time.time())
    proof = create_proof(key, "GET", "https://rs1.example/data", now=now)
    cache_one, cache_two = InMemoryReplayCache(), InMemoryReplayCache()
    dpop.verify_proof(
        proof, htm="GET", htu="https://rs1.example/data", now=now, replay_cache=cache_one
    )
    with pytest.raises(InvalidDPoPProof):  # another RS: htu does not match
        dpop.verify_proof(
            proof, htm="GET", htu="https://rs2.example/data", now=now, replay_cache=cache_two
        )
    with pytest.raises(ReplayedProof):  # the same RS: jti seen
        dpop.verify_proof(
            proof, htm="GET", htu="https://rs1.example/data", now=now, replay_cache=cache_one
        )
