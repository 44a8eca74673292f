"""The shared token model: CWT <-> model <-> JWT, every cnf kind, validation, and refusals."""

from __future__ import annotations

import contextlib
import os

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keybound.core import cose, cwt, jwt
from keybound.core.errors import (
    AlgorithmNotAllowed,
    BadSignature,
    DecodeError,
    ExpiredToken,
    InvalidAudience,
    InvalidClaim,
    InvalidIssuer,
    KeyboundError,
    KeyNotFound,
    NotYetValid,
    PayloadTooLarge,
    UnsupportedConversion,
)
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_keys import Curve
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.scope import Scope
from keybound.core.token import (
    MAX_TIME_CLAIM,
    AccessToken,
    CnfCkt,
    CnfEncryptedKey,
    CnfJkt,
    CnfKey,
    CnfKid,
    CnfOsc,
)
from keybound.core.validation import validate

AS_KEY = Key.generate_ec2(Curve.P_256, kid=b"as-signing")
RS_KEY = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"rs-token-key")
MAC_KEY = Key.generate_symmetric(32, random_bytes=os.urandom, kid=b"mac")
POP = Key.generate_ec2(Curve.P_256)
NOW = 1_700_000_000


def _token(**changes: object) -> AccessToken:
    base = AccessToken(
        iss="coap://as.example",
        sub="sensor-1",
        aud=("coap://rs.example",),
        exp=NOW + 3600,
        nbf=NOW - 10,
        iat=NOW,
        cti=b"\x00\x01\x02",
        scope=Scope.from_claim("temp.read led.write"),
        cnf=CnfKey(POP.public_key()),
    )
    return base.replace(**changes)


# ---- round trips ------------------------------------------------------------------------

CNF_BOTH = [
    pytest.param(CnfKey(POP.public_key()), id="cose_key-ec2"),
    pytest.param(CnfKey(Key.generate_okp(Curve.ED25519).public_key()), id="cose_key-okp"),
    pytest.param(
        CnfKey(Key.generate_symmetric(16, random_bytes=os.urandom)), id="cose_key-symmetric"
    ),
    pytest.param(CnfKid(b"client-key-1"), id="kid"),
    pytest.param(
        CnfOsc(
            OscoreInputMaterial(
                id=b"\x01", version=None, ms=os.urandom(16), hkdf=None, alg=None,
                salt=b"\x9e\x7c", context_id=None,
            )
        ),
        id="osc",
    ),
]  # fmt: skip


@pytest.mark.parametrize("cnf", CNF_BOTH)
def test_same_token_as_cwt_and_jwt_decodes_equal(cnf: object) -> None:
    token = _token(cnf=cnf)
    from_cwt = cwt.decode(cwt.encode(token, cwt.Sign1(AS_KEY)), AS_KEY.public_key()).token
    from_jwt = jwt.decode(jwt.encode(token, AS_KEY), AS_KEY.public_key()).token
    assert from_cwt == token
    assert from_jwt == token
    assert from_cwt == from_jwt


def test_jkt_is_jwt_only_and_ckt_is_cwt_only() -> None:
    jkt = _token(cnf=CnfJkt(POP.jwk_thumbprint()))
    assert jwt.decode(jwt.encode(jkt, AS_KEY), AS_KEY).token == jkt
    with pytest.raises(UnsupportedConversion, match="jkt"):
        cwt.encode(jkt, cwt.Sign1(AS_KEY))
    ckt = _token(cnf=CnfCkt(POP.cose_thumbprint()))
    assert cwt.decode(cwt.encode(ckt, cwt.Sign1(AS_KEY)), AS_KEY).token == ckt
    with pytest.raises(UnsupportedConversion, match="ckt"):
        jwt.encode(ckt, AS_KEY)


def test_encrypted_cnf_key_jwe_round_trip() -> None:
    pop = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"pop")
    sealed = jwt.seal_key(pop, RS_KEY)
    token = _token(cnf=CnfEncryptedKey(jwe=sealed))
    decoded = jwt.decode(jwt.encode_encrypted(token, RS_KEY), RS_KEY).token
    assert decoded == token
    assert isinstance(decoded.cnf, CnfEncryptedKey)
    assert decoded.cnf.jwe is not None
    assert jwt.open_key(decoded.cnf.jwe, RS_KEY) == pop
    with pytest.raises(UnsupportedConversion):
        cwt.encode(token, cwt.Sign1(AS_KEY))


