"""keybound's EDHOC (core/edhoc.py) against RFC 9529's traces, byte for byte.

Each trace is run twice: Initiator and Responder of keybound's EDHOC given the
trace's ephemeral and static keys, each against the trace's messages (so each role
is checked alone, not only against the other); then the intermediate values the
trace publishes (Section 3: TH_3, TH_4, PRK_3e2m, PRK_4e3m, PRK_exporter, the OSCORE
Master Secret and Salt).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from keybound.core.edhoc import AuthKey, Credential, Initiator, Responder
from keybound.core.edhoc_suites import SUITES

VECTORS = json.loads(
    (Path(__file__).parent.parent / "vectors" / "rfc9529_traces.json").read_text()
)["traces"]


def _h(trace: dict[str, Any], name: str) -> bytes:
    return bytes.fromhex(trace[name])


def _credentials(trace: dict[str, Any]) -> tuple[Credential, Credential]:
    signs = trace["method"] == 0
    cred_i = Credential(_h(trace, "CRED_I"), _h(trace, "ID_CRED_I"), _h(trace, "PK_I"), signs)
    cred_r = Credential(_h(trace, "CRED_R"), _h(trace, "ID_CRED_R"), _h(trace, "PK_R"), signs)
    return cred_i, cred_r


def _public(trace: dict[str, Any], name: str) -> bytes:
    """The DH public key of the trace (x-coordinate for P-256), as a credential holds it."""
    return _h(trace, name)


@pytest.mark.parametrize("trace", VECTORS, ids=[t["section"] for t in VECTORS])
def test_initiator_reproduces_the_trace(trace: dict[str, Any]) -> None:
    suite = SUITES[trace["suite"]]
    cred_i, cred_r = _credentials(trace)
    initiator = Initiator(
        AuthKey(suite, cred_i, _h(trace, "SK_I")),
        method=trace["method"],
        c_i=_h(trace, "C_I"),
        suites=trace["SUITES_I"],
        ephemeral=_h(trace, "X"),
    )
    assert initiator.message_1() == _h(trace, "message_1"), f"{trace['section']}: message_1"
    c_r, id_cred_r, ead_2 = initiator.parse_message_2(_h(trace, "message_2"))
    assert (c_r, id_cred_r, ead_2) == (_h(trace, "C_R"), _h(trace, "ID_CRED_R"), [])
    initiator.verify_message_2(cred_r)
    assert initiator.message_3() == _h(trace, "message_3"), f"{trace['section']}: message_3"
    assert initiator.process_message_4(_h(trace, "message_4")) == []
    assert initiator.prk_out == _h(trace, "PRK_out"), f"{trace['section']}: PRK_out"


@pytest.mark.parametrize("trace", VECTORS, ids=[t["section"] for t in VECTORS])
def test_responder_reproduces_the_trace(trace: dict[str, Any]) -> None:
    suite = SUITES[trace["suite"]]
    cred_i, cred_r = _credentials(trace)
    responder = Responder(AuthKey(suite, cred_r, _h(trace, "SK_R")), ephemeral=_h(trace, "Y"))
    method, c_i, ead_1 = responder.process_message_1(_h(trace, "message_1"))
    assert (method, c_i, ead_1) == (trace["method"], _h(trace, "C_I"), [])
    assert responder.message_2(_h(trace, "C_R")) == _h(trace, "message_2"), (
        f"{trace['section']}: message_2"
    )
    id_cred_i, ead_3 = responder.parse_message_3(_h(trace, "message_3"))
    assert (id_cred_i, ead_3) == (_h(trace, "ID_CRED_I"), [])
    assert responder.verify_message_3(cred_i) == _h(trace, "PRK_out")
    assert responder.message_4() == _h(trace, "message_4"), f"{trace['section']}: message_4"


def test_rfc9529_section_3_intermediate_values() -> None:
    trace = VECTORS[1]
    values = {k: bytes.fromhex(v) for k, v in trace["intermediate"].items()}
    cred_i, cred_r = _credentials(trace)
    responder = Responder(AuthKey(SUITES[2], cred_r, _h(trace, "SK_R")), ephemeral=_h(trace, "Y"))
    responder.process_message_1(_h(trace, "message_1"))
    responder.message_2(_h(trace, "C_R"))
    assert responder._th_3 == values["TH_3"]
    assert responder._prk_3e2m == values["PRK_3e2m"]
    responder.parse_message_3(_h(trace, "message_3"))
    responder.verify_message_3(cred_i)
    assert responder._th_4 == values["TH_4"]
    assert responder._prk_4e3m == values["PRK_4e3m"]
    assert responder._prk_exporter == values["PRK_exporter"]
    assert responder.oscore() == (values["OSCORE_Master_Secret"], values["OSCORE_Master_Salt"])
