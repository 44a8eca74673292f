"""COSE_Sign1 / COSE_Mac0 / COSE_Encrypt0 (RFC 9052): round trips and refusals.

Every refusal must be a :class:`KeyboundError` subclass, never anything else.
"""

from __future__ import annotations

import os
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keybound.core import cbor, cose
from keybound.core.errors import (
    AlgorithmNotAllowed,
    BadSignature,
    DecodeError,
    KeyboundError,
    KeyNotFound,
    PayloadTooLarge,
)
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_headers import CoseTag
from keybound.core.numbers.cose_keys import Curve
from tests.helpers.cose import emit, key_for, verifier

ALL_ALGORITHMS = cose.SIGNATURE_ALGORITHMS | cose.MAC_ALGORITHMS | cose.AEAD_ALGORITHMS
KIND_TAG = {"sign": CoseTag.SIGN1, "mac": CoseTag.MAC0, "aead": CoseTag.ENCRYPT0}
PAYLOAD = b"This is the content."


ALGS = sorted(ALL_ALGORITHMS, key=lambda a: a.name)
ALG_IDS = [a.name for a in ALGS]


@pytest.fixture(params=ALGS, ids=ALG_IDS)
def alg(request: pytest.FixtureRequest) -> Algorithm:
    return request.param  # type: ignore[no-any-return]


def decode(data: Any, key: Key | cose.KeyLookup, **kwargs: Any) -> cose.CoseMessage:
    kwargs.setdefault("allowed", ALL_ALGORITHMS)
    return cose.decode(data, key, **kwargs)


def items_of(message: bytes) -> tuple[int, list[Any]]:
    tag = cbor2.loads(message)
    assert isinstance(tag, cbor2.CBORTag)
    return tag.tag, list(tag.value)


def reframe(tag: int, items: list[Any]) -> bytes:
    return cbor2.dumps(cbor2.CBORTag(tag, items))


# ---- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("tagged", [True, False], ids=["tagged", "untagged"])
def test_round_trip(alg: Algorithm, tagged: bool) -> None:
    key = key_for(alg)
    message = emit(alg, key, external_aad=b"aad", tagged=tagged)
    expected = None if tagged else KIND_TAG[alg.kind]
    out = decode(message, verifier(key), expected=expected, external_aad=b"aad")
    assert out.payload == PAYLOAD
    assert out.alg == alg
    assert out.kind == KIND_TAG[alg.kind]
    assert out.tagged is tagged
    assert out.kid == b"kid-1"
    assert out.protected == {1: alg.id}
    first = cbor2.loads(message)
    if tagged:
        assert isinstance(first, cbor2.CBORTag)
        assert first.tag == KIND_TAG[alg.kind]
    else:
        assert isinstance(first, list)


def test_round_trip_decoded_object_and_empty_payload(alg: Algorithm) -> None:
    key = key_for(alg, kid=None)
    message = emit(alg, key, payload=b"")
    assert decode(cbor2.loads(message), verifier(key)).payload == b""
    assert decode(message, verifier(key)).kid is None


def test_extra_headers_round_trip(alg: Algorithm) -> None:
    key = key_for(alg)
    message = emit(alg, key, protected={3: 61}, unprotected={-70000: "x"}, kid=b"other")
    out = decode(message, verifier(key))
    assert out.protected == {1: alg.id, 3: 61}
    assert out.unprotected[-70000] == "x"
    assert out.kid == b"other"


def test_untagged_needs_expected_type(alg: Algorithm) -> None:
    key = key_for(alg)
    message = emit(alg, key, tagged=False)
    with pytest.raises(DecodeError):
        decode(message, verifier(key))
    for wrong in (t for t in KIND_TAG.values() if t != KIND_TAG[alg.kind]):
        # Read as the wrong type, the array has the wrong length or the algorithm the wrong kind.
        with pytest.raises((DecodeError, AlgorithmNotAllowed)):
            decode(message, verifier(key), expected=wrong)


def test_tagged_with_other_expected_type(alg: Algorithm) -> None:
    key = key_for(alg)
    wrong = next(t for t in KIND_TAG.values() if t != KIND_TAG[alg.kind])
    with pytest.raises(DecodeError):
        decode(emit(alg, key), verifier(key), expected=wrong)


