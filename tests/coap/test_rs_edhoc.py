"""The RS of the EDHOC and OSCORE profile over UDP (draft-ietf-ace-edhoc-oscore-profile-11).

An in-process RS serving both profiles; the client is aiocoap's EDHOC Initiator (the
combined request of RFC 9668 unless a test says otherwise) or, for the message-level
checks, lakers driven by hand.
"""

from __future__ import annotations

import os
from typing import Any

import aiocoap
import cbor2
import lakers
import pytest
from aiocoap.oscore import NotAProtectedMessage

from keybound.core import cbor
from keybound.core.edhoc import AuthKey, EadItem, Initiator, encode_connection_id
from keybound.core.edhoc_suites import SUITE_2
from tests.helpers.edhoc import (
    Party,
    edhoc_credentials,
    mint_edhoc,
    post_token,
    serving_edhoc,
    use_edhoc,
)
from tests.helpers.rs import FakeClock, Keys, client_ctx, request, run

EDHOC_CBOR_SEQ = 64


def code(message: aiocoap.Message) -> str:
    return f"{int(message.code) >> 5}.{int(message.code) & 0x1F:02d}"


def parties() -> tuple[Party, Party]:
    return Party.make(b"\x32", "rs.example"), Party.make(b"\x2b", "dev-1")


async def edhoc_post(client: aiocoap.Context, port: int, payload: bytes) -> aiocoap.Message:
    message = aiocoap.Message(
        code=aiocoap.POST, uri=f"coap://127.0.0.1:{port}/.well-known/edhoc", payload=payload
    )
    response: aiocoap.Message = await client.request(message).response
    return response


def edhoc_error(response: aiocoap.Message) -> list[Any]:
    """The (ERR_CODE, ERR_INFO) of an EDHOC error message (RFC 9528 §6)."""
    assert response.opt.content_format == EDHOC_CBOR_SEQ
    return [cbor2.loads(cbor2.dumps(x)) for x in _sequence(response.payload)]


def _sequence(data: bytes) -> list[Any]:
    import io

    stream, items = io.BytesIO(data), []
    while stream.tell() < len(data):
        items.append(cbor2.load(stream))
    return items


async def handshake_by_hand(
    client: aiocoap.Context, port: int, dev: Party, rs: Party
) -> tuple[bytes, bytes, aiocoap.Message]:
    """message_1, message_2, message_3 with lakers (no combined request): (C_R, message_3,
    the answer to message_3)."""
    initiator = lakers.EdhocInitiator()
    message_1 = initiator.prepare_message_1(b"\x0e", [])
    answer_2 = await edhoc_post(client, port, b"\xf5" + message_1)
    assert code(answer_2) == "2.04", answer_2.payload
    c_r, _id_cred_r, _ead_2 = initiator.parse_message_2(answer_2.payload)
    initiator.verify_message_2(dev.d, dev.ccs.encoded, rs.ccs.encoded)
    message_3, _prk = initiator.prepare_message_3(lakers.CredentialTransfer.ByReference, [])
    answer_3 = await edhoc_post(client, port, bytes(c_r) + message_3)
    return bytes(c_r), message_3, answer_3


# ---- the happy path --------------------------------------------------------------------------


def test_posted_token_then_edhoc_then_oscore_requests_authorized_by_its_scope() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            posted = await post_token(client, port, mint_edhoc(keys, dev.ccs))
            assert code(posted) == "2.01"
            assert posted.payload == b""  # draft §4.6.2: no payload
            use_edhoc(client, port, edhoc_credentials(dev, rs))
            response = await request(client, port, aiocoap.GET, "/temp")
            assert code(response) == "2.05"
            assert response.payload == b"21.50"
            assert code(await request(client, port, aiocoap.GET, "/led")) == "4.03"
            assert code(await request(client, port, aiocoap.PUT, "/temp")) == "4.05"
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is not None
            assert len(site.contexts) == 0  # no OSCORE-profile context was made

    run(body())


