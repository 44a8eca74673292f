"""EDHOC credentials (CCS with a COSE_Key, RFC 9528 §3.5.2) against the RFC 9529 traces."""

from __future__ import annotations

import pytest

from keybound.core import cbor
from keybound.core.edhoc_credentials import Ccs, read_id_cred_kccs
from keybound.core.errors import UnsupportedPopKey
from keybound.core.keys import Key
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.numbers.cose_keys import Curve
from keybound.core.numbers.edhoc_profile import ACE_PROFILE_COAP_EDHOC_OSCORE, CNF_KCCS
from keybound.core.token import AccessToken, CnfKccs

# RFC 9529 §3 (method 3, cipher suite 2): CRED_R, its ID_CRED_R by kid, G_R.
CRED_R = bytes.fromhex(
    "a2026b6578616d706c652e65647508a101a501020241322001215820bbc34960526ea4d32e940cad2a23"
    "4148ddc21791a12afbcbac93622046dd44f02258204519e257236b2a0ce2023f0931f1f386ca7afda64f"
    "cde0108c224c51eabf6072"
)
ID_CRED_R = bytes.fromhex("a1044132")
# RFC 9529 §3: CRED_I and ID_CRED_I.
CRED_I = bytes.fromhex(
    "a2027734322d35302d33312d46462d45462d33372d33322d333908a101a5010202412b2001215820ac75"
    "e9ece3e50bfc8ed60399889522405c47bf16df96660a41298cb4307f7eb62258206e5de611388a4b8a82"
    "11334ac7d37ecb52a387d257e6db3c2a93df21ff3affc8"
)
ID_CRED_I = bytes.fromhex("a104412b")


@pytest.mark.parametrize(
    ("encoded", "id_cred", "subject"),
    [(CRED_R, ID_CRED_R, "example.edu"), (CRED_I, ID_CRED_I, "42-50-31-FF-EF-37-32-39")],
)
def test_rfc9529_credentials_decode_and_reencode_byte_for_byte(
    encoded: bytes, id_cred: bytes, subject: str
) -> None:
    ccs = Ccs.decode(encoded)
    assert ccs.subject == subject
    assert ccs.id_cred_by_kid() == id_cred
    assert ccs.matches_id_cred(id_cred)
    # Made again from the public key alone, the credential is the trace's, byte for byte.
    again = Ccs.make(Key.from_cose_key(ccs.key.to_cose_key()), subject=subject)
    assert again.encoded == encoded
    assert again.same(ccs)


def test_id_cred_by_value_is_the_kccs_header_map() -> None:
    ccs = Ccs.decode(CRED_R)
    by_value = ccs.id_cred_by_value()
    assert cbor.loads(by_value) == {14: cbor.loads(CRED_R)}
    assert read_id_cred_kccs(by_value) == CRED_R
    assert read_id_cred_kccs(ID_CRED_R) is None
    assert ccs.matches_id_cred(by_value)
    assert not Ccs.decode(CRED_I).matches_id_cred(by_value)


def test_a_credential_keybound_cannot_use_is_refused() -> None:
    no_kid = cbor.dumps({8: {1: Key.generate_ec2().public_key().to_cose_key()}})
    with pytest.raises(UnsupportedPopKey, match="kid"):
        Ccs.decode(no_kid)
    p384 = Key.generate_ec2(Curve.P_384, kid=b"1").public_key().to_cose_key()
    with pytest.raises(UnsupportedPopKey, match="P-256"):
        Ccs.decode(cbor.dumps({8: {1: p384}}))
    private = Key.generate_ec2(kid=b"1").to_cose_key(include_private=True)
    with pytest.raises(UnsupportedPopKey, match="public"):
        Ccs.decode(cbor.dumps({8: {1: private}}))
    with pytest.raises(UnsupportedPopKey, match="at most"):
        Ccs.decode(b"\xa1\x08" + b"\x00" * 600)
    with pytest.raises(UnsupportedPopKey, match="cnf"):
        Ccs.decode(cbor.dumps({2: "no cnf"}))


def test_kccs_cnf_round_trips_in_a_cwt_claims_set() -> None:
    token = AccessToken(aud=("rs",), cnf=CnfKccs(CRED_I), ace_profile=ACE_PROFILE_COAP_EDHOC_OSCORE)
    claims = token.to_cwt_claims()
    assert claims[8] == {CNF_KCCS: cbor.loads(CRED_I)}
    back = AccessToken.from_cwt_claims(cbor.loads(cbor.dumps(claims)))
    assert back.cnf == CnfKccs(CRED_I)
    assert AceProfile(ACE_PROFILE_COAP_EDHOC_OSCORE).text == "coap_edhoc_oscore"