def test_external_aad_mismatch(alg: Algorithm) -> None:
    key = key_for(alg)
    message = emit(alg, key, external_aad=b"bound to this")
    with pytest.raises(BadSignature):
        decode(message, verifier(key), external_aad=b"bound to that")
    with pytest.raises(BadSignature):
        decode(message, verifier(key))


def test_encrypt0_uses_fresh_iv() -> None:
    key = key_for(Algorithm.AES_CCM_16_64_128)
    first, second = (emit(Algorithm.AES_CCM_16_64_128, key) for _ in range(2))
    assert first != second
    assert len(items_of(first)[1][1][5]) == 13


def test_deterministic_algorithms_are_reproducible() -> None:
    key = key_for(Algorithm.HMAC_256_64)
    assert emit(Algorithm.HMAC_256_64, key) == emit(Algorithm.HMAC_256_64, key)
    aead = key_for(Algorithm.A128GCM)
    iv = bytes(12)
    assert emit(Algorithm.A128GCM, aead, iv=iv) == emit(Algorithm.A128GCM, aead, iv=iv)


# ---- tampering --------------------------------------------------------------------------------


def test_tampered_payload(alg: Algorithm) -> None:
    key = key_for(alg)
    tag, items = items_of(emit(alg, key))
    items[2] = items[2][:-1] + bytes([items[2][-1] ^ 1])
    with pytest.raises(BadSignature):
        decode(reframe(tag, items), verifier(key))


def test_tampered_tag_or_signature(alg: Algorithm) -> None:
    key = key_for(alg)
    tag, items = items_of(emit(alg, key))
    last = len(items) - 1
    items[last] = bytes([items[last][0] ^ 0x80]) + items[last][1:]
    with pytest.raises(BadSignature):
        decode(reframe(tag, items), verifier(key))


def test_tampered_protected_header(alg: Algorithm) -> None:
    key = key_for(alg)
    tag, items = items_of(emit(alg, key))
    items[0] = cbor.dumps({1: alg.id, 3: 0})  # a content type the sender never protected
    with pytest.raises(BadSignature):
        decode(reframe(tag, items), verifier(key))


def test_protected_header_reencoded_differently(alg: Algorithm) -> None:
    """The same map with a non-shortest head is different protected bytes (RFC 9052 §3)."""
    key = key_for(alg)
    tag, items = items_of(emit(alg, key))
    head, argument = (b"\x39", -1 - alg.id) if alg.id < 0 else (b"\x19", alg.id)
    items[0] = b"\xa1\x01" + head + argument.to_bytes(2, "big")  # a 2-byte argument
    assert cbor.loads(items[0]) == {1: alg.id}
    with pytest.raises(BadSignature):
        decode(reframe(tag, items), verifier(key))


def test_tampered_iv() -> None:
    key = key_for(Algorithm.A256GCM)
    tag, items = items_of(emit(Algorithm.A256GCM, key))
    items[1][5] = bytes(12)
    with pytest.raises(BadSignature):
        decode(reframe(tag, items), key)


def test_wrong_key(alg: Algorithm) -> None:
    key = key_for(alg)
    with pytest.raises(BadSignature):
        decode(emit(alg, key), verifier(key_for(alg)))


def test_signature_of_wrong_length() -> None:
    key = key_for(Algorithm.ES256)
    tag, items = items_of(emit(Algorithm.ES256, key))
    items[3] = items[3] + b"\x00"
    with pytest.raises(BadSignature):
        decode(reframe(tag, items), key.public_key())


def test_mac_tag_truncated() -> None:
    key = key_for(Algorithm.HMAC_256_256)
    tag, items = items_of(emit(Algorithm.HMAC_256_256, key))
    items[3] = items[3][:8]
    with pytest.raises(BadSignature):
        decode(reframe(tag, items), key)


# ---- policy: algorithms and keys ----------------------------------------------------------------


