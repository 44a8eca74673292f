"""The RS's EDHOC responder with keybound's own EDHOC: signature credentials, big EAD_3.

Each case its own test: method 1 (the client signs with ES256, the RS proves its
static DH key), method 0 (both sign), method 2 (the RS signs, the client proves its
static DH key; RFC 9528 §3.2), a signature credential used with the static DH method refused, and an
access token of more than 256 bytes in EAD_3 (beyond what lakers-python 0.6 takes).
"""

from __future__ import annotations

import aiocoap
import pytest

from keybound.coap.edhoc_client import OwnEdhocCredentials, method_for
from keybound.core.edhoc import AuthKey, EadItem, Initiator, encode_connection_id
from keybound.core.edhoc_credentials import Ccs
from keybound.core.edhoc_suites import SUITE_2
from keybound.core.keys import Key
from keybound.core.numbers.edhoc_profile import EAD_ACCESS_TOKEN
from tests.helpers.edhoc import Party, mint_edhoc, post_token, serving_edhoc, use_edhoc
from tests.helpers.rs import Keys, client_ctx, request, run


def _code(message: aiocoap.Message) -> str:
    return f"{int(message.code) >> 5}.{int(message.code) & 0x1F:02d}"


async def _post(client: aiocoap.Context, port: int, payload: bytes) -> aiocoap.Message:
    uri = f"coap://127.0.0.1:{port}/.well-known/edhoc"
    response: aiocoap.Message = await client.request(
        aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload)
    ).response
    return response


async def _handshake(
    client: aiocoap.Context, port: int, dev: Party, rs: Party, method: int, ead: list[EadItem]
) -> aiocoap.Message:
    initiator = Initiator(AuthKey(SUITE_2, dev.ccs.edhoc(), dev.d), method=method, c_i=b"\x0e")
    answer_2 = await _post(client, port, b"\xf5" + initiator.message_1())
    assert _code(answer_2) == "2.04", answer_2.payload
    c_r, _, _ = initiator.parse_message_2(answer_2.payload)
    initiator.verify_message_2(rs.ccs.edhoc())
    return await _post(client, port, encode_connection_id(c_r) + initiator.message_3(ead))


def _signing_party(kid: bytes, subject: str) -> Party:
    key = Key.generate_ec2(kid=kid)
    return Party(key, Ccs.make(key, subject=subject, signing=True))


def _signing_parties(*, rs_signs: bool, dev_signs: bool) -> tuple[Party, Party]:
    """(the RS, a device); each one's key signs (ES256) or is static DH."""
    rs = _signing_party(b"\x32", "rs.example") if rs_signs else Party.make(b"\x32", "rs.example")
    dev = _signing_party(b"\x2b", "dev-sig") if dev_signs else Party.make(b"\x2b", "dev-dh")
    return rs, dev


SIGNATURE_METHODS = pytest.mark.parametrize(
    ("method", "rs_signs", "dev_signs"),
    [(1, False, True), (0, True, True), (2, True, False)],
    ids=["method_1", "method_0", "method_2"],
)


@SIGNATURE_METHODS
def test_a_client_with_a_signature_credential_completes(
    method: int, rs_signs: bool, dev_signs: bool
) -> None:
    """Method 1 (the RS proves a static DH key), method 0 (both sign, ES256), method 2
    (the RS signs, the client proves a static DH key)."""
    keys = Keys()
    rs, dev = _signing_parties(rs_signs=rs_signs, dev_signs=dev_signs)
    assert dev.ccs.signs is dev_signs
    assert rs.ccs.signs is rs_signs

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            answer = await _handshake(client, port, dev, rs, method, [])
            assert _code(answer) == "2.04", answer.payload
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is not None

    run(body())


def test_a_signature_credential_with_the_static_dh_method_is_refused() -> None:
    """The token binds an ES256 key; a MAC_3 made with it as a DH key is not taken."""
    keys = Keys()
    rs, dev = Party.make(b"\x32", "rs.example"), _signing_party(b"\x2b", "dev-sig")
    as_dh = Party(dev.key, Ccs.make(dev.key, subject="dev-sig"))  # same key, no alg

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            answer = await _handshake(client, port, as_dh, rs, 3, [])
            assert _code(answer) == "4.00"
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is None

    run(body())


def test_a_token_over_256_bytes_in_ead_3_is_taken() -> None:
    keys, rs, dev = Keys(), Party.make(b"\x32", "rs.example"), Party.make(b"\x2b", "dev-1")
    scope = " ".join(["temp.read", *(f"extra.scope.{i}" for i in range(20))])
    token = mint_edhoc(keys, dev.ccs, scope=scope)
    assert len(token) > 256

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            ead = [EadItem(EAD_ACCESS_TOKEN, token, critical=True)]
            answer = await _handshake(client, port, dev, rs, 3, ead)
            assert _code(answer) == "2.04", answer.payload
            assert site.rs.store.get(dev.ccs.fingerprint) is not None
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is not None

    run(body())


def test_method_0_credential_bound_to_no_token_is_refused() -> None:
    keys = Keys()
    rs, dev = _signing_party(b"\x32", "rs.example"), _signing_party(b"\x2b", "dev-sig")

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            answer = await _handshake(client, port, dev, rs, 0, [])
            assert _code(answer) == "4.00"
            assert b"no valid access token" in answer.payload
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is None

    run(body())


@SIGNATURE_METHODS
def test_the_cpython_client_runs_signature_methods_then_oscore(
    method: int, rs_signs: bool, dev_signs: bool
) -> None:
    """keybound's client credentials (own Initiator) with aiocoap: EDHOC, then OSCORE GETs."""
    keys = Keys()
    rs, dev = _signing_parties(rs_signs=rs_signs, dev_signs=dev_signs)
    assert method_for(dev.ccs, rs.ccs) == method

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            own = OwnEdhocCredentials(AuthKey(SUITE_2, dev.ccs.edhoc(), dev.d), rs.ccs, method)
            use_edhoc(client, port, own)
            response = await request(client, port, aiocoap.GET, "/temp")
            assert _code(response) == "2.05"
            assert response.payload == b"21.50"
            assert _code(await request(client, port, aiocoap.GET, "/led")) == "4.03"
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is not None

    run(body())
