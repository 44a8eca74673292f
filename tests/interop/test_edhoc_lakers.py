"""keybound's EDHOC against lakers (method 3, cipher suite 2), both directions.

lakers-python takes no ephemeral key from outside, so the check is by running
sessions: random static keys for each run, lakers as one role and keybound's EDHOC
as the other, and both must end with the same PRK_out, the same OSCORE Master
Secret and Salt and the same exporter output, and the Initiator must accept the
Responder's message_4. The byte-for-byte checks are the RFC 9529 traces
(tests/unit/test_edhoc_rfc9529.py).
"""

from __future__ import annotations

import os

import lakers
import pytest

from keybound.core.edhoc import AuthKey, EadItem, EdhocError, Initiator, Responder
from keybound.core.edhoc_credentials import Ccs, key_from_private_d
from keybound.core.edhoc_suites import SUITE_2

RUNS = 25


def _party(kid: bytes) -> tuple[bytes, Ccs]:
    d = os.urandom(32)
    return d, Ccs.make(key_from_private_d(d, kid=kid), subject="party")


@pytest.mark.parametrize("run", range(RUNS))
def test_lakers_initiator_with_keybound_responder(run: int) -> None:
    d_i, ccs_i = _party(bytes([run % 24]))
    d_r, ccs_r = _party(b"\x32")
    initiator = lakers.EdhocInitiator()
    message_1 = initiator.prepare_message_1(b"\x37", None)
    responder = Responder(AuthKey(SUITE_2, ccs_r.edhoc(), d_r))
    method, c_i, _ = responder.process_message_1(message_1)
    assert (method, c_i) == (3, b"\x37")
    message_2 = responder.message_2(b"\x27")
    c_r, id_cred_r, _ = initiator.parse_message_2(message_2)
    assert bytes(c_r) == b"\x27"
    assert bytes(id_cred_r) == ccs_r.id_cred_by_kid()
    initiator.verify_message_2(d_i, ccs_i.encoded, ccs_r.encoded)
    transfer = lakers.CredentialTransfer.ByReference
    message_3, lakers_prk_out = initiator.prepare_message_3(transfer, None)
    id_cred_i, _ = responder.parse_message_3(bytes(message_3))
    assert id_cred_i == ccs_i.id_cred_by_kid()
    assert responder.verify_message_3(ccs_i.edhoc()) == bytes(lakers_prk_out)
    initiator.process_message_4(responder.message_4())
    assert bytes(initiator.edhoc_exporter(0, [], 16)) == responder.exporter(0, b"", 16)
    assert bytes(initiator.edhoc_exporter(1, [], 8)) == responder.exporter(1, b"", 8)
    # Labels 0..23 with a context; lakers-python 0.6 writes a label of 24 or more as
    # one byte, not as the CBOR uint RFC 9528 §4.1.2 asks for, so those are not compared.
    for label in (2, 23):
        ours = responder.exporter(label, b"\1\2", 40)
        assert bytes(initiator.edhoc_exporter(label, [1, 2], 40)) == ours


@pytest.mark.parametrize("run", range(RUNS))
def test_keybound_initiator_with_lakers_responder(run: int) -> None:
    d_i, ccs_i = _party(b"\x2b")
    d_r, ccs_r = _party(bytes([run % 24]))
    initiator = Initiator(AuthKey(SUITE_2, ccs_i.edhoc(), d_i), method=3, c_i=b"\x37")
    responder = lakers.EdhocResponder(d_r, ccs_r.encoded)
    c_i, _ = responder.process_message_1(initiator.message_1())
    assert bytes(c_i) == b"\x37"
    message_2 = responder.prepare_message_2(lakers.CredentialTransfer.ByReference, b"\x27", None)
    c_r, id_cred_r, _ = initiator.parse_message_2(bytes(message_2))
    assert (c_r, id_cred_r) == (b"\x27", ccs_r.id_cred_by_kid())
    initiator.verify_message_2(ccs_r.edhoc())
    message_3 = initiator.message_3()
    id_cred_i, _ = responder.parse_message_3(message_3)
    assert bytes(id_cred_i) == ccs_i.id_cred_by_kid()
    assert bytes(responder.verify_message_3(ccs_i.encoded)) == initiator.prk_out
    initiator.process_message_4(bytes(responder.prepare_message_4(None)))
    assert initiator.oscore() == (
        bytes(responder.edhoc_exporter(0, [], 16)),
        bytes(responder.edhoc_exporter(1, [], 8)),
    )


def test_credential_by_value_and_ead_reach_lakers() -> None:
    """ID_CRED_I by value ({14: CCS}) and a non-critical EAD_3 item, as lakers reads them."""
    d_i, ccs_i = _party(b"\x2b")
    d_r, ccs_r = _party(b"\x32")
    initiator = Initiator(AuthKey(SUITE_2, ccs_i.edhoc(by_value=True), d_i), method=3, c_i=b"\x01")
    responder = lakers.EdhocResponder(d_r, ccs_r.encoded)
    responder.process_message_1(initiator.message_1())
    message_2 = responder.prepare_message_2(lakers.CredentialTransfer.ByReference, b"\x02", None)
    initiator.parse_message_2(bytes(message_2))
    initiator.verify_message_2(ccs_r.edhoc())
    message_3 = initiator.message_3([EadItem(5, b"hello")])
    id_cred_i, ead_3 = responder.parse_message_3(message_3)
    assert bytes(id_cred_i) == ccs_i.id_cred_by_value()
    assert [(e.label(), bytes(e.value())) for e in ead_3] == [(5, b"hello")]
    assert bytes(responder.verify_message_3(ccs_i.encoded)) == initiator.prk_out


def test_lakers_message_3_with_another_key_is_refused() -> None:
    """lakers as an Initiator whose key is not the credential given: MAC_3 refused."""
    _d_i, ccs_i = _party(b"\x2b")
    d_r, ccs_r = _party(b"\x32")
    initiator = lakers.EdhocInitiator()
    responder = Responder(AuthKey(SUITE_2, ccs_r.edhoc(), d_r))
    responder.process_message_1(initiator.prepare_message_1(b"\x37", None))
    initiator.parse_message_2(responder.message_2(b"\x27"))
    initiator.verify_message_2(os.urandom(32), ccs_i.encoded, ccs_r.encoded)
    message_3, _ = initiator.prepare_message_3(lakers.CredentialTransfer.ByReference, None)
    responder.parse_message_3(bytes(message_3))
    with pytest.raises(EdhocError, match="MAC_3"):
        responder.verify_message_3(ccs_i.edhoc())