def test_algorithm_not_in_allow_list(alg: Algorithm) -> None:
    key = key_for(alg)
    with pytest.raises(AlgorithmNotAllowed):
        decode(emit(alg, key), verifier(key), allowed=ALL_ALGORITHMS - {alg})
    with pytest.raises(AlgorithmNotAllowed):
        decode(emit(alg, key), verifier(key), allowed=())


@pytest.mark.parametrize("mac_alg", sorted(cose.MAC_ALGORITHMS, key=lambda a: a.name))
@pytest.mark.parametrize("curve", [Curve.P_256, Curve.ED25519], ids=["P-256", "Ed25519"])
def test_mac_algorithm_with_public_key(mac_alg: Algorithm, curve: Curve) -> None:
    """Key confusion: a MAC keyed with the bytes of a public key anyone can read."""
    public = (
        Key.generate_ec2(curve) if curve == Curve.P_256 else Key.generate_okp(curve)
    ).public_key()
    secret = public.to_cose_key()[-2]
    forged = cose.mac0(PAYLOAD, Key.symmetric(secret), alg=mac_alg)
    with pytest.raises(AlgorithmNotAllowed):
        decode(forged, public)


def test_aead_algorithm_with_public_key() -> None:
    public = Key.generate_ec2().public_key()
    message = cose.encrypt0(
        PAYLOAD, Key.symmetric(public.to_cose_key()[-2][:16]), random_bytes=os.urandom
    )
    with pytest.raises(AlgorithmNotAllowed):
        decode(message, public)


@pytest.mark.parametrize("sig_alg", sorted(cose.SIGNATURE_ALGORITHMS, key=lambda a: a.name))
def test_signature_algorithm_with_symmetric_key(sig_alg: Algorithm) -> None:
    real = key_for(sig_alg)
    message = emit(sig_alg, real)
    with pytest.raises(AlgorithmNotAllowed):
        decode(message, Key.generate_symmetric(32, random_bytes=os.urandom))


@pytest.mark.parametrize(
    ("alg_id", "key_alg"),
    [(Algorithm.ES256, Algorithm.ES384), (Algorithm.ES384, Algorithm.ES256)],
    ids=["ES256 header, P-384 key", "ES384 header, P-256 key"],
)
def test_signature_algorithm_with_other_curve(alg_id: Algorithm, key_alg: Algorithm) -> None:
    key = key_for(key_alg)
    tag, items = items_of(emit(key_alg, key))
    items[0] = cbor.dumps({1: alg_id.id})
    with pytest.raises(AlgorithmNotAllowed):
        decode(reframe(tag, items), key.public_key())


def test_key_restricted_to_other_algorithm() -> None:
    key = Key.generate_okp(Curve.ED25519).with_alg(Algorithm.ES256)
    with pytest.raises(AlgorithmNotAllowed):
        cose.sign1(PAYLOAD, key, alg=Algorithm.EDDSA)


def test_symmetric_key_of_wrong_length() -> None:
    message = emit(Algorithm.A256GCM, key_for(Algorithm.A256GCM))
    with pytest.raises(AlgorithmNotAllowed):
        decode(message, Key.generate_symmetric(16, random_bytes=os.urandom))
    with pytest.raises(AlgorithmNotAllowed):
        cose.mac0(
            PAYLOAD, Key.generate_symmetric(16, random_bytes=os.urandom), alg=Algorithm.HMAC_256_64
        )


@pytest.mark.parametrize(
    ("tag", "alg"),
    [
        (CoseTag.SIGN1, Algorithm.HMAC_256_256),
        (CoseTag.MAC0, Algorithm.ES256),
        (CoseTag.ENCRYPT0, Algorithm.HMAC_256_64),
        (CoseTag.MAC0, Algorithm.A128GCM),
    ],
    ids=[
        "Sign1 with MAC alg",
        "Mac0 with signature alg",
        "Encrypt0 with MAC alg",
        "Mac0 with AEAD",
    ],
)
def test_algorithm_of_the_wrong_message_kind(tag: CoseTag, alg: Algorithm) -> None:
    body = cbor.dumps({1: alg.id})
    items: list[Any] = (
        [body, {5: bytes(12)}, b"x"] if tag == CoseTag.ENCRYPT0 else [body, {}, b"x", b"t"]
    )
    with pytest.raises(AlgorithmNotAllowed):
        decode(reframe(tag, items), key_for(alg))