def test_separate_message_3_with_message_4_then_requests() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (_site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            use_edhoc(client, port, edhoc_credentials(dev, rs, combined=False))
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"

    run(body())


def test_token_update_over_the_edhoc_context_changes_the_scope() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            use_edhoc(client, port, edhoc_credentials(dev, rs))
            assert code(await request(client, port, aiocoap.GET, "/led")) == "4.03"
            wider = mint_edhoc(keys, dev.ccs, scope="temp.read led.read")
            update = aiocoap.Message(
                code=aiocoap.POST,
                uri=f"coap://127.0.0.1:{port}/authz-info",
                payload=cbor.dumps({1: wider}),
                content_format=19,
            )
            answer = await client.request(update).response
            assert code(answer) == "2.01"
            assert getattr(answer.remote, "security_context", None) is not None  # protected
            assert code(await request(client, port, aiocoap.GET, "/led")) == "2.05"
            assert site.edhoc is not None
            assert len(site.edhoc) == 1  # the same session, no new EDHOC

    run(body())


# ---- refusals --------------------------------------------------------------------------------


async def _refused(client: aiocoap.Context, port: int) -> None:
    """The client's EDHOC + first request is refused (the RS answers 4.01 unprotected)."""
    with pytest.raises(NotAProtectedMessage):
        await request(client, port, aiocoap.GET, "/temp")


def test_credential_not_bound_to_any_token_is_refused() -> None:
    keys, (rs, dev) = Keys(), parties()
    stranger = Party.make(b"\x2c", "stranger")

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            use_edhoc(client, port, edhoc_credentials(stranger, rs))
            await _refused(client, port)
            assert site.edhoc is not None
            assert len(site.edhoc) == 0  # the refused session is gone

    run(body())


def test_token_for_another_audience_binds_nothing() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (_site, port), client_ctx() as client:
            posted = await post_token(client, port, mint_edhoc(keys, dev.ccs, aud="other"))
            assert code(posted) == "4.03"
            use_edhoc(client, port, edhoc_credentials(dev, rs))
            await _refused(client, port)

    run(body())


def test_expired_token_binds_nothing() -> None:
    keys, (rs, dev) = Keys(), parties()
    clock = FakeClock()

    async def body() -> None:
        async with serving_edhoc(keys, rs, clock=clock) as (_site, port), client_ctx() as client:
            token = mint_edhoc(keys, dev.ccs, lifetime=60, now=clock.now)
            assert code(await post_token(client, port, token)) == "2.01"
            clock.now += 61
            use_edhoc(client, port, edhoc_credentials(dev, rs))
            await _refused(client, port)

    run(body())


def test_expiry_ends_the_edhoc_context() -> None:
    keys, (rs, dev) = Keys(), parties()
    clock = FakeClock()

    async def body() -> None:
        async with serving_edhoc(keys, rs, clock=clock) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs, lifetime=60, now=clock.now))
            use_edhoc(client, port, edhoc_credentials(dev, rs))
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            clock.now += 61
            assert await site.expire() == 1
            assert site.edhoc is not None
            assert len(site.edhoc) == 0
            with pytest.raises(NotAProtectedMessage):  # 4.01: no such context any more
                await request(client, port, aiocoap.GET, "/temp")

    run(body())


def test_token_credential_differing_from_the_authenticated_one_is_refused() -> None:
    """The client names the bound credential (its kid) but holds another private key:
    MAC_3 is checked against the token's credential and fails."""
    keys, (rs, dev) = Keys(), parties()
    impostor = Party.make(b"\x2b", "impostor")

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            use_edhoc(client, port, edhoc_credentials(dev, rs, key=impostor))
            await _refused(client, port)
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is None

    run(body())


