"""The AS side of the EDHOC and OSCORE profile (draft-ietf-ace-edhoc-oscore-profile-11 §3)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from keybound.coap.authz_service import AuthzService
from keybound.core import cbor, cwt
from keybound.core.authz_server import parse_cbor_token_request
from keybound.core.errors import InvalidRequest, UnsupportedPopKey
from keybound.core.numbers.cose_headers import CoseTag
from keybound.core.numbers.edhoc_profile import CLAIM_EDHOC_INFO, CNF_KCCS, PARAM_EDHOC_INFO
from keybound.core.token import CnfKccs
from keybound.tools.authz_server.provision import as_config
from tests.helpers.edhoc import EDHOC, OSCORE, provision_edhoc

NOW = 1_700_000_000


def _issue(s: dict[str, Any], payload: dict[int, object], client: str = "dev") -> Any:
    request = parse_cbor_token_request(cbor.dumps(payload), client)
    return AuthzService(s["store"], as_config(s["store"])).issue_token(
        request, now=NOW, random_bytes=os.urandom
    )


def _setup() -> dict[str, Any]:
    return provision_edhoc()


def test_token_binds_the_registered_credential_by_value_and_is_signed_only() -> None:
    s = _setup()
    dev, rs = s["dev"], s["rs"]
    request = {5: "temp", 38: EDHOC, 4: {CNF_KCCS: cbor.loads(dev.ccs.encoded)}}
    response = _issue(s, request)
    body = response.to_cbor_map()
    # access_token, expires_in, ace_profile, rs_cnf, edhoc_info; no cnf (draft §3.3)
    assert set(body) == {1, 2, 38, 41, PARAM_EDHOC_INFO}
    assert body[38] == EDHOC
    assert body[41] == {CNF_KCCS: cbor.loads(rs.ccs.encoded)}
    session = body[PARAM_EDHOC_INFO]
    assert set(session) == {0}
    assert len(session[0]) == 8
    opened = cwt.open_layers(body[1], [as_config(s["store"]).public_key])
    assert [layer.kind for layer in opened.layers] == [CoseTag.SIGN1]  # no secret: not encrypted
    token = cwt.decode(body[1], [as_config(s["store"]).public_key]).token
    assert token.cnf == CnfKccs(dev.ccs.encoded)
    assert token.ace_profile == EDHOC
    assert token.extra[CLAIM_EDHOC_INFO] == session
    assert response.record.cnf_id == dev.ccs.fingerprint
    s["store"].close()


def test_credential_by_kid_and_without_req_cnf_bind_the_registered_one() -> None:
    s = _setup()
    for request in (
        {5: "temp", 38: EDHOC, 4: {3: s["dev"].ccs.kid}},
        {5: "temp", 38: EDHOC},
    ):
        response = _issue(s, request)
        assert response.token.cnf == CnfKccs(s["dev"].ccs.encoded)
    s["store"].close()


def test_a_credential_the_client_is_not_registered_with_is_declined() -> None:
    s = _setup()
    stranger = s["rs"].ccs  # a valid credential, but not the client's
    with pytest.raises(InvalidRequest, match="not registered with"):
        _issue(s, {5: "temp", 38: EDHOC, 4: {CNF_KCCS: cbor.loads(stranger.encoded)}})
    with pytest.raises(InvalidRequest, match="not registered with"):
        _issue(s, {5: "temp", 38: EDHOC, 4: {3: b"\x99"}})
    with pytest.raises(InvalidRequest, match="no registered EDHOC credential"):
        _issue(s, {5: "temp", 38: EDHOC}, client="other")
    s["store"].close()


def test_a_naked_cose_key_is_unsupported_in_the_edhoc_profile() -> None:
    s = _setup()
    naked = s["dev"].key.public_key().to_cose_key()
    with pytest.raises(UnsupportedPopKey, match="naked COSE_Key"):
        _issue(s, {5: "temp", 38: EDHOC, 4: {1: naked}})
    s["store"].close()


def test_oscore_profile_unchanged_and_refuses_a_credential() -> None:
    s = _setup()
    response = _issue(s, {5: "temp", 38: OSCORE})
    assert set(response.to_cbor_map()) == {1, 2, 8, 38}
    with pytest.raises(UnsupportedPopKey, match="only the EDHOC profile"):
        _issue(s, {5: "temp", 38: OSCORE, 4: {CNF_KCCS: cbor.loads(s["dev"].ccs.encoded)}})
    with pytest.raises(UnsupportedPopKey, match="only the EDHOC profile"):
        _issue(s, {5: "temp", 38: OSCORE, 4: {3: s["dev"].ccs.kid}})
    s["store"].close()


def test_the_rs_first_profile_is_the_default() -> None:
    s = _setup()
    response = _issue(s, {5: "temp"})
    assert response.ace_profile == EDHOC  # temp-rs lists EDHOC first
    s["store"].close()