def test_encrypted_cose_key_round_trip() -> None:
    pop = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"pop")
    sealed = cose.encrypt0(
        pop.to_cose_key_bytes(include_private=True), RS_KEY, tagged=False, random_bytes=os.urandom
    )
    token = _token(cnf=CnfEncryptedKey(cose=cbor2.loads(sealed)))
    decoded = cwt.decode(cwt.encode(token, cwt.Sign1(AS_KEY)), AS_KEY).token
    assert isinstance(decoded.cnf, CnfEncryptedKey)
    opened = cose.decode(
        decoded.cnf.cose, RS_KEY, allowed=cose.AEAD_ALGORITHMS, expected=cose.CoseTag.ENCRYPT0
    )
    assert Key.from_cose_key(opened.payload) == pop


@pytest.mark.parametrize(
    "protection",
    [
        pytest.param(cwt.Sign1(AS_KEY), id="sign1-es256"),
        pytest.param(cwt.Sign1(Key.generate_ec2(Curve.P_384), Algorithm.ES384), id="sign1-es384"),
        pytest.param(cwt.Sign1(Key.generate_okp(Curve.ED25519)), id="sign1-eddsa"),
        pytest.param(cwt.Mac0(MAC_KEY, Algorithm.HMAC_256_256), id="mac0"),
        pytest.param(cwt.Encrypt0(RS_KEY), id="encrypt0"),
        pytest.param(cwt.Nested(cwt.Sign1(AS_KEY), cwt.Encrypt0(RS_KEY)), id="nested"),
    ],
)
def test_every_protection_round_trips(protection: cwt.Protection) -> None:
    token = _token()
    keys: list[Key] = []
    for part in (
        (protection.sign, protection.encrypt)
        if isinstance(protection, cwt.Nested)
        else (protection,)
    ):
        keys.append(part.key if part.key.is_symmetric else part.key.public_key())
    decoded = cwt.decode(cwt.encode(token, protection, cwt_tag=True, random_bytes=os.urandom), keys)
    assert decoded.token == token
    assert decoded.cwt_tag


def test_unknown_claims_are_kept_and_caller_data_is_not_mutated() -> None:
    claims = {1: "iss", 3: "aud", 4: NOW + 60, -70000: "private", "custom": [1, 2]}
    before = dict(claims)
    token = AccessToken.from_cwt_claims(claims)
    assert claims == before
    assert token.extra == {-70000: "private", "custom": [1, 2]}
    assert token.to_cwt_claims()[-70000] == "private"
    with pytest.raises(UnsupportedConversion, match="-70000"):
        token.to_jwt_claims()
    assert AccessToken.from_jwt_claims({"custom": {"a": 1}}).extra == {"custom": {"a": 1}}


def test_many_audiences() -> None:
    token = _token(aud=("a", "b"))
    assert cwt.decode(cwt.encode(token, cwt.Sign1(AS_KEY)), AS_KEY).token.aud == ("a", "b")
    assert jwt.decode(jwt.encode(token, AS_KEY), AS_KEY).token.aud == ("a", "b")


def test_aif_scope_in_both_formats() -> None:
    scope = Scope.from_jwt([["/temp", 1], ["/led", 5]])
    token = _token(scope=scope)
    assert cwt.decode(cwt.encode(token, cwt.Sign1(AS_KEY)), AS_KEY).token.scope == scope
    assert jwt.decode(jwt.encode(token, AS_KEY), AS_KEY).token.scope == scope


_text = st.text(min_size=1, max_size=30)
_time = st.integers(min_value=0, max_value=MAX_TIME_CLAIM)


@st.composite
def tokens(draw: st.DrawFn) -> AccessToken:
    return AccessToken(
        iss=draw(st.none() | _text),
        sub=draw(st.none() | _text),
        aud=tuple(draw(st.lists(_text, max_size=3))),
        exp=draw(st.none() | _time),
        nbf=draw(st.none() | _time),
        iat=draw(st.none() | _time),
        cti=draw(st.none() | st.binary(min_size=1, max_size=16)),
        scope=draw(
            st.none()
            | st.lists(
                st.from_regex(r"[a-z][a-z0-9.:_-]{0,10}", fullmatch=True), min_size=1, max_size=4
            ).map(lambda words: Scope.from_claim(" ".join(dict.fromkeys(words))))
        ),
        ace_profile=draw(st.none() | st.integers(min_value=1, max_value=2)),
        cnonce=draw(st.none() | st.binary(min_size=1, max_size=16)),
        exi=draw(st.none() | st.integers(min_value=0, max_value=2**31)),
        cnf=draw(st.none() | st.sampled_from([CnfKey(POP.public_key()), CnfKid(b"k1")])),
        extra=draw(
            st.dictionaries(
                st.from_regex(r"x_[a-z]{1,8}", fullmatch=True),
                st.integers(-(2**63), 2**63 - 1),
                max_size=3,
            )
        ),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens())