def test_alg_only_in_unprotected_header(alg: Algorithm) -> None:
    key = key_for(alg)
    tag, items = items_of(emit(alg, key))
    items[0] = b""
    items[1][1] = alg.id
    with pytest.raises(AlgorithmNotAllowed):
        decode(reframe(tag, items), verifier(key))
    items[0] = cbor.dumps({})
    with pytest.raises(AlgorithmNotAllowed):
        decode(reframe(tag, items), verifier(key))


@pytest.mark.parametrize(
    "alg_value",
    [-257, 6, 0, "ES256", b"\x26", -7.0, None, True],
    ids=["RS256", "HMAC 384", "reserved 0", "text", "bytes", "float", "null", "true"],
)
def test_unsupported_or_malformed_alg_value(alg_value: Any) -> None:
    key = key_for(Algorithm.ES256)
    tag, items = items_of(emit(Algorithm.ES256, key))
    items[0] = cbor2.dumps({1: alg_value})
    with pytest.raises(AlgorithmNotAllowed):
        decode(reframe(tag, items), key.public_key())


# ---- structural refusals ----------------------------------------------------------------------


def test_duplicate_header_in_protected_and_unprotected(alg: Algorithm) -> None:
    key = key_for(alg)
    tag, items = items_of(emit(alg, key, protected={4: b"kid-1"}))
    assert items[1][4] == b"kid-1"
    with pytest.raises(DecodeError):
        decode(reframe(tag, items), verifier(key))
    _, items = items_of(emit(alg, key))
    items[1][1] = alg.id  # alg in both buckets
    with pytest.raises(DecodeError):
        decode(reframe(tag, items), verifier(key))


def test_duplicate_label_inside_protected_header() -> None:
    key = key_for(Algorithm.HMAC_256_64)
    tag, items = items_of(emit(Algorithm.HMAC_256_64, key))
    items[0] = b"\xa2\x01\x04\x01\x04"
    with pytest.raises(DecodeError):
        decode(reframe(tag, items), key)


def test_crit_header(alg: Algorithm) -> None:
    key = key_for(alg)
    message = emit(alg, key, protected={2: [-70000], -70000: 1})
    with pytest.raises(DecodeError, match="-70000 is not understood"):
        decode(message, verifier(key))


@pytest.mark.parametrize(
    ("protected", "unprotected", "error"),
    [
        ({}, {2: [1]}, "crit must be in the protected header"),
        ({}, {2: [-70000], -70000: 1}, "crit must be in the protected header"),
        ({2: []}, {}, "non-empty array"),
        ({2: 1}, {}, "non-empty array"),
        ({2: [b"\x01"]}, {}, "integer or text labels"),
        ({2: ["x"]}, {}, "'x' is not understood"),
        ({2: [6]}, {}, "6 is not understood"),
    ],
)
def test_crit_is_checked_per_rfc9052(
    alg: Algorithm, protected: dict[Any, Any], unprotected: dict[int, Any], error: str
) -> None:
    """RFC 9052 §3.1: crit only protected, non-empty, every label understood."""
    key = key_for(alg)
    message = emit(alg, key, protected=protected, unprotected=unprotected)
    with pytest.raises(DecodeError, match=error):
        decode(message, verifier(key))


def test_crit_naming_understood_headers_is_accepted(alg: Algorithm) -> None:
    """RFC 9052 §3.1: a crit that names only parameters we process does not refuse."""
    key = key_for(alg)
    message = emit(alg, key, protected={2: [1, 5]})
    assert decode(message, verifier(key)).payload == PAYLOAD


