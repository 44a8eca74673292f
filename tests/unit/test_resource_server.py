"""The sans-IO Resource Server: verification order, exi sequence numbers, store, scopes."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator
from typing import Any

import pytest

from keybound.core import cbor, cwt, trl
from keybound.core.authz_info import AuthzInfoResponse
from keybound.core.edhoc_profile import EDHOC_PROFILE
from keybound.core.errors import (
    BadSignature,
    CapacityExceeded,
    ExpiredToken,
    IncompatibleAceProfiles,
    InsufficientScope,
    InvalidAudience,
    InvalidClaim,
    InvalidIssuer,
    InvalidRequest,
    InvalidScope,
    InvalidToken,
    MalformedClaim,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedPopKey,
)
from keybound.core.exi import decode_exi_sequence, encode_exi_sequence
from keybound.core.oscore_derivation import derive_context_parameters, derive_keys
from keybound.core.oscore_profile import OSCORE_PROFILE
from keybound.core.profiles import DEFAULT_PROFILE, PROFILES, derived_context, select_profile
from keybound.core.resource_server import (
    AuthzInfoOutcome,
    Introspect,
    Removal,
    ResourceServer,
    RsPolicy,
    authorize,
    persisted,
)
from keybound.core.scope import AifScope, ResourceScopes, RestMethod, TextScope
from keybound.core.token import AccessToken, CnfKid
from keybound.core.token_store import PersistedContext, pop_key_id
from tests.helpers.rs import AS_URI, AUDIENCE, ISSUER, RESOURCES, Keys, material, mint, mint_claims

NOW = 1_700_000_000


def make_rs(keys: Keys, **changes: Any) -> ResourceServer:
    policy: dict[str, Any] = {
        "audience": AUDIENCE,
        "as_uri": AS_URI,
        "token_keys": (keys.token_key,),
        "as_public_keys": (keys.as_key.public_key(),),
        "issuer": ISSUER,
        "resources": ResourceScopes.from_dict(RESOURCES),
    }
    policy.update(changes)
    return ResourceServer(RsPolicy(**policy))


def post(rs: ResourceServer, token: bytes, *, id1: bytes = b"\x42", mono: float = 0.0) -> Any:
    return rs.post(
        token, nonce1=os.urandom(8), client_id=id1, nonce2=os.urandom(8), now=NOW, monotonic=mono
    )


# ---- exi sequence numbers (RFC 9200 §5.10.3) -------------------------------------------------


@pytest.mark.parametrize(
    ("number", "cti"),
    [(0, "00"), (23, "17"), (24, "1818"), (500, "1901f4"), (2**32, "1b0000000100000000")],
)
def test_exi_sequence_encoding(number: int, cti: str) -> None:
    assert encode_exi_sequence(number).hex() == cti
    assert decode_exi_sequence(bytes.fromhex(cti)) == number


@pytest.mark.parametrize("cti", ["1800", "20", "40", "f5", "", "0000", "1901"])
def test_exi_sequence_refuses_other_encodings(cti: str) -> None:
    with pytest.raises(InvalidClaim):
        decode_exi_sequence(bytes.fromhex(cti))


# ---- the pipeline ------------------------------------------------------------------------------


def test_valid_token_is_verified() -> None:
    keys = Keys()
    rs = make_rs(keys)
    verified = rs.verify(mint(keys, material(), now=NOW), now=NOW, monotonic=0)
    assert verified.expires_at == NOW + 300
    assert not verified.signed
    assert "ms" not in verified.describe()


def test_nested_signature_is_checked() -> None:
    keys = Keys()
    rs = make_rs(keys, require_signature=True)
    assert rs.verify(mint(keys, material(), now=NOW, nested=True), now=NOW, monotonic=0).signed
    with pytest.raises(InvalidToken, match="signed"):
        rs.verify(mint(keys, material(), now=NOW), now=NOW, monotonic=0)
    forged = Keys(token_key=keys.token_key)  # right encryption key, wrong signer
    with pytest.raises(InvalidToken):
        rs.verify(mint(forged, material(), now=NOW, nested=True), now=NOW, monotonic=0)


@pytest.mark.parametrize(
    ("changes", "error", "ace_code"),
    [
        ({9: 42}, InvalidScope, 6),  # scope of a wrong type
        ({9: b"\xff\x00"}, InvalidScope, 6),  # a byte-string scope that is not CBOR AIF
        ({9: [["/temp", "GET"]]}, InvalidScope, 6),  # AIF permissions not a uint
        ({4: "soon"}, MalformedClaim, 1),  # exp of a wrong type
        ({4: 1e300}, MalformedClaim, 1),  # exp beyond the bound of every time claim
        ({4: float("nan")}, MalformedClaim, 1),
        ({40: 2**64 - 1}, MalformedClaim, 1),  # exi beyond the same bound
        ({3: 17}, MalformedClaim, 1),  # aud of a wrong type
        ({8: {4: {0: b"\x01", 2: os.urandom(16), 99: 1}}}, InvalidRequest, 1),  # unknown osc
        ({8: {4: {0: b"\x01"}}}, InvalidRequest, 1),  # osc without ms
        ({8: {4: {0: b"\x01", 2: os.urandom(16), 4: 9999}}}, UnsupportedPopKey, 7),
    ],
)
def test_malformed_claims_of_an_authentic_token_are_bad_requests(
    changes: dict[int, Any], error: type[Exception], ace_code: int
) -> None:
    """RFC 9200 §5.10.1.1, RFC 9203 §4.2: wrapper valid, claims malformed -> 4.00."""
    keys = Keys()
    rs = make_rs(keys)
    with pytest.raises(error) as info:
        post(rs, mint_claims(keys, material(), changes))
    assert type(info.value) is error
    assert not isinstance(info.value, InvalidToken)
    assert info.value.coap_code == (4, 0)
    assert info.value.to_cbor_map()[30] == ace_code
    assert len(rs.store) == 0


def test_invalid_wrapper_issuer_and_lifetime_stay_unauthorized() -> None:
    """RFC 9200 §5.10.1.1: 4.01 for a failed wrapper, an untrusted issuer, a dead token."""
    keys = Keys()
    rs = make_rs(keys)
    other = Keys()
    cases = [
        (mint_claims(other, material(), {}), BadSignature),  # another AS-RS key
        (mint(keys, material(), iss="as.evil", now=NOW), InvalidIssuer),
        (mint(keys, material(), now=NOW - 1000, lifetime=60), ExpiredToken),
    ]
    for token, error in cases:
        with pytest.raises(error) as info:
            rs.verify(token, now=NOW, monotonic=0)
        assert info.value.coap_code == (4, 1)


@pytest.mark.parametrize("crit", [[1], [-70000]])
def test_crit_in_unprotected_header_is_invalid(crit: list[int]) -> None:
    """RFC 9052 §3.1: crit belongs to the protected bucket; elsewhere the token is invalid."""
    keys = Keys()
    rs = make_rs(keys)
    message = cbor.loads(mint(keys, material(), now=NOW))
    message.value[1][2] = crit  # the unprotected bucket is not authenticated: anyone can add it
    with pytest.raises(InvalidToken, match="crit must be in the protected header") as info:
        rs.verify(cbor.dumps(message), now=NOW, monotonic=0)
    assert info.value.coap_code == (4, 1)


def test_unencrypted_token_is_refused() -> None:
    keys = Keys()
    rs = make_rs(keys)
    token = AccessToken(iss=ISSUER, aud=(AUDIENCE,), exp=NOW + 60, scope=None)
    signed = cwt.encode(token, cwt.Sign1(keys.as_key))
    with pytest.raises(InvalidToken, match="encrypted"):
        rs.verify(signed, now=NOW, monotonic=0)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"aud": "rs2"}, InvalidAudience),
        ({"iss": "evil"}, InvalidIssuer),
        ({"now": NOW - 1000, "lifetime": 60}, ExpiredToken),
        ({"lifetime": None}, InvalidToken),
        ({"scope": "other.scope"}, InvalidScope),
        ({"scope": AifScope.of([("/nothing", 1)])}, InvalidScope),
        ({"ace_profile": 1}, IncompatibleAceProfiles),
    ],
)
def test_pipeline_failures(changes: dict[str, Any], error: type[Exception]) -> None:
    keys = Keys()
    rs = make_rs(keys)
    changes.setdefault("now", NOW)
    with pytest.raises(error):
        rs.verify(mint(keys, material(), **changes), now=NOW, monotonic=0)


def test_order_expiry_before_audience() -> None:
    keys = Keys()
    rs = make_rs(keys)
    token = mint(keys, material(), aud="rs2", now=NOW - 1000, lifetime=60)
    with pytest.raises(ExpiredToken):
        rs.verify(token, now=NOW, monotonic=0)


def test_cnf_other_than_osc_is_unsupported() -> None:
    keys = Keys()
    rs = make_rs(keys)
    token = AccessToken(
        iss=ISSUER,
        aud=(AUDIENCE,),
        exp=NOW + 60,
        scope=TextScope.of(["temp.read"]),
        cnf=CnfKid(b"k"),
    )
    with pytest.raises(IncompatibleAceProfiles):
        rs.verify(
            cwt.encode(token, cwt.Encrypt0(keys.token_key), random_bytes=os.urandom),
            now=NOW,
            monotonic=0,
        )


def test_tampered_and_truncated_tokens_are_invalid() -> None:
    keys = Keys()
    rs = make_rs(keys)
    token = bytearray(mint(keys, material(), now=NOW))
    token[-2] ^= 0xFF
    with pytest.raises(InvalidToken):
        rs.verify(bytes(token), now=NOW, monotonic=0)
    with pytest.raises(InvalidToken):
        rs.verify(bytes(token[:20]), now=NOW, monotonic=0)
    with pytest.raises(PayloadTooLarge):
        rs.verify(b"\x40" * 2000, now=NOW, monotonic=0)


def test_no_clock_uses_exi_from_receipt() -> None:
    keys = Keys()
    rs = make_rs(keys, has_clock=False)
    with pytest.raises(InvalidToken, match="exi"):
        rs.verify(mint(keys, material(), now=NOW), now=None, monotonic=0)
    token = mint(keys, material(), lifetime=None, exi=30, cti=encode_exi_sequence(1))
    stored = post(rs, token, mono=100.0).stored
    assert stored.verified.expires_monotonic == 130.0
    assert rs.expire(now=None, monotonic=129.9).removed == ()
    assert rs.expire(now=None, monotonic=130.0).removed == (stored,)
    with pytest.raises(InvalidClaim):  # exi without a sequence number
        rs.verify(mint(keys, material(), lifetime=None, exi=30), now=None, monotonic=0)


def test_exi_sequence_high_water_mark() -> None:
    keys = Keys()
    rs = make_rs(keys, has_clock=False)

    def token(seq: int, mat: Any) -> bytes:
        return mint(keys, mat, lifetime=None, exi=60, cti=encode_exi_sequence(seq))

    first = material(b"\x01")
    result = post(rs, token(7, first), mono=10)
    assert rs.exi_sequence_mark == 7
    with pytest.raises(InvalidToken, match="not above"):
        post(rs, token(7, material(b"\x02")))
    with pytest.raises(InvalidToken, match="not above"):
        post(rs, token(3, material(b"\x03")))
    # a re-post of the stored token is fine and keeps its first receipt time
    again = post(rs, result.stored.verified.raw, mono=50)
    assert again.stored.verified.expires_monotonic == 70
    post(rs, token(8, material(b"\x04")))
    assert rs.exi_sequence_mark == 8
    restarted = make_rs(keys, has_clock=False)
    restarted.exi_sequence_mark = 8
    with pytest.raises(InvalidToken):
        post(restarted, result.stored.verified.raw)


# ---- the store ---------------------------------------------------------------------------------


def test_one_token_per_pop_key() -> None:
    keys = Keys()
    rs = make_rs(keys)
    mat = material()
    first = post(rs, mint(keys, mat, now=NOW)).stored
    second = post(rs, mint(keys, mat, now=NOW, scope="temp.read led.read"), id1=b"\x43")
    assert second.superseded is first
    assert len(rs.store) == 1
    assert rs.store.get(pop_key_id(mat)) is second.stored


def test_stored_token_is_refused_at_exactly_its_exp() -> None:
    """RFC 8392 §3.1.4: a stored token used at ``exp`` is expired at request time too."""
    keys = Keys()
    rs = make_rs(keys)
    stored = post(rs, mint(keys, material(), now=NOW, lifetime=300)).stored
    recipient_id, id_context = stored.lookup
    assert rs.find(recipient_id, id_context, now=NOW + 299, monotonic=0) is stored
    with pytest.raises(ExpiredToken):
        rs.find(recipient_id, id_context, now=NOW + 300, monotonic=0)
    assert [e.key_id for e in rs.expire(now=NOW + 300, monotonic=0).removed] == [stored.key_id]


def test_stored_tokens_are_found_by_their_rfc_9770_hash() -> None:
    """The store's hash index: a TRL update finds exactly the tokens it lists, and a
    superseded or removed token is no longer found."""
    keys = Keys()
    rs = make_rs(keys)
    key = material(b"\x01")
    first = mint(keys, key, now=NOW)
    second = mint(keys, material(b"\x02"), now=NOW)
    a, b = post(rs, first).stored, post(rs, second).stored
    h1, h2 = trl.response_token_hash(first), trl.response_token_hash(second)
    unknown = trl.response_token_hash(b"never stored")
    assert rs.store.key_ids_of([h2, unknown, h1]) == [b.key_id, a.key_id]
    again = mint(keys, key, now=NOW + 1)  # same PoP key: supersedes ``first``
    post(rs, again)
    assert rs.store.key_ids_of([h1]) == []
    assert rs.store.key_ids_of([trl.response_token_hash(again)]) == [a.key_id]
    rs.forget(b.key_id)
    assert rs.store.key_ids_of([h2]) == []


def test_capacity_evicts_expired_then_refuses() -> None:
    keys = Keys()
    rs = make_rs(keys, capacity=2)
    short = post(rs, mint(keys, material(b"\x01"), now=NOW, lifetime=10)).stored
    post(rs, mint(keys, material(b"\x02"), now=NOW + 5))
    with pytest.raises(CapacityExceeded) as info:
        post(rs, mint(keys, material(b"\x03"), now=NOW))
    assert info.value.coap_code == (5, 3)
    later = rs.post(
        mint(keys, material(b"\x03"), now=NOW + 20),
        nonce1=os.urandom(8),
        client_id=b"\x01",
        nonce2=os.urandom(8),
        now=NOW + 20,
        monotonic=0,
    )
    assert later.evicted == (short,)


def test_server_ids_are_unique_and_differ_from_id1() -> None:
    keys = Keys()
    rs = make_rs(keys)
    ids = set()
    for n in range(20):
        stored = post(rs, mint(keys, material(bytes([n])), now=NOW), id1=b"\x00").stored
        assert stored.context.server_id != b"\x00"
        ids.add(stored.context.server_id)
    assert len(ids) == 20


def test_equal_ids_are_refused_by_derivation() -> None:
    with pytest.raises(InvalidRequest):
        derive_context_parameters(material(), os.urandom(8), os.urandom(8), b"\x01", b"\x01")


def test_rs_and_client_contexts_match() -> None:
    keys = Keys()
    rs = make_rs(keys)
    mat = material()
    stored = post(rs, mint(keys, mat, now=NOW)).stored
    rs_keys = derive_keys(derived_context(stored))
    client = derive_context_parameters(
        mat,
        stored.context.nonce1,
        stored.context.nonce2,
        stored.context.client_id,
        stored.context.server_id,
        role="client",
    )
    client_keys = derive_keys(client)
    assert rs_keys.sender_key == client_keys.recipient_key
    assert rs_keys.recipient_key == client_keys.sender_key


def test_update_requires_same_key() -> None:
    keys = Keys()
    rs = make_rs(keys)
    mat = material()
    stored = post(rs, mint(keys, mat, now=NOW)).stored
    updated = rs.update(
        mint(keys, mat, now=NOW, scope="led.write"), current=stored, now=NOW, monotonic=0
    ).stored
    assert updated.context == stored.context
    rs.authorize(updated, "PUT", "/led")
    with pytest.raises(InvalidRequest):
        rs.update(mint(keys, material(b"\x07"), now=NOW), current=updated, now=NOW, monotonic=0)


def test_restore_drops_exi_tokens() -> None:
    keys = Keys()
    rs = make_rs(keys)
    mat = material()
    stored = post(rs, mint(keys, mat, now=NOW)).stored
    record = PersistedContext(
        key_id=stored.key_id,
        token=stored.verified.raw,
        nonce1=stored.context.nonce1,
        nonce2=stored.context.nonce2,
        client_id=stored.context.client_id,
        server_id=stored.context.server_id,
        received_at=NOW,
    )
    fresh = make_rs(keys)
    assert fresh.restore(record, now=NOW + 1, monotonic=0).context == stored.context
    exi_token = mint(keys, material(b"\x05"), exi=60, cti=encode_exi_sequence(1), now=NOW)
    with pytest.raises(ExpiredToken):
        make_rs(keys).restore(
            PersistedContext(b"k", exi_token, os.urandom(8), os.urandom(8), b"\x01", b"\x02", NOW),
            now=NOW,
            monotonic=0,
        )


# ---- access decisions and hints ---------------------------------------------------------------


def test_authorize_text_and_aif() -> None:
    keys = Keys()
    rs = make_rs(keys)
    stored = post(rs, mint(keys, material(), now=NOW)).stored
    rs.authorize(stored, "GET", "/temp")
    with pytest.raises(InsufficientScope) as info:
        rs.authorize(stored, "PUT", "/led")
    assert type(info.value) is InsufficientScope
    assert info.value.coap_code == (4, 3)
    aif = AccessToken(scope=AifScope.of([("/led", 4)]))
    authorize(aif, "PUT", "/led", ResourceScopes({}))
    with pytest.raises(MethodNotAllowed):
        authorize(aif, "GET", "/led", ResourceScopes({}))


def test_method_not_covered_is_405_resource_not_covered_is_403() -> None:
    """RFC 9200 §5.10.2: the resource is covered but not the method -> 4.05, else 4.03."""
    keys = Keys()
    rs = make_rs(keys)
    stored = post(rs, mint(keys, material(), scope="led.read", now=NOW)).stored
    rs.authorize(stored, "GET", "/led")
    with pytest.raises(MethodNotAllowed) as info:
        rs.authorize(stored, "PUT", "/led")
    assert (info.value.error, info.value.coap_code, info.value.http_status) == (
        "insufficient_scope",
        (4, 5),
        405,
    )
    with pytest.raises(InsufficientScope) as other:
        rs.authorize(stored, "GET", "/temp")
    assert type(other.value) is InsufficientScope
    assert other.value.coap_code == (4, 3)
    aif = AccessToken(scope=AifScope.of([("/led", int(RestMethod.GET)), ("/x", 1 << 40)]))
    with pytest.raises(MethodNotAllowed):
        authorize(aif, "PUT", "/led", ResourceScopes({}))
    with pytest.raises(InsufficientScope) as none:
        authorize(aif, "GET", "/temp", ResourceScopes({}))
    assert type(none.value) is InsufficientScope
    with pytest.raises(InsufficientScope) as unregistered:
        authorize(aif, "GET", "/x", ResourceScopes({}))  # an unregistered bit covers nothing
    assert type(unregistered.value) is InsufficientScope


def test_creation_hints_and_cnonce() -> None:
    keys = Keys()
    rs = make_rs(keys, require_cnonce=True)
    payload = rs.creation_hints_for("GET", "/temp", random=b"\x01" * 8, monotonic=0)
    hints = cbor.loads(payload)
    assert hints == {1: AS_URI, 5: AUDIENCE, 9: "temp.read", 39: b"\x01" * 8}
    with pytest.raises(InvalidToken, match="cnonce"):
        post(rs, mint(keys, material(), now=NOW))
    decoded = cwt.decode(mint(keys, material(), now=NOW), keys.token_key).token
    token = cwt.encode(
        decoded.replace(cnonce=b"\x01" * 8), cwt.Encrypt0(keys.token_key), random_bytes=os.urandom
    )
    post(rs, token)
    other = cwt.encode(
        decoded.replace(cnonce=b"\x01" * 8), cwt.Encrypt0(keys.token_key), random_bytes=os.urandom
    )
    with pytest.raises(InvalidToken, match="cnonce"):  # single use
        post(rs, other)
    rs.creation_hints_for("GET", "/temp", random=b"\x02" * 8, monotonic=0)
    late = cwt.encode(
        decoded.replace(cnonce=b"\x02" * 8), cwt.Encrypt0(keys.token_key), random_bytes=os.urandom
    )
    with pytest.raises(InvalidToken, match="cnonce"):  # past its lifetime
        post(rs, late, mono=1000)


# ---- outcomes: what the binding applies (one place) ----------------------------------------


def test_superseding_outcome_names_the_context_to_drop_and_the_record() -> None:
    keys = Keys()
    rs = make_rs(keys)
    mat = material()
    first = post(rs, mint(keys, mat, now=NOW))
    assert (first.superseded, first.drop, first.delete, first.keeps_context) == (
        None,
        (),
        (),
        False,
    )
    token = mint(keys, mat, now=NOW, scope="temp.read led.read")
    second = post(rs, token, id1=b"\x43")
    assert second.superseded is first.stored
    assert second.drop == (pop_key_id(mat),)
    assert second.delete == ()  # the record of the same key replaces the row
    assert second.persist == persisted(second.stored)
    assert (second.persist.token, second.persist.client_id, second.persist.sender_mark) == (
        token,
        b"\x43",
        0,
    )
    answer = AuthzInfoResponse.decode(second.response)
    assert answer == AuthzInfoResponse(
        second.stored.context.nonce2, second.stored.context.server_id
    )
    assert second.exi_mark is None  # a token with exp moves no exi mark


def test_eviction_outcome_deletes_the_expired_rows() -> None:
    keys = Keys()
    rs = make_rs(keys, capacity=1)
    short = post(rs, mint(keys, material(b"\x01"), now=NOW, lifetime=10)).stored
    later = rs.post(
        mint(keys, material(b"\x02"), now=NOW + 20),
        nonce1=os.urandom(8),
        client_id=b"\x42",
        nonce2=os.urandom(8),
        now=NOW + 20,
        monotonic=0,
    )
    assert later.evicted == (short,)
    assert later.delete == later.drop == (short.key_id,)


def test_exi_outcome_carries_the_moved_mark_only() -> None:
    keys = Keys()
    rs = make_rs(keys, has_clock=False)
    token = mint(keys, material(), lifetime=None, exi=60, cti=encode_exi_sequence(7))
    assert post(rs, token).exi_mark == 7
    assert post(rs, token).exi_mark is None  # a re-post moves nothing


def test_update_outcome_keeps_the_context() -> None:
    keys = Keys()
    rs = make_rs(keys)
    mat = material()
    stored = post(rs, mint(keys, mat, now=NOW)).stored
    updated = rs.update(
        mint(keys, mat, now=NOW, scope="led.write"), current=stored, now=NOW, monotonic=0
    )
    assert updated.keeps_context
    assert (updated.response, updated.drop, updated.delete) == (b"", (), ())
    assert updated.persist.key_id == stored.key_id
    assert updated.stored.context == stored.context


def test_removals_name_contexts_and_rows() -> None:
    keys = Keys()
    rs = make_rs(keys)
    stored = post(rs, mint(keys, material(), now=NOW, lifetime=10)).stored
    assert rs.expire(now=NOW + 10, monotonic=0) == Removal((stored,), (stored.key_id,))
    assert rs.forget(b"gone") == Removal((), (b"gone",))  # its context and row go anyway


# ---- the /authz-info flow ----------------------------------------------------------------------


class CountingRs(ResourceServer):
    """A resource server that counts its verifications."""

    verifications = 0

    def verify(self, raw: bytes, **kwargs: Any) -> Any:
        self.verifications += 1
        return super().verify(raw, **kwargs)


def counting_rs(keys: Keys) -> CountingRs:
    return CountingRs(make_rs(keys).policy)


def finish(
    flow: Generator[Introspect, bool | None, AuthzInfoOutcome], *answers: bool | None
) -> Any:
    """Drive ``flow``, answering each Introspect in turn; the outcome (or the failure)."""
    asked: list[Introspect] = []
    try:
        step = next(flow)
        for answer in answers:
            asked.append(step)
            step = flow.send(answer)
    except StopIteration as done:
        return asked, done.value
    raise AssertionError(f"the flow asked more than {len(answers)} time(s)")


def payload(token: bytes, *, nonce1: bytes = b"\x01" * 8, id1: object = b"\x42") -> bytes:
    return cbor.dumps({1: token, 40: nonce1, 43: id1})


def flow_of(rs: ResourceServer, body: bytes, *, introspect: bool, over: bytes | None = None) -> Any:
    return rs.authz_info(
        body, over=over, random=os.urandom, now=NOW, monotonic=0, introspect=introspect
    )


@pytest.mark.parametrize("introspect", [False, True])
def test_the_flow_verifies_the_token_once(introspect: bool) -> None:
    keys = Keys()
    rs = counting_rs(keys)
    token = mint(keys, material(), now=NOW)
    asked, outcome = finish(flow_of(rs, payload(token), introspect=introspect), True)
    assert rs.verifications == 1
    assert asked == ([Introspect(token)] if introspect else [])
    assert outcome.stored.verified.raw == token
    assert len(rs.store) == 1


def test_the_flow_refuses_a_token_the_as_reports_inactive() -> None:
    keys = Keys()
    rs = make_rs(keys)
    flow = flow_of(rs, payload(mint(keys, material(), now=NOW)), introspect=True)
    assert isinstance(next(flow), Introspect)
    with pytest.raises(InvalidToken, match="inactive"):
        flow.send(False)
    assert len(rs.store) == 0
    flow = flow_of(rs, payload(mint(keys, material(), now=NOW)), introspect=True)
    _, outcome = finish(flow, None)  # no answer from the AS: the local checks decide
    assert outcome.stored in list(rs.store)


def test_the_flow_asks_only_about_tokens_that_pass_the_local_checks() -> None:
    keys = Keys()
    rs = make_rs(keys)
    flow = flow_of(rs, payload(mint(keys, material(), aud="rs2", now=NOW)), introspect=True)
    with pytest.raises(InvalidAudience):
        next(flow)


@pytest.mark.parametrize("introspect", [False, True])
def test_the_flow_reports_a_bad_exchange_before_a_bad_token(introspect: bool) -> None:
    keys = Keys()
    rs = make_rs(keys)
    bad_token = mint(keys, material(), aud="rs2", now=NOW)
    with pytest.raises(InvalidRequest, match="nonce1"):
        finish(flow_of(rs, payload(bad_token, nonce1=b"short"), introspect=introspect))
    with pytest.raises(InvalidRequest, match="ace_client_recipientId"):
        finish(flow_of(rs, payload(bad_token, id1=b"\x00" * 8), introspect=introspect))


def test_the_flow_over_oscore_needs_the_stored_token() -> None:
    keys = Keys()
    rs = make_rs(keys)
    mat = material()
    body = cbor.dumps({1: mint(keys, mat, now=NOW, aud="rs2")})
    with pytest.raises(InvalidToken, match="no access token for this security context"):
        finish(flow_of(rs, body, introspect=False, over=pop_key_id(mat)))
    stored = post(rs, mint(keys, mat, now=NOW)).stored
    _, outcome = finish(
        flow_of(rs, cbor.dumps({1: mint(keys, mat, now=NOW)}), introspect=False, over=stored.key_id)
    )
    assert outcome.keeps_context


# ---- the profile registry ----------------------------------------------------------------------


def test_the_registry_is_keyed_by_the_ace_profile_number() -> None:
    assert dict(PROFILES) == {2: OSCORE_PROFILE, 4: EDHOC_PROFILE}
    assert not EDHOC_PROFILE.encrypted_token  # a public credential in cnf: signed only
    assert all(profile.number == number for number, profile in PROFILES.items())
    assert select_profile(None, {2}) is OSCORE_PROFILE  # no ace_profile: the default
    assert select_profile(None, set()) is PROFILES[DEFAULT_PROFILE]
    assert select_profile(2, {1, 2}) is OSCORE_PROFILE
    assert OSCORE_PROFILE.encrypted_token


@pytest.mark.parametrize(("number", "accepted"), [(1, {2}), (1, {1, 2}), (2, {1}), (99, {99})])
def test_an_unknown_or_unaccepted_profile_is_incompatible(number: int, accepted: set[int]) -> None:
    with pytest.raises(IncompatibleAceProfiles) as info:
        select_profile(number, accepted)
    assert (
        str(info.value) == f"incompatible_ace_profiles: ACE profile {number} is not supported here"
    )
    assert info.value.coap_code == (4, 0)
    keys = Keys()
    rs = make_rs(keys, profiles=frozenset(accepted))
    with pytest.raises(
        IncompatibleAceProfiles, match=f"ACE profile {number} is not supported here"
    ):
        rs.verify(mint(keys, material(), ace_profile=number, now=NOW), now=NOW, monotonic=0)


def _as_constructed(record: Any) -> Any:
    """``record`` made again by its dataclass constructor from its fields."""
    return type(record)(**{f.name: getattr(record, f.name) for f in dataclasses.fields(record)})


def test_the_records_of_a_post_hold_every_field_as_their_constructors_make_them() -> None:
    """verify and the OSCORE profile fill their frozen records without __init__."""
    keys = Keys()
    rs = make_rs(keys)
    _asked, outcome = finish(
        flow_of(rs, payload(mint(keys, material(), now=NOW)), introspect=False)
    )
    verified, context = outcome.stored.verified, outcome.stored.context
    for record in (outcome, verified, context):
        names = {f.name for f in dataclasses.fields(record)}
        assert set(vars(record)) == names
        assert _as_constructed(record) == record
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(record, next(iter(names)), None)