def test_a_superseding_token_ends_the_session_of_the_old_one() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            assert site.edhoc is not None
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            use_edhoc(client, port, edhoc_credentials(dev, rs))
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            old = site.edhoc.session(dev.ccs.fingerprint)
            assert old is not None
            async with client_ctx() as plain:  # unprotected: a new token, not an update
                await post_token(plain, port, mint_edhoc(keys, dev.ccs))  # supersedes
            assert old.removed  # the old token's session and context went with it
            assert site.edhoc.session(dev.ccs.fingerprint) is None
            assert len(site.edhoc) == 0
            # The client's context is refused; it runs EDHOC again, bound to the new token.
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            new = site.edhoc.session(dev.ccs.fingerprint)
            assert new is not None
            assert new is not old

    run(body())


def test_a_second_session_for_the_same_token_replaces_the_first() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as first:
            assert site.edhoc is not None
            await post_token(first, port, mint_edhoc(keys, dev.ccs))
            use_edhoc(first, port, edhoc_credentials(dev, rs))
            assert code(await request(first, port, aiocoap.GET, "/temp")) == "2.05"
            one = site.edhoc.session(dev.ccs.fingerprint)
            async with client_ctx() as second:
                use_edhoc(second, port, edhoc_credentials(dev, rs))
                assert code(await request(second, port, aiocoap.GET, "/temp")) == "2.05"
                two = site.edhoc.session(dev.ccs.fingerprint)
                assert one is not None
                assert two is not None
                assert two is not one
                assert one.removed  # the first session's context is deleted (draft §4.2)
                assert len(site.edhoc) == 1

    run(body())


def test_message_3_replay_is_refused() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            c_r, message_3, answer = await handshake_by_hand(client, port, dev, rs)
            assert code(answer) == "2.04"  # message_4
            assert site.edhoc is not None
            session = site.edhoc.session(dev.ccs.fingerprint)
            assert session is not None
            replay = await edhoc_post(client, port, c_r + message_3)
            assert code(replay) == "4.00"
            assert edhoc_error(replay)[0] == 1
            assert site.edhoc.session(dev.ccs.fingerprint) is session  # nothing changed
            assert len(site.edhoc) == 1

    run(body())