def test_truncated(alg: Algorithm) -> None:
    key = key_for(alg)
    message = emit(alg, key)
    for cut in (1, 2, len(message) // 2, len(message) - 1):
        with pytest.raises(DecodeError):
            decode(message[:cut], verifier(key))
    with pytest.raises(DecodeError):
        decode(b"", verifier(key))


def test_trailing_bytes(alg: Algorithm) -> None:
    key = key_for(alg)
    with pytest.raises(DecodeError):
        decode(emit(alg, key) + b"\x00", verifier(key))


def test_too_large() -> None:
    key = key_for(Algorithm.HMAC_256_64)
    message = emit(Algorithm.HMAC_256_64, key, payload=bytes(cose.DEFAULT_MAX_SIZE))
    with pytest.raises(PayloadTooLarge):
        decode(message, key)
    assert decode(message, key, max_size=2 * cose.DEFAULT_MAX_SIZE).payload == bytes(
        cose.DEFAULT_MAX_SIZE
    )


SIGN1_BODY = cbor.dumps({1: -7})
MALFORMED_MESSAGES: list[tuple[str, Any]] = [
    ("not an array", cbor2.CBORTag(18, {1: 2})),
    ("array of 3 for Sign1", cbor2.CBORTag(18, [SIGN1_BODY, {}, b"x"])),
    ("array of 5", cbor2.CBORTag(18, [SIGN1_BODY, {}, b"x", b"s", b"extra"])),
    ("protected as map", cbor2.CBORTag(18, [{1: -7}, {}, b"x", b"s"])),
    ("protected encodes an array", cbor2.CBORTag(18, [cbor2.dumps([1]), {}, b"x", b"s"])),
    ("protected is not CBOR", cbor2.CBORTag(18, [b"\xa1\x01", {}, b"x", b"s"])),
    ("unprotected as bytes", cbor2.CBORTag(18, [SIGN1_BODY, b"", b"x", b"s"])),
    ("payload as text", cbor2.CBORTag(18, [SIGN1_BODY, {}, "x", b"s"])),
    ("detached payload", cbor2.CBORTag(18, [SIGN1_BODY, {}, None, b"s"])),
    ("signature as text", cbor2.CBORTag(18, [SIGN1_BODY, {}, b"x", "s"])),
    ("kid as text", cbor2.CBORTag(18, [SIGN1_BODY, {4: "kid"}, b"x", b"s"])),
    ("float label", cbor2.CBORTag(18, [SIGN1_BODY, {1.5: 1}, b"x", b"s"])),
    ("COSE_Sign (unsupported)", cbor2.CBORTag(98, [SIGN1_BODY, {}, b"x", []])),
    ("COSE_Encrypt (unsupported)", cbor2.CBORTag(96, [SIGN1_BODY, {}, b"x", []])),
    ("unknown tag", cbor2.CBORTag(99, [SIGN1_BODY, {}, b"x", b"s"])),
    ("nested tag", cbor2.CBORTag(18, cbor2.CBORTag(18, [SIGN1_BODY, {}, b"x", b"s"]))),
    ("Encrypt0 without IV", cbor2.CBORTag(16, [cbor.dumps({1: 10}), {}, b"x" * 20])),
    ("Encrypt0 IV as text", cbor2.CBORTag(16, [cbor.dumps({1: 10}), {5: "iv"}, b"x" * 20])),
    ("Encrypt0 short IV", cbor2.CBORTag(16, [cbor.dumps({1: 10}), {5: b"\x00" * 12}, b"x" * 20])),
    ("Encrypt0 long IV", cbor2.CBORTag(16, [cbor.dumps({1: 1}), {5: b"\x00" * 13}, b"x" * 20])),
    ("Encrypt0 partial IV only", cbor2.CBORTag(16, [cbor.dumps({1: 10}), {6: b"\x01"}, b"x" * 20])),
    ("Encrypt0 nil ciphertext", cbor2.CBORTag(16, [cbor.dumps({1: 10}), {5: bytes(13)}, None])),
    ("bare integer", 5),
    ("bare bytes", b"\x00"),
]


@pytest.mark.parametrize("obj", [pytest.param(obj, id=name) for name, obj in MALFORMED_MESSAGES])
def test_malformed_structure(obj: Any) -> None:
    keys = {
        18: key_for(Algorithm.ES256).public_key(),
        16: key_for(Algorithm.AES_CCM_16_64_128),
    }
    tag = obj.tag if isinstance(obj, cbor2.CBORTag) else 18
    with pytest.raises(DecodeError):
        decode(cbor2.dumps(obj), keys.get(tag, keys[18]))


def test_semantic_tag_inside_headers() -> None:
    key = key_for(Algorithm.HMAC_256_64)
    tag, items = items_of(emit(Algorithm.HMAC_256_64, key))
    items[1][-70000] = cbor2.CBORTag(1, 0)  # an epoch date
    with pytest.raises(DecodeError):
        decode(reframe(tag, items), key)


# ---- keys and lookup --------------------------------------------------------------------------


def test_key_lookup_by_kid() -> None:
    a, b = key_for(Algorithm.HMAC_256_64, kid=b"a"), key_for(Algorithm.HMAC_256_64, kid=b"b")
    lookup = cose.key_lookup({b"a": a, b"b": b})
    assert decode(emit(Algorithm.HMAC_256_64, b), lookup).key is b
    with pytest.raises(KeyNotFound):
        decode(emit(Algorithm.HMAC_256_64, key_for(Algorithm.HMAC_256_64, kid=b"c")), lookup)
    no_kid = emit(Algorithm.HMAC_256_64, a.with_kid(None))
    with pytest.raises(KeyNotFound):
        decode(no_kid, lookup)
    assert decode(no_kid, cose.key_lookup({}, default=a)).key is a


def test_key_lookup_callable_receives_kid_and_alg() -> None:
    key = key_for(Algorithm.EDDSA, kid=b"ed")
    seen: list[tuple[bytes | None, Algorithm]] = []

    def lookup(kid: bytes | None, alg: Algorithm) -> Key:
        seen.append((kid, alg))
        return key.public_key()

    decode(emit(Algorithm.EDDSA, key), lookup)
    assert seen == [(b"ed", Algorithm.EDDSA)]


def test_lookup_returning_a_non_key() -> None:
    key = key_for(Algorithm.HMAC_256_64)

    def bad(kid: bytes | None, alg: Algorithm) -> Any:
        return None

    with pytest.raises(KeyNotFound):
        decode(emit(Algorithm.HMAC_256_64, key), bad)


@pytest.mark.parametrize("sig_alg", sorted(cose.SIGNATURE_ALGORITHMS, key=lambda a: a.name))
def test_signing_needs_private_key(sig_alg: Algorithm) -> None:
    with pytest.raises(KeyNotFound):
        emit(sig_alg, key_for(sig_alg).public_key())


def test_signing_with_symmetric_key() -> None:
    with pytest.raises(AlgorithmNotAllowed):
        cose.sign1(
            PAYLOAD, Key.generate_symmetric(32, random_bytes=os.urandom), alg=Algorithm.ES256
        )


# ---- fuzzing ----------------------------------------------------------------------------------

_FUZZ_KEYS = {alg: key_for(alg) for alg in ALGS}
_FUZZ_MESSAGES = {alg: emit(alg, key, external_aad=b"ext") for alg, key in _FUZZ_KEYS.items()}


def _lookup(kid: bytes | None, alg: Algorithm) -> Key:
    return verifier(_FUZZ_KEYS[alg])


def _decode_or_refuse(data: bytes, expected: CoseTag | None = None) -> cose.CoseMessage | None:
    try:
        return cose.decode(
            data, _lookup, allowed=ALL_ALGORITHMS, expected=expected, external_aad=b"ext"
        )
    except KeyboundError:
        return None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, *KIND_TAG.values()]))
def test_fuzz_arbitrary_bytes(data: bytes, expected: CoseTag | None) -> None:
    _decode_or_refuse(data, expected)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Algorithm, bytes]:
    alg = draw(st.sampled_from(ALGS))
    data = bytearray(_FUZZ_MESSAGES[alg])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
    return alg, bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzz_mutated_valid_messages(case: tuple[Algorithm, bytes]) -> None:
    """A mutated message is refused with a KeyboundError, or it still carries the same payload."""
    alg, data = case
    out = _decode_or_refuse(data)
    if out is not None:
        assert out.payload == PAYLOAD
        assert out.alg == alg
