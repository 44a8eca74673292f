"""keybound's EDHOC refuses what it must, each case its own test (RFC 9528 §5, §6)."""

from __future__ import annotations

import os

import pytest

from keybound.core.edhoc import (
    ERR_UNSPECIFIED,
    ERR_WRONG_SELECTED_CIPHER_SUITE,
    MAX_MESSAGE,
    AuthKey,
    EdhocError,
    Initiator,
    PeerError,
    Responder,
)
from keybound.core.edhoc_credentials import Ccs, key_from_private_d
from keybound.core.edhoc_suites import SUITE_2


def _key(kid: bytes, *, signing: bool = False) -> AuthKey:
    d = os.urandom(32)
    ccs = Ccs.make(key_from_private_d(d, kid=kid), signing=signing)
    return AuthKey(SUITE_2, ccs.edhoc(), d)


def _to_message_3(method: int = 3) -> tuple[Initiator, Responder, bytes]:
    i_key, r_key = _key(b"\x2b", signing=method in (0, 1)), _key(b"\x32", signing=method in (0, 2))
    initiator = Initiator(i_key, method=method, c_i=b"\x0e")
    responder = Responder(r_key)
    responder.process_message_1(initiator.message_1())
    initiator.parse_message_2(responder.message_2(b"\x05"))
    initiator.verify_message_2(r_key.credential)
    return initiator, responder, initiator.message_3()


def test_an_unknown_selected_cipher_suite_gets_err_code_2_with_suites_r() -> None:
    responder = Responder(_key(b"\x32"))
    message_1 = b"\x03\x06\x58\x20" + os.urandom(32) + b"\x0e"  # suite 6
    with pytest.raises(EdhocError) as caught:
        responder.process_message_1(message_1)
    assert caught.value.code == ERR_WRONG_SELECTED_CIPHER_SUITE
    assert caught.value.encode() == b"\x02\x02"  # (2, SUITES_R = 2)


def test_a_supported_suite_before_the_selected_one_gets_err_code_2() -> None:
    responder = Responder(_key(b"\x32"))
    message_1 = b"\x03\x82\x02\x06\x58\x20" + os.urandom(32) + b"\x0e"  # [2, 6]
    with pytest.raises(EdhocError) as caught:
        responder.process_message_1(message_1)
    assert caught.value.code == ERR_WRONG_SELECTED_CIPHER_SUITE


def test_an_oversized_message_1_is_refused_on_its_length() -> None:
    responder = Responder(_key(b"\x32"))
    with pytest.raises(EdhocError, match="longer than"):
        responder.process_message_1(b"\x03" * (MAX_MESSAGE + 1))


def test_an_oversized_message_3_is_refused_on_its_length() -> None:
    _initiator, responder, _message_3 = _to_message_3()
    with pytest.raises(EdhocError, match="longer than"):
        responder.parse_message_3(b"\x59\x05\x78" + bytes(MAX_MESSAGE))


def test_a_non_shortest_cbor_head_is_refused() -> None:
    responder = Responder(_key(b"\x32"))
    message_1 = b"\x18\x03\x02\x58\x20" + os.urandom(32) + b"\x0e"  # METHOD as 0x18 0x03
    with pytest.raises(EdhocError, match="shortest"):
        responder.process_message_1(message_1)


def test_a_truncated_message_1_is_refused() -> None:
    responder = Responder(_key(b"\x32"))
    with pytest.raises(EdhocError, match="truncated"):
        responder.process_message_1(b"\x03\x02\x58\x20" + os.urandom(20))


def test_a_method_that_does_not_fit_the_responder_key_is_refused() -> None:
    responder = Responder(_key(b"\x32"))  # static DH key: methods 1 and 3 only
    message_1 = b"\x00\x02\x58\x20" + os.urandom(32) + b"\x0e"
    with pytest.raises(EdhocError, match="method 0"):
        responder.process_message_1(message_1)


def test_a_replayed_message_3_is_refused() -> None:
    _initiator, responder, message_3 = _to_message_3()
    responder.parse_message_3(message_3)
    responder.verify_message_3(_initiator.key.credential)
    with pytest.raises(EdhocError, match="not expected"):
        responder.parse_message_3(message_3)


def test_a_tampered_message_3_is_refused_and_ends_the_session() -> None:
    _initiator, responder, message_3 = _to_message_3()
    tampered = message_3[:-1] + bytes((message_3[-1] ^ 1,))
    with pytest.raises(EdhocError, match="tag"):
        responder.parse_message_3(tampered)
    with pytest.raises(EdhocError, match="not expected"):
        responder.parse_message_3(message_3)


def test_message_3_from_another_key_fails_mac_3() -> None:
    _initiator, responder, message_3 = _to_message_3()
    responder.parse_message_3(message_3)
    with pytest.raises(EdhocError, match="MAC_3"):
        responder.verify_message_3(_key(b"\x2b").credential)


def test_a_method_0_signature_from_another_key_is_refused() -> None:
    _initiator, responder, message_3 = _to_message_3(method=0)
    responder.parse_message_3(message_3)
    with pytest.raises(EdhocError, match="signature"):
        responder.verify_message_3(_key(b"\x2b", signing=True).credential)


def test_a_static_dh_credential_for_a_method_0_initiator_is_refused() -> None:
    _initiator, responder, message_3 = _to_message_3(method=0)
    responder.parse_message_3(message_3)
    with pytest.raises(EdhocError, match="does not fit"):
        responder.verify_message_3(_key(b"\x2b").credential)


def test_an_edhoc_error_instead_of_message_2_is_reported_as_the_peers() -> None:
    initiator = Initiator(_key(b"\x2b"), method=3, c_i=b"\x0e")
    initiator.message_1()
    with pytest.raises(PeerError) as caught:
        initiator.parse_message_2(b"\x01\x63bad")
    assert (caught.value.code, caught.value.info) == (ERR_UNSPECIFIED, "bad")


def test_a_tampered_message_2_fails_mac_2() -> None:
    i_key, r_key = _key(b"\x2b"), _key(b"\x32")
    initiator = Initiator(i_key, method=3, c_i=b"\x0e")
    responder = Responder(r_key)
    responder.process_message_1(initiator.message_1())
    message_2 = bytearray(responder.message_2(b"\x05"))
    message_2[-1] ^= 1  # the last byte of MAC_2
    initiator.parse_message_2(bytes(message_2))
    with pytest.raises(EdhocError, match="MAC_2"):
        initiator.verify_message_2(r_key.credential)
