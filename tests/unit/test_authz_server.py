"""The AS logic without any network (RFC 9200 §5.8, §5.9; RFC 7662)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest

from keybound.coap.authz_service import AuthzService, KeyRing
from keybound.core import cwt, jwt
from keybound.core.authz_profiles import (
    AS_PROFILES,
    EdhocAsProfile,
    OscoreAsProfile,
    PopRequest,
    as_profile,
)
from keybound.core.authz_server import (
    AuthzServerConfig,
    TokenRequest,
    authorize,
    mint_token,
    parse_cbor_token_request,
    parse_form_token_request,
    record_cti,
    sequence_cti,
)
from keybound.core.authz_store import Client, RsRecord, TokenKey
from keybound.core.errors import (
    AccessDenied,
    DecodeError,
    IncompatibleAceProfiles,
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    PayloadTooLarge,
    UnsupportedGrantType,
    UnsupportedPopKey,
)
from keybound.core.keys import Key
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.token import CnfEncryptedKey, CnfKey, CnfOsc
from keybound.tools.authz_server.provision import as_config, rotate_token_key
from tests.helpers.authz import provision

NOW = 1_700_000_000


def counter_bytes() -> Any:
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


@pytest.fixture
def setup() -> Iterator[dict[str, Any]]:
    s = provision("sqlite://")
    s["config"] = as_config(s["store"])
    yield s
    s["store"].close()


def issue(s: dict[str, Any], **kw: Any) -> Any:
    request = TokenRequest(client_id=kw.pop("client_id", "sensor-1"), **kw)
    return AuthzService(s["store"], s["config"]).issue_token(
        request, now=NOW, random_bytes=counter_bytes()
    )


def test_oscore_profile_token_is_nested_and_recorded(setup: dict[str, Any]) -> None:
    response = issue(setup, audience="temp")
    assert response.ace_profile == 2
    assert response.expires_in == 3600
    assert str(response.scope) == "read"
    assert not response.scope_changed
    body = response.to_cbor_map()
    assert set(body) == {1, 2, 8, 38}
    assert 4 in body[8]
    keys = [Key.from_jwk(setup["temp_bundle"]["token_key"])]
    with pytest.raises(Exception, match="public key"):
        cwt.decode(body[1], keys)  # nested: the inner Sign1 needs the AS key as well
    token = cwt.decode(body[1], [*keys, setup["config"].public_key]).token
    assert token.exp == NOW + 3600
    assert isinstance(token.cnf, CnfOsc)
    assert setup["store"].get_token(token.cti).client_id == "sensor-1"


def test_not_nested_when_configured(setup: dict[str, Any]) -> None:
    setup["config"] = AuthzServerConfig(
        issuer=setup["config"].issuer, signing_key=setup["config"].signing_key, nested=False
    )
    body = issue(setup, audience="temp").to_cbor_map()
    decoded = cwt.decode(body[1], Key.from_jwk(setup["temp_bundle"]["token_key"]))
    assert len(decoded.layers) == 1


def test_sequence_numbers_for_rs_without_clock(setup: dict[str, Any]) -> None:
    ctis = [issue(setup, audience="door").token.cti for _ in range(3)]
    assert ctis == [b"\x01", b"\x02", b"\x03"]
    token = issue(setup, audience="door").token
    assert token.exi == 3600
    assert token.exp is None
    assert setup["store"].get_token(record_cti("door", token.cti, sequenced=True)) is not None


def test_sequence_cti_encoding_is_what_the_rs_reads() -> None:
    from keybound.core.resource_server import decode_exi_sequence

    assert sequence_cti(0) == b"\x00"
    assert sequence_cti(255) == b"\x18\xff"
    assert sequence_cti(500) == b"\x19\x01\xf4"
    for number in (0, 23, 24, 255, 256, 65535, 65536, 2**32, 2**64 - 1):
        assert decode_exi_sequence(sequence_cti(number)) == number


def test_public_key_gets_sign1(setup: dict[str, Any]) -> None:
    mine = Key.generate_ec2().public_key()
    response = issue(setup, audience="temp", req_cnf=mine)
    decoded = cwt.decode(response.access_token, setup["config"].public_key)
    assert isinstance(decoded.token.cnf, CnfKey)
    assert decoded.token.cnf.key.equals_public(mine)
    assert 8 not in response.to_cbor_map()


def test_jwt_symmetric_key_sealed_for_rs(setup: dict[str, Any]) -> None:
    request = parse_form_token_request({"aud": "temp"}, "web-1")
    response = AuthzService(setup["store"], setup["config"]).issue_token(
        request, now=NOW, random_bytes=counter_bytes()
    )
    token = jwt.decode(response.access_token, setup["config"].public_key).token
    assert isinstance(token.cnf, CnfEncryptedKey)
    assert token.cnf.jwe is not None
    opened = jwt.open_key(token.cnf.jwe, Key.from_jwk(setup["temp_bundle"]["token_key"]))
    assert opened.secret == Key.from_jwk(response.to_json()["key"]).secret


def test_jwt_names_its_client_in_sub_and_client_id(setup: dict[str, Any]) -> None:
    """RFC 9068 §2.2: ``client_id``, and for client credentials ``sub``, name the client."""
    request = parse_form_token_request({"aud": "temp"}, "web-1")
    response = AuthzService(setup["store"], setup["config"]).issue_token(
        request, now=NOW, random_bytes=counter_bytes()
    )
    claims = jwt.decode(response.access_token, setup["config"].public_key).token.to_jwt_claims()
    assert claims["sub"] == "web-1"
    assert claims["client_id"] == "web-1"
    introspected = (
        AuthzService(setup["store"], setup["config"])
        .introspect(response.access_token, now=NOW)
        .to_json()
    )
    assert (introspected["sub"], introspected["client_id"]) == ("web-1", "web-1")


def test_cwt_stays_without_sub(setup: dict[str, Any]) -> None:
    token = issue(setup, audience="temp").token
    assert token.sub is None
    assert not token.extra


def test_generated_pair_only_when_allowed(setup: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedPopKey):
        issue(setup, client_id="web-1", audience="temp", pop_key="generated-pair",
              token_format="jwt")  # fmt: skip
    config = setup["config"]
    setup["config"] = AuthzServerConfig(
        issuer=config.issuer, signing_key=config.signing_key, allow_generated_key_pairs=True
    )
    response = issue(setup, client_id="web-1", audience="temp", pop_key="generated-pair",
                     token_format="jwt")  # fmt: skip
    assert "d" in response.to_json()["key"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"client_id": "ghost", "audience": "temp"}, InvalidClient),
        ({"audience": "temp", "grant_type": "password"}, UnsupportedGrantType),
        ({"audience": "temp", "grant_type": 1}, UnsupportedGrantType),
        ({"audience": "nowhere"}, AccessDenied),
        ({}, InvalidRequest),
        ({"audience": "temp", "scope": "write"}, InvalidScope),
        ({"audience": "temp", "ace_profile": 1}, IncompatibleAceProfiles),
    ],
)
def test_refusals(setup: dict[str, Any], kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        issue(setup, **kwargs)


def test_scope_intersection(setup: dict[str, Any]) -> None:
    response = issue(setup, client_id="web-1", audience="temp", scope="read admin",
                     token_format="jwt")  # fmt: skip
    assert str(response.scope) == "read"
    assert response.scope_changed


def test_cbor_request_parsing() -> None:
    request = parse_cbor_token_request(cbor2.dumps({5: "temp", 9: "read", 33: 2}), "c")
    assert request.audience == "temp"
    assert request.grant_type == 2
    with pytest.raises(DecodeError):
        parse_cbor_token_request(b"\xa1", "c")
    with pytest.raises(DecodeError):
        parse_cbor_token_request(cbor2.dumps([1]), "c")
    with pytest.raises(PayloadTooLarge):
        parse_cbor_token_request(cbor2.dumps({5: "x" * 5000}), "c")
    with pytest.raises(UnsupportedPopKey):
        parse_cbor_token_request(cbor2.dumps({4: {5: b"t" * 32}}), "c")
    # a kid names an EDHOC credential by reference; only that profile takes it (test_edhoc_as)
    assert parse_cbor_token_request(cbor2.dumps({4: {3: b"kid"}}), "c").req_credential_kid == b"kid"
    with pytest.raises(InvalidClient):
        parse_cbor_token_request(cbor2.dumps({24: "someone-else"}), "c")


def test_introspection(setup: dict[str, Any]) -> None:
    response = issue(setup, audience="temp")
    store, config = setup["store"], setup["config"]
    service = AuthzService(store, config)
    result = service.introspect(response.access_token, now=NOW)
    body = result.to_cbor_map()
    assert body[10] is True
    assert body[3] == "temp"
    assert body[24] == "sensor-1"
    assert not service.introspect(response.access_token, now=NOW, audiences=["door"]).active
    assert not service.introspect(response.access_token, now=NOW + 3600).active
    store.revoke(response.token.cti)
    assert service.introspect(response.access_token, now=NOW).to_cbor_map() == {10: False}
    assert not service.introspect(b"\x00garbage", now=NOW).active


# ---- the core on records, the key ring, the profiles ------------------------------------------


def _records(*, has_clock: bool = True) -> tuple[AuthzServerConfig, Client, RsRecord, Key]:
    """A client and an RS made by hand: no store anywhere."""
    token_key = Key.symmetric(bytes(range(16)), kid=b"tk-1", alg=Algorithm.AES_CCM_16_64_128)
    rs = RsRecord(
        name="temp-rs",
        audience="temp",
        scopes=("read",),
        token_keys=(
            TokenKey(
                version=1,
                kid=b"tk-1",
                key=token_key.to_cose_key_bytes(include_private=True),
                created=NOW,
            ),
        ),
        has_clock=has_clock,
        profiles=(2,),
        default_lifetime=600,
        introspection_context=None,
        created=NOW,
    )
    client = Client(
        client_id="sensor-1",
        has_secret=False,
        oscore=None,
        public_key=None,
        grants={"temp": ("read",)},
        created=NOW,
    )
    config = AuthzServerConfig(issuer="coap://as.example", signing_key=Key.generate_ec2())
    return config, client, rs, token_key


def test_core_issues_from_records_without_a_store() -> None:
    config, client, rs, token_key = _records()
    request = TokenRequest(client_id="sensor-1", audience="temp")
    grant = authorize(config, request, client=client, rs=rs)
    assert not grant.needs_sequence
    response = mint_token(config, grant, token_key=token_key, now=NOW, random_bytes=counter_bytes())
    decoded = cwt.decode(response.access_token, [token_key, config.public_key]).token
    assert isinstance(decoded.cnf, CnfOsc)
    assert decoded.exp == NOW + 600
    record = response.record  # what the caller records
    assert (record.cti, record.audience, record.client_id) == (decoded.cti, "temp", "sensor-1")
    assert record.cnf_id == decoded.cnf.material.id
    with pytest.raises(ValueError, match="sequence"):
        mint_token(config, grant, token_key=token_key, now=NOW, random_bytes=counter_bytes(),
                   sequence=1)  # fmt: skip


def test_core_takes_the_sequence_number_of_an_rs_without_a_clock() -> None:
    config, client, rs, token_key = _records(has_clock=False)
    grant = authorize(config, TokenRequest(client_id="sensor-1", audience="temp"),
                      client=client, rs=rs)  # fmt: skip
    assert grant.needs_sequence
    response = mint_token(config, grant, token_key=token_key, now=NOW,
                          random_bytes=counter_bytes(), sequence=300)  # fmt: skip
    assert response.token.cti == sequence_cti(300)
    assert response.record.cti == b"temp#300"
    assert (response.record.sequence, response.record.exi) == (300, 600)
    with pytest.raises(ValueError, match="sequence"):
        mint_token(config, grant, token_key=token_key, now=NOW, random_bytes=counter_bytes())


@pytest.mark.parametrize(
    ("client_known", "rs_known", "audience", "error"),
    [
        (False, True, "temp", InvalidClient),
        (True, True, None, InvalidRequest),
        (True, False, "temp", AccessDenied),
        (True, True, "other", AccessDenied),  # a record for another audience
    ],
)
def test_core_refuses_missing_records(
    client_known: bool, rs_known: bool, audience: str | None, error: type[Exception]
) -> None:
    config, client, rs, _ = _records()
    request = TokenRequest(client_id="sensor-1", audience=audience)
    with pytest.raises(error):
        authorize(config, request, client=client if client_known else None,
                  rs=rs if rs_known else None)  # fmt: skip


def test_key_ring_parses_an_rs_key_once_and_again_after_rotation(setup: dict[str, Any]) -> None:
    store = setup["store"]
    ring = KeyRing()
    first = ring.token_keys(store.get_resource_server("temp-rs"))
    # a fresh read of the same record: the parsed keys are the same objects
    assert ring.token_keys(store.get_resource_server("temp-rs")) is first
    assert ring.current(store.get_resource_server("temp-rs")) is first[0]
    rotate_token_key(store, "temp-rs")
    rotated = store.get_resource_server("temp-rs")
    again = ring.token_keys(rotated)
    assert again is not first
    assert [key.kid for key in again] == [version.kid for version in rotated.token_keys]
    assert again[1].secret == first[0].secret  # the previous key is kept for old tokens
    assert ring.token_keys(rotated) is again
    ring.invalidate("temp-rs")
    assert ring.token_keys(rotated) is not again


def test_key_ring_forgets_removed_resource_servers(setup: dict[str, Any]) -> None:
    store = setup["store"]
    ring = KeyRing()
    temp, door = store.get_resource_server("temp-rs"), store.get_resource_server("door-rs")
    assert len(ring.all_keys([temp, door])) == 2
    kept = ring.token_keys(temp)
    door_keys = ring.token_keys(door)
    assert ring.all_keys([temp]) == list(kept)
    assert ring.token_keys(temp) is kept
    assert ring.token_keys(door) is not door_keys


def test_introspection_after_rotation_uses_the_new_and_the_kept_key(setup: dict[str, Any]) -> None:
    service = AuthzService(setup["store"], setup["config"])
    before = service.issue_token(TokenRequest(client_id="sensor-1", audience="temp"),
                                 now=NOW, random_bytes=os.urandom)  # fmt: skip
    assert service.introspect(before.access_token, now=NOW).active
    rotate_token_key(setup["store"], "temp-rs")
    after = service.issue_token(TokenRequest(client_id="sensor-1", audience="temp"),
                                now=NOW, random_bytes=os.urandom)  # fmt: skip
    assert service.introspect(after.access_token, now=NOW).active
    assert service.introspect(before.access_token, now=NOW).active


def test_profile_registry() -> None:
    assert set(AS_PROFILES) == {int(AceProfile.COAP_OSCORE), int(AceProfile.COAP_EDHOC_OSCORE)}
    assert isinstance(as_profile(2), OscoreAsProfile)
    assert isinstance(as_profile(int(AceProfile.COAP_EDHOC_OSCORE)), EdhocAsProfile)
    assert as_profile(1) is None  # no AS-side implementation: the generic binding
    assert as_profile(99) is None
    assert as_profile(None) is None  # a JWT names no profile
    profile = OscoreAsProfile()
    mine = Key.generate_ec2().public_key()
    assert (
        profile.bind(PopRequest(client_key=mine, automatic=True, random_bytes=os.urandom)) is None
    )
    assert (
        profile.bind(PopRequest(client_key=None, automatic=False, random_bytes=os.urandom)) is None
    )
    bound = profile.bind(PopRequest(client_key=None, automatic=True, random_bytes=counter_bytes()))
    assert bound is not None
    assert bound.osc is not None
    assert bound.encrypt  # a secret cnf: the token is encrypted for the RS
    assert isinstance(bound.cnf, CnfOsc)
    assert bound.cnf_id == bound.osc.id
    assert (len(bound.osc.id), len(bound.osc.ms), bound.osc.salt is not None) == (3, 16, True)
    unsalted = profile.bind(PopRequest(client_key=None, automatic=True,
                                       random_bytes=os.urandom, oscore_salt=False))  # fmt: skip
    assert unsalted is not None
    assert unsalted.osc is not None
    assert unsalted.osc.salt is None


def test_profile_the_rs_does_not_speak_is_refused() -> None:
    config, client, rs, _ = _records()
    for number in (1, 99):
        request = TokenRequest(client_id="sensor-1", audience="temp", ace_profile=number)
        with pytest.raises(IncompatibleAceProfiles):
            authorize(config, request, client=client, rs=rs)


def test_profile_without_implementation_gets_the_generic_symmetric_key() -> None:
    config, client, rs, token_key = _records()
    dtls = RsRecord(**{**rs.__dict__, "profiles": (1,)})
    grant = authorize(config, TokenRequest(client_id="sensor-1", audience="temp"),
                      client=client, rs=dtls)  # fmt: skip
    response = mint_token(config, grant, token_key=token_key, now=NOW, random_bytes=os.urandom)
    assert response.ace_profile == 1
    assert response.osc is None
    assert response.client_key is not None
    assert response.client_key.is_symmetric