def test_round_trip_cwt_model_jwt(token: AccessToken) -> None:
    via_cwt = cwt.decode(cwt.encode(token, cwt.Mac0(MAC_KEY)), MAC_KEY).token
    via_jwt = jwt.decode(jwt.encode(via_cwt, MAC_KEY, alg="HS256"), MAC_KEY).token
    assert via_cwt == token
    assert via_jwt == token


# ---- validation -------------------------------------------------------------------------


def test_validation_accepts_a_good_token() -> None:
    validate(_token(), now=NOW, audience="coap://rs.example", issuer="coap://as.example")


def test_expired() -> None:
    with pytest.raises(ExpiredToken) as info:
        validate(_token(), now=NOW + 3600)
    assert info.value.claim == "exp"
    validate(_token(), now=NOW + 3600, leeway=5)


def test_not_yet_valid() -> None:
    with pytest.raises(NotYetValid):
        validate(_token(nbf=NOW + 100), now=NOW)


def test_wrong_audience() -> None:
    with pytest.raises(InvalidAudience, match="audience"):
        validate(_token(), now=NOW, audience="coap://other.example")


def test_wrong_issuer() -> None:
    with pytest.raises(InvalidIssuer):
        validate(_token(), now=NOW, issuer="coap://evil.example")


def test_no_clock_skips_time_checks() -> None:
    validate(_token(exp=1), now=None)


# ---- refusals ---------------------------------------------------------------------------


def _signed() -> bytes:
    return cwt.encode(_token(), cwt.Sign1(AS_KEY))


def test_tampered_payload() -> None:
    msg = cbor2.loads(_signed())
    msg.value[2] = msg.value[2].replace(b"sensor-1", b"sensor-2")
    with pytest.raises(BadSignature):
        cwt.decode(cbor2.dumps(msg), AS_KEY)


def test_tampered_protected_header() -> None:
    msg = cbor2.loads(_signed())
    msg.value[0] = cbor2.dumps({1: -7, 3: 0})
    with pytest.raises(BadSignature):
        cwt.decode(cbor2.dumps(msg), AS_KEY)


def test_wrong_key() -> None:
    with pytest.raises(BadSignature):
        cwt.decode(_signed(), Key.generate_ec2(kid=b"as-signing"))
    with pytest.raises(BadSignature):
        jwt.decode(jwt.encode(_token(), AS_KEY), Key.generate_ec2(kid=b"as-signing"))


def test_unknown_kid() -> None:
    with pytest.raises(KeyNotFound):
        cwt.decode(_signed(), cose.key_lookup({b"other": AS_KEY}))


def test_algorithm_not_in_allow_list() -> None:
    with pytest.raises(AlgorithmNotAllowed):
        cwt.decode(_signed(), AS_KEY, allowed={Algorithm.EDDSA})
    with pytest.raises(AlgorithmNotAllowed):
        jwt.decode(jwt.encode(_token(), AS_KEY), AS_KEY, allowed={"EdDSA"})