def test_unknown_cipher_suite_gets_wrong_selected_cipher_suite() -> None:
    keys, (rs, _dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            # METHOD 3, SUITES_I [6, 24] (selected: 24), G_X, C_I (RFC 9528 §5.2.1)
            message_1 = cbor.dumps_ordered(3) + cbor.dumps_ordered([6, 24])
            message_1 += cbor.dumps_ordered(os.urandom(32)) + cbor.dumps_ordered(14)
            answer = await edhoc_post(client, port, b"\xf5" + message_1)
            assert code(answer) == "4.00"
            assert edhoc_error(answer) == [2, 2]  # ERR_CODE 2, SUITES_R 2 (RFC 9528 §6.3)
            assert site.edhoc is not None
            assert len(site.edhoc) == 0

    run(body())


def test_method_0_is_refused_as_unsupported() -> None:
    keys, (rs, _dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (_site, port), client_ctx() as client:
            message_1 = cbor.dumps_ordered(0) + cbor.dumps_ordered(2)
            message_1 += cbor.dumps_ordered(os.urandom(32)) + cbor.dumps_ordered(14)
            answer = await edhoc_post(client, port, b"\xf5" + message_1)
            assert code(answer) == "4.00"
            err_code, info = edhoc_error(answer)
            assert err_code == 1
            assert "method 0" in info

    run(body())


@pytest.mark.parametrize("prefix", [b"\xf5", b"\x37"], ids=["message_1", "message_3"])
def test_oversized_edhoc_messages_are_refused_before_any_crypto(prefix: bytes) -> None:
    keys, (rs, _dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            assert site.edhoc is not None
            too_long = b"\x00" * (site.edhoc.max_message + 1)
            answer = await edhoc_post(client, port, prefix + too_long)
            assert code(answer) == "4.13"  # refused on length, before any EDHOC processing
            assert site.edhoc is not None
            assert answer.opt.size1 == site.edhoc.max_message + 1
            assert len(site.edhoc) == 0

    run(body())


def test_a_message_3_longer_than_the_bound_is_refused_not_passed_on() -> None:
    """A message_3 longer than the RS's bound is refused on its length, for a pending
    session, and the session stays usable."""
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            initiator = lakers.EdhocInitiator()
            answer_2 = await edhoc_post(
                client, port, b"\xf5" + initiator.prepare_message_1(b"\x0e", [])
            )
            c_r = bytes(initiator.parse_message_2(answer_2.payload)[0])
            assert site.edhoc is not None
            bound = site.edhoc.max_message
            too_long = await edhoc_post(client, port, c_r + os.urandom(bound + 1))
            assert code(too_long) == "4.13"
            assert len(site.edhoc) == 1  # the pending session is untouched
            initiator.verify_message_2(dev.d, dev.ccs.encoded, rs.ccs.encoded)
            message_3, _ = initiator.prepare_message_3(lakers.CredentialTransfer.ByReference, [])
            assert code(await edhoc_post(client, port, c_r + message_3)) == "2.04"

    run(body())


def test_only_post_reaches_the_edhoc_resource() -> None:
    keys, (rs, _dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (_site, port), client_ctx() as client:
            get = aiocoap.Message(
                code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/.well-known/edhoc"
            )
            assert code(await client.request(get).response) == "4.05"

    run(body())


# ---- the token in EAD_3 (draft §4.1, §4.3.3) -------------------------------------------------


async def handshake_with_ead(
    client: aiocoap.Context, port: int, dev: Party, rs: Party, ead: list[Any]
) -> tuple[Any, aiocoap.Message]:
    """A handshake by hand whose message_3 carries ``ead``: (the initiator, the answer).

    keybound's own Initiator: lakers-python 0.6 truncates the MAC_3 context at 256
    bytes, so its MAC_3 is wrong once EAD_3 carries a token of more than about 130.
    """
    initiator = Initiator(AuthKey(SUITE_2, dev.ccs.edhoc(), dev.d), method=3, c_i=b"\x0e")
    answer_2 = await edhoc_post(client, port, b"\xf5" + initiator.message_1())
    c_r, _id_cred_r, _ead_2 = initiator.parse_message_2(answer_2.payload)
    initiator.verify_message_2(rs.ccs.edhoc())
    items = [
        EadItem(i.label(), None if i.value() is None else bytes(i.value()), i.is_critical())
        for i in ead
    ]
    message_3 = initiator.message_3(items)
    return initiator, await edhoc_post(client, port, encode_connection_id(c_r) + message_3)


def test_token_in_ead_3_is_verified_stored_and_binds_the_session() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            token = mint_edhoc(keys, dev.ccs, compact=True)
            ead = [lakers.EADItem(24, True, token)]  # critical: -24 on the wire
            _initiator, answer = await handshake_with_ead(client, port, dev, rs, ead)
            assert code(answer) == "2.04", answer.payload
            assert site.rs.store.get(dev.ccs.fingerprint) is not None  # stored as if posted
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is not None

    run(body())


def test_an_invalid_token_in_ead_3_aborts_with_err_code_1() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            token = mint_edhoc(keys, dev.ccs, aud="another-rs", compact=True)
            _i, answer = await handshake_with_ead(
                client, port, dev, rs, [lakers.EADItem(24, True, token)]
            )
            assert code(answer) == "4.00"
            err_code, info = edhoc_error(answer)
            assert err_code == 1
            assert "access token not valid" in info
            assert len(site.rs.store) == 0

    run(body())


def test_ead_3_token_for_another_credential_than_id_cred_i_is_refused() -> None:
    keys, (rs, dev) = Keys(), parties()
    other = Party.make(b"\x2c", "other")

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))  # dev's own token
            foreign = mint_edhoc(keys, other.ccs, compact=True)  # binds another credential
            _i, answer = await handshake_with_ead(
                client, port, dev, rs, [lakers.EADItem(24, True, foreign)]
            )
            assert code(answer) == "4.00"
            assert "EAD_3 token binds" in edhoc_error(answer)[1]
            assert site.edhoc is not None
            assert site.edhoc.session(dev.ccs.fingerprint) is None

    run(body())


def test_two_tokens_in_ead_3_abort_the_session() -> None:
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            token = b"\x00" * 60  # two items of any content: refused before either is read
            ead = [lakers.EADItem(24, True, token), lakers.EADItem(24, True, token)]
            _i, answer = await handshake_with_ead(client, port, dev, rs, ead)
            assert code(answer) == "4.00"
            assert "more than one" in edhoc_error(answer)[1]
            assert len(site.rs.store) == 0

    run(body())


def test_malformed_message_3_is_refused_and_the_rs_keeps_serving() -> None:
    """Random bytes as message_3 make lakers-python panic about half the time; each is
    an EDHOC error, and the RS then completes a real handshake."""
    keys, (rs, dev) = Keys(), parties()

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as client:
            await post_token(client, port, mint_edhoc(keys, dev.ccs))
            for _ in range(12):
                initiator = lakers.EdhocInitiator()
                answer_2 = await edhoc_post(
                    client, port, b"\xf5" + initiator.prepare_message_1(b"\x0e", [])
                )
                c_r = bytes(initiator.parse_message_2(answer_2.payload)[0])
                garbage = await edhoc_post(client, port, c_r + os.urandom(40))
                assert code(garbage) == "4.00"
                assert edhoc_error(garbage)[0] == 1
            assert site.edhoc is not None
            assert len(site.edhoc) == 0  # every refused session is gone
            _c_r, _m3, answer = await handshake_by_hand(client, port, dev, rs)
            assert code(answer) == "2.04"

    run(body())


def test_a_request_over_an_ended_session_leaves_the_token_alone() -> None:
    """Session one is ended by session two; a request over session one is 4.01, while
    the token and session two go on (only the session was stale, not the token)."""
    from keybound.core.oscore_derivation import DerivedContext
    from keybound.tools.bench.fixtures import client_oscore_context

    keys, (rs, dev) = Keys(), parties()

    def exported(initiator: Any, c_r: bytes) -> DerivedContext:
        return DerivedContext(
            master_secret=bytes(initiator.edhoc_exporter(0, [], 16)),
            master_salt=bytes(initiator.edhoc_exporter(1, [], 8)),
            id_context=None,
            sender_id=c_r,
            recipient_id=b"\x0e",
        )

    async def one_session(client: aiocoap.Context, port: int) -> DerivedContext:
        initiator = lakers.EdhocInitiator()
        answer_2 = await edhoc_post(
            client, port, b"\xf5" + initiator.prepare_message_1(b"\x0e", [])
        )
        c_r = bytes(initiator.parse_message_2(answer_2.payload)[0])
        initiator.verify_message_2(dev.d, dev.ccs.encoded, rs.ccs.encoded)
        message_3, _ = initiator.prepare_message_3(lakers.CredentialTransfer.ByReference, [])
        answer_3 = await edhoc_post(client, port, c_r + message_3)
        initiator.process_message_4(answer_3.payload)
        return exported(initiator, c_r)

    async def body() -> None:
        async with serving_edhoc(keys, rs) as (site, port), client_ctx() as plain:
            await post_token(plain, port, mint_edhoc(keys, dev.ccs))
            first = await one_session(plain, port)
            second = await one_session(plain, port)
            async with client_ctx() as old, client_ctx() as new:
                old.client_credentials[f"coap://127.0.0.1:{port}/*"] = client_oscore_context(first)
                new.client_credentials[f"coap://127.0.0.1:{port}/*"] = client_oscore_context(second)
                with pytest.raises(NotAProtectedMessage):  # 4.01: that session is over
                    await request(old, port, aiocoap.GET, "/temp")
                assert site.rs.store.get(dev.ccs.fingerprint) is not None
                assert code(await request(new, port, aiocoap.GET, "/temp")) == "2.05"

    run(body())