def test_alg_none_jwt() -> None:
    import base64
    import json

    def b64(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    forged = f"{b64({'alg': 'none'})}.{b64({'sub': 'admin'})}."
    with pytest.raises(AlgorithmNotAllowed):
        jwt.decode(forged, AS_KEY)


def test_symmetric_alg_with_a_public_key() -> None:
    """Key confusion: an HMAC token 'verified' with the AS's public key must be refused."""
    public_bytes = AS_KEY.to_cose_key_bytes()
    fake = Key.symmetric(public_bytes[:32])
    forged = cwt.encode(_token(), cwt.Mac0(fake, Algorithm.HMAC_256_256))
    with pytest.raises(KeyNotFound):
        cwt.decode(forged, AS_KEY.public_key())
    # Even a lookup that hands out the public key for any algorithm is refused.
    with pytest.raises(AlgorithmNotAllowed, match="symmetric"):
        cwt.decode(forged, lambda kid, alg: AS_KEY.public_key())
    hs = jwt.encode(_token(), Key.symmetric(b"k" * 32), alg="HS256")
    with pytest.raises((AlgorithmNotAllowed, KeyNotFound)):
        jwt.decode(hs, AS_KEY.public_key())


def test_truncated_cbor() -> None:
    data = _signed()
    for cut in (1, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            cwt.decode(data[:cut], AS_KEY)


def test_cbor_nested_10000_deep() -> None:
    with pytest.raises(DecodeError, match="nested"):
        cwt.decode(b"\x81" * 10_000 + b"\x00", AS_KEY, max_size=1 << 16)


def test_one_mebibyte_token() -> None:
    big = cbor2.dumps(cbor2.CBORTag(18, [b"", {}, os.urandom(1 << 20), b""]))
    with pytest.raises(PayloadTooLarge):
        cwt.decode(big, AS_KEY)
    with pytest.raises(PayloadTooLarge):
        jwt.decode("a" * (1 << 20), AS_KEY)


def test_duplicate_map_keys() -> None:
    # A claims map with iss twice: {1: "a", 1: "b"} signed by the AS must still be refused.
    payload = b"\xa2\x01\x61a\x01\x61b"
    message = cose.sign1(payload, AS_KEY)
    with pytest.raises(DecodeError, match="duplicate"):
        cwt.decode(message, AS_KEY)


# ---- the decoders never raise anything else ---------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_cwt_decoder_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(KeyboundError):
        cwt.decode(data, [AS_KEY, RS_KEY])


VALID = [
    cwt.encode(_token(), cwt.Sign1(AS_KEY)),
    cwt.encode(_token(), cwt.Encrypt0(RS_KEY), random_bytes=os.urandom),
    cwt.encode(
        _token(),
        cwt.Nested(cwt.Sign1(AS_KEY), cwt.Encrypt0(RS_KEY)),
        cwt_tag=True,
        random_bytes=os.urandom,
    ),
]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_cwt_decoder_on_mutated_tokens(valid: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(valid)
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        decoded = cwt.decode(bytes(data), [AS_KEY, RS_KEY])
    except KeyboundError:
        return
    assert bytes(data) == valid or decoded.token == _token()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_jwt_decoder_on_arbitrary_text(text: str) -> None:
    with contextlib.suppress(KeyboundError):
        jwt.decode(text, [AS_KEY, MAC_KEY])


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from("AZaz09-_."))
def test_jwt_decoder_on_mutated_tokens(pos: int, char: str) -> None:
    valid = jwt.encode(_token(), AS_KEY)
    data = valid[: pos % len(valid)] + char + valid[pos % len(valid) + 1 :]
    with contextlib.suppress(KeyboundError):
        assert jwt.decode(data, AS_KEY).token == _token()


# ---- time claims: one bound in both encodings -------------------------------------------


TIME_CLAIMS = {"exp": 4, "nbf": 5, "iat": 6, "exi": 40}


def _time_claim(fmt: str, name: str, value: object) -> AccessToken:
    if fmt == "cwt":
        return AccessToken.from_cwt_claims({TIME_CLAIMS[name]: value})
    return AccessToken.from_jwt_claims({name: value})


@pytest.mark.parametrize("fmt", ["cwt", "jwt"])
@pytest.mark.parametrize("name", sorted(TIME_CLAIMS))
@pytest.mark.parametrize(
    "value",
    [
        1e300,
        2.6e11,
        MAX_TIME_CLAIM + 1,
        2**63,
        2**63 - 1,
        2**1100,
        float("nan"),
        float("inf"),
        float("-inf"),
        -1,
        -0.5,
        -1e300,
        True,
        "1700000000",
    ],
    ids=repr,
)
def test_time_claims_out_of_bounds_are_refused(fmt: str, name: str, value: object) -> None:
    """exp, nbf, iat and exi share the bound 0..MAX_TIME_CLAIM in CWT and JWT alike."""
    with pytest.raises(InvalidClaim) as info:
        _time_claim(fmt, name, value)
    assert info.value.claim == name


@pytest.mark.parametrize("fmt", ["cwt", "jwt"])
@pytest.mark.parametrize("name", sorted(TIME_CLAIMS))
@pytest.mark.parametrize("value", [0, 1_700_000_000, MAX_TIME_CLAIM])
def test_time_claims_within_bounds_are_kept(fmt: str, name: str, value: int) -> None:
    assert getattr(_time_claim(fmt, name, value), name) == value


@pytest.mark.parametrize("fmt", ["cwt", "jwt"])
@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_numeric_date_floats_are_floored_within_the_bound(fmt: str, name: str) -> None:
    """RFC 8392 §2 / RFC 7519 §2: a NumericDate may be a float; it is floored to seconds."""
    assert getattr(_time_claim(fmt, name, 1_700_000_000.9), name) == 1_700_000_000
    assert getattr(_time_claim(fmt, name, -0.0), name) == 0
    assert getattr(_time_claim(fmt, name, MAX_TIME_CLAIM + 0.5), name) == MAX_TIME_CLAIM


@pytest.mark.parametrize("fmt", ["cwt", "jwt"])
def test_exi_is_an_unsigned_integer(fmt: str) -> None:
    """RFC 9200 §5.10.3: exi counts whole seconds; a float is refused."""
    with pytest.raises(InvalidClaim):
        _time_claim(fmt, "exi", 60.0)
