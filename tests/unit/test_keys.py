"""Keys: RFC 7638 / RFC 9679 thumbprints, COSE_Key <-> JWK, malformed keys, PEM, RFC 7800 cnf."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa, x25519
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import ECKey, OKPKey

from keybound.core import cbor
from keybound.core.errors import DecodeError, KeyboundError, UnsupportedPopKey
from keybound.core.keys import Key, b64u_decode, b64u_encode
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_keys import Curve, KeyType
from tests.helpers.paths import load_vectors

# ---- fixtures -------------------------------------------------------------------------------

KEY_FACTORIES: dict[str, Callable[[], Key]] = {
    "EC2 P-256": lambda: Key.generate_ec2(Curve.P_256, kid=b"ec256", alg=Algorithm.ES256),
    "EC2 P-384": lambda: Key.generate_ec2(Curve.P_384, kid=b"ec384"),
    "OKP Ed25519": lambda: Key.generate_okp(Curve.ED25519, kid=b"\x01\x02", alg=Algorithm.EDDSA),
    "OKP X25519": lambda: Key.generate_okp(Curve.X25519),
    "Symmetric 16": lambda: Key.generate_symmetric(
        16, random_bytes=os.urandom, kid=b"s16", alg=Algorithm.A128GCM
    ),
    "Symmetric 32": lambda: Key.generate_symmetric(
        32, random_bytes=os.urandom, alg=Algorithm.HMAC_256_256
    ),
}
ASYMMETRIC = [name for name in KEY_FACTORIES if not name.startswith("Symmetric")]


@pytest.fixture(params=list(KEY_FACTORIES), ids=list(KEY_FACTORIES))
def any_key(request: pytest.FixtureRequest) -> Key:
    return KEY_FACTORIES[request.param]()


@pytest.fixture(params=ASYMMETRIC, ids=ASYMMETRIC)
def asymmetric_key(request: pytest.FixtureRequest) -> Key:
    return KEY_FACTORIES[request.param]()


def _cases(name: str) -> list[dict[str, Any]]:
    return list(load_vectors(name)["cases"])


# ---- RFC 7638 (via RFC 8037 Appendix A.3) ---------------------------------------------------


@pytest.mark.parametrize("case", _cases("rfc7638_thumbprint.json"), ids=lambda c: c["section"])
def test_rfc7638_jwk_thumbprint_vector(case: dict[str, Any]) -> None:
    key = Key.from_jwk(case["jwk"])
    assert key.has_private, f"{case['section']}: d did not load"
    members = {name: case["jwk"][name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    assert canonical == case["canonical_json"], f"{case['section']}: canonical JSON differs"
    assert hashlib.sha256(canonical.encode()).hexdigest() == case["sha256_hex"]
    assert key.jwk_thumbprint() == case["thumbprint"], f"{case['section']} thumbprint differs"
    # The thumbprint covers the public key only.
    assert key.public_key().jwk_thumbprint() == case["thumbprint"]


def test_rfc9449_jkt_vector_through_key() -> None:
    """The EC thumbprint of RFC 9449 §6.1, through ``Key`` rather than the DPoP helper."""
    for case in load_vectors("rfc9449_examples.json")["thumbprints"]:
        assert Key.from_jwk(case["jwk"]).jwk_thumbprint() == case["jkt"], case["title"]


def test_jwk_thumbprint_matches_joserfc(asymmetric_key: Key) -> None:
    jwk = asymmetric_key.to_jwk()
    other = ECKey.import_key(jwk) if jwk["kty"] == "EC" else OKPKey.import_key(jwk)
    assert asymmetric_key.jwk_thumbprint() == other.thumbprint()


def test_jwk_thumbprint_ignores_kid_alg_and_private_part() -> None:
    key = Key.generate_ec2(Curve.P_256)
    tagged = key.with_kid(b"another").with_alg(Algorithm.ES256)
    assert tagged.jwk_thumbprint() == key.jwk_thumbprint() == key.public_key().jwk_thumbprint()
    assert Key.generate_ec2(Curve.P_256).jwk_thumbprint() != key.jwk_thumbprint()


def test_symmetric_jwk_thumbprint_rfc7638_members() -> None:
    """RFC 7638 §3.2: an "oct" key's required members are k and kty."""
    key = Key.symmetric(b"\x00" * 16)
    canonical = '{"k":"' + b64u_encode(b"\x00" * 16) + '","kty":"oct"}'
    assert key.jwk_thumbprint() == b64u_encode(hashlib.sha256(canonical.encode()).digest())


# ---- RFC 9679 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("rfc9679_thumbprint.json"), ids=lambda c: c["section"])
def test_rfc9679_cose_thumbprint_vector(case: dict[str, Any]) -> None:
    x, y, kid = (bytes.fromhex(case[n]) for n in ("x", "y", "kid"))
    full = {1: case["kty"], -1: case["crv"], -2: x, -3: y, 2: kid}
    key = Key.from_cose_key(full)
    required = {1: case["kty"], -1: case["crv"], -2: x, -3: y}
    assert cbor.dumps(required).hex() == case["canonical_cbor"], f"{case['section']}: encoding"
    assert key.kid == kid
    assert key.cose_thumbprint().hex() == case["thumbprint"], f"{case['section']} differs"
    # Any order of the input map, and the encoded form, give the same thumbprint.
    reordered = cbor2.dumps(dict(reversed(list(full.items()))))
    assert Key.from_cose_key(reordered).cose_thumbprint().hex() == case["thumbprint"]


def test_cose_thumbprint_okp_and_symmetric_members() -> None:
    """RFC 9679 §4: OKP hashes kty, crv, x; Symmetric hashes kty, k."""
    okp = Key.generate_okp(Curve.ED25519, kid=b"ignored", alg=Algorithm.EDDSA)
    x = okp.to_cose_key()[-2]
    assert okp.cose_thumbprint() == hashlib.sha256(cbor.dumps({1: 1, -1: 6, -2: x})).digest()
    sym = Key.symmetric(b"k" * 16, kid=b"ignored")
    assert sym.cose_thumbprint() == hashlib.sha256(cbor.dumps({1: 4, -1: b"k" * 16})).digest()


# ---- COSE_Key <-> JWK round trips -------------------------------------------------------------


def _same_material(a: Key, b: Key) -> None:
    assert a == b
    assert a.kty == b.kty
    assert a.curve == b.curve
    assert a.kid == b.kid
    assert a.alg == b.alg
    assert a.to_cose_key(include_private=True) == b.to_cose_key(include_private=True)


def test_cose_key_round_trip(any_key: Key) -> None:
    encoded = any_key.to_cose_key_bytes(include_private=True)
    assert cbor.loads(encoded) == any_key.to_cose_key(include_private=True)
    _same_material(Key.from_cose_key(encoded), any_key)
    _same_material(Key.from_cose_key(any_key.to_cose_key(include_private=True)), any_key)


def test_jwk_round_trip(any_key: Key) -> None:
    key = any_key.with_kid(b"text kid")
    jwk = key.to_jwk(include_private=True)
    # An algorithm with no JOSE "alg" name (A128GCM is a JWE "enc" value) is not carried.
    expected = key if key.alg is None or key.alg.value.jose else key.with_alg(None)
    assert ("alg" in jwk) == (expected.alg is not None)
    _same_material(Key.from_jwk(jwk), expected)
    _same_material(Key.from_jwk(json.dumps(jwk)), expected)


def test_cose_to_jwk_to_cose(any_key: Key) -> None:
    """COSE_Key -> Key -> JWK -> Key -> COSE_Key gives the same map (text kids, JOSE algs)."""
    key = any_key.with_kid(b"kid-1")
    if key.alg is not None and not key.alg.value.jose:
        key = key.with_alg(None)
    cose_map = key.to_cose_key(include_private=True)
    via_jwk = Key.from_jwk(Key.from_cose_key(cose_map).to_jwk(include_private=True))
    assert via_jwk.to_cose_key(include_private=True) == cose_map


def test_public_round_trip(asymmetric_key: Key) -> None:
    public = asymmetric_key.public_key()
    assert not public.has_private
    assert Key.from_cose_key(public.to_cose_key()) == public
    assert Key.from_jwk(public.to_jwk()).equals_public(asymmetric_key)


@pytest.mark.parametrize(
    ("name", "kty", "crv", "jose_kty", "size"),
    [
        ("EC2 P-256", 2, 1, "EC", 32),
        ("EC2 P-384", 2, 2, "EC", 48),
        ("OKP Ed25519", 1, 6, "OKP", 32),
        ("OKP X25519", 1, 4, "OKP", 32),
    ],
)
def test_cose_key_layout(name: str, kty: int, crv: int, jose_kty: str, size: int) -> None:
    key = KEY_FACTORIES[name]()
    cose_map = key.to_cose_key(include_private=True)
    assert cose_map[1] == kty
    assert cose_map[-1] == crv
    assert len(cose_map[-2]) == size
    assert len(cose_map[-4]) == size
    assert (len(cose_map[-3]) == size) if kty == 2 else (-3 not in cose_map)
    jwk = key.to_jwk(include_private=True)
    assert jwk["kty"] == jose_kty
    assert len(b64u_decode(jwk["d"])) == size


def test_kid_that_is_not_text_survives_jwk_as_base64url() -> None:
    key = Key.generate_ec2(kid=b"\xff\x00")
    assert key.to_jwk()["kid"] == b64u_encode(b"\xff\x00")


# ---- private parts --------------------------------------------------------------------------


def test_private_parts_only_on_request(asymmetric_key: Key) -> None:
    assert -4 not in asymmetric_key.to_cose_key()
    assert "d" not in asymmetric_key.to_jwk()
    assert -4 in asymmetric_key.to_cose_key(include_private=True)
    assert "d" in asymmetric_key.to_jwk(include_private=True)
    public = asymmetric_key.public_key()
    assert -4 not in public.to_cose_key(include_private=True)
    assert "d" not in public.to_jwk(include_private=True)


def test_symmetric_key_refuses_to_emit_without_include_private() -> None:
    key = Key.generate_symmetric(32, random_bytes=os.urandom)
    with pytest.raises(UnsupportedPopKey):
        key.to_cose_key()
    with pytest.raises(UnsupportedPopKey):
        key.to_cose_key_bytes()
    with pytest.raises(UnsupportedPopKey):
        key.to_jwk()
    with pytest.raises(UnsupportedPopKey):
        key.public_key()
    assert key.to_cose_key(include_private=True)[-1] == key.secret


def test_secrets_stay_out_of_repr() -> None:
    key = Key.symmetric(b"supersecretvalue")
    ec2 = Key.generate_ec2()
    assert "supersecret" not in repr(key)
    assert "private" not in repr(ec2)


# ---- malformed COSE_Keys ----------------------------------------------------------------------

_P256 = Key.generate_ec2(Curve.P_256).to_cose_key(include_private=True)
_OTHER_P256 = Key.generate_ec2(Curve.P_256).to_cose_key(include_private=True)
_ED = Key.generate_okp(Curve.ED25519).to_cose_key(include_private=True)
_OTHER_ED = Key.generate_okp(Curve.ED25519).to_cose_key(include_private=True)


def _with(base: dict[int, Any], **changes: Any) -> dict[int, Any]:
    labels = {"kty": 1, "kid": 2, "alg": 3, "crv": -1, "x": -2, "y": -3, "d": -4, "k": -1}
    out = dict(base)
    for name, value in changes.items():
        if value is None:
            out.pop(labels[name], None)
        else:
            out[labels[name]] = value
    return out


def _off_curve(point: dict[int, Any]) -> dict[int, Any]:
    y = int.from_bytes(point[-3], "big") ^ 1
    return _with(point, y=y.to_bytes(32, "big"), d=None)


MALFORMED_COSE_KEYS: list[tuple[str, Any, type[KeyboundError]]] = [
    ("not a map", [1, 2], DecodeError),
    ("not CBOR", b"\xa4\x01", DecodeError),
    ("CBOR list bytes", cbor2.dumps([1, 2]), DecodeError),
    ("kty missing", _with(_P256, kty=None), DecodeError),
    ("kty as text", _with(_P256, kty="EC2"), DecodeError),
    ("kty bool", _with(_P256, kty=True), DecodeError),
    ("kty RSA", _with(_P256, kty=3), UnsupportedPopKey),
    ("kty unregistered", _with(_P256, kty=99), UnsupportedPopKey),
    ("kid as text", _with(_P256, kid="k"), DecodeError),
    ("crv missing", _with(_P256, crv=None), DecodeError),
    ("crv as text", _with(_P256, crv="P-256"), DecodeError),
    ("crv P-521", _with(_P256, crv=3), UnsupportedPopKey),
    ("crv unregistered", _with(_P256, crv=1000), UnsupportedPopKey),
    ("EC2 with Ed25519 crv", _with(_P256, crv=6), UnsupportedPopKey),
    ("x missing", _with(_P256, x=None), DecodeError),
    ("x as text", _with(_P256, x="AAAA"), DecodeError),
    ("x 31 bytes", _with(_P256, x=_P256[-2][1:]), DecodeError),
    ("x 33 bytes", _with(_P256, x=b"\x00" + _P256[-2]), DecodeError),
    ("y missing (compressed)", _with(_P256, y=None), DecodeError),
    ("y as sign bit", _with(_P256, y=True), DecodeError),
    ("y 48 bytes on P-256", _with(_P256, y=b"\x00" * 16 + _P256[-3]), DecodeError),
    ("point not on curve", _off_curve(_P256), DecodeError),
    ("point at zero", _with(_P256, x=b"\x00" * 32, y=b"\x00" * 32, d=None), DecodeError),
    ("x larger than p", _with(_P256, x=b"\xff" * 32, d=None), DecodeError),
    ("d of another key", _with(_P256, d=_OTHER_P256[-4]), DecodeError),
    ("d wrong length", _with(_P256, d=_P256[-4][1:]), DecodeError),
    ("d as text", _with(_P256, d="d"), DecodeError),
    ("d zero", _with(_P256, d=b"\x00" * 32), DecodeError),
    ("OKP x 31 bytes", _with(_ED, x=_ED[-2][1:], d=None), DecodeError),
    ("OKP x as text", _with(_ED, x="x"), DecodeError),
    ("OKP d of another key", _with(_ED, d=_OTHER_ED[-4]), DecodeError),
    ("OKP d 31 bytes", _with(_ED, d=_ED[-4][1:]), DecodeError),
    ("OKP d as int", _with(_ED, d=5), DecodeError),
    ("OKP crv Ed448", _with(_ED, crv=7, d=None), UnsupportedPopKey),
    ("OKP crv P-256", _with(_ED, crv=1, d=None), UnsupportedPopKey),
    ("symmetric k missing", {1: 4}, DecodeError),
    ("symmetric k as text", {1: 4, -1: "secret"}, DecodeError),
    ("symmetric k empty", {1: 4, -1: b""}, UnsupportedPopKey),
    ("symmetric k 65 bytes", {1: 4, -1: b"k" * 65}, UnsupportedPopKey),
]


@pytest.mark.parametrize(
    ("data", "error"),
    [pytest.param(data, error, id=name) for name, data, error in MALFORMED_COSE_KEYS],
)
def test_malformed_cose_key(data: Any, error: type[KeyboundError]) -> None:
    with pytest.raises(error):
        Key.from_cose_key(data)


def test_malformed_x25519_d_mismatch() -> None:
    x = Key.generate_okp(Curve.X25519).to_cose_key(include_private=True)
    other = Key.generate_okp(Curve.X25519).to_cose_key(include_private=True)
    with pytest.raises(DecodeError):
        Key.from_cose_key(_with(x, d=other[-4]))


_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64 - 1),
    st.binary(max_size=50),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from([1, 2, 3, -1, -2, -3, -4, 4, 5]),
        st.one_of(_scalar, st.sampled_from([1, 2, 4, 6, 32, 48])),
        max_size=7,
    )
)
def test_from_cose_key_only_raises_keybound_errors(mapping: dict[int, Any]) -> None:
    try:
        key = Key.from_cose_key(mapping)
    except KeyboundError:
        return
    assert isinstance(key, Key)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_from_cose_key_bytes_only_raises_keybound_errors(data: bytes) -> None:
    with contextlib.suppress(KeyboundError):
        Key.from_cose_key(data)


# ---- malformed JWKs ---------------------------------------------------------------------------

_EC_JWK = Key.generate_ec2(Curve.P_256).to_jwk(include_private=True)

MALFORMED_JWKS: list[tuple[str, Any, type[KeyboundError]]] = [
    ("not JSON", "{not json", DecodeError),
    ("JSON array", "[1, 2]", DecodeError),
    ("RSA", {"kty": "RSA", "n": "AQAB", "e": "AQAB"}, UnsupportedPopKey),
    ("no crv", {k: v for k, v in _EC_JWK.items() if k != "crv"}, UnsupportedPopKey),
    ("crv P-521", {**_EC_JWK, "crv": "P-521"}, UnsupportedPopKey),
    ("EC with Ed25519 crv", {**_EC_JWK, "crv": "Ed25519"}, UnsupportedPopKey),
    ("kty unknown", {**_EC_JWK, "kty": "XYZ"}, UnsupportedPopKey),
    ("x missing", {k: v for k, v in _EC_JWK.items() if k != "x"}, DecodeError),
    ("x not a string", {**_EC_JWK, "x": 5}, DecodeError),
    ("x padded", {**_EC_JWK, "x": _EC_JWK["x"] + "="}, DecodeError),
    ("x not base64url", {**_EC_JWK, "x": "!!!!"}, DecodeError),
    ("y missing", {k: v for k, v in _EC_JWK.items() if k != "y"}, DecodeError),
    ("d not a string", {**_EC_JWK, "d": 7}, DecodeError),
    ("d of another key", {**_EC_JWK, "d": b64u_encode(_OTHER_P256[-4])}, DecodeError),
    ("kid not a string", {**_EC_JWK, "kid": 1}, DecodeError),
    ("oct without k", {"kty": "oct"}, DecodeError),
    ("oct k empty", {"kty": "oct", "k": ""}, UnsupportedPopKey),
]


@pytest.mark.parametrize(
    ("jwk", "error"), [pytest.param(jwk, error, id=name) for name, jwk, error in MALFORMED_JWKS]
)
def test_malformed_jwk(jwk: Any, error: type[KeyboundError]) -> None:
    with pytest.raises(error):
        Key.from_jwk(jwk)


# ---- PEM ------------------------------------------------------------------------------------

_PEM_KEYS: dict[str, Callable[[], Any]] = {
    "P-256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "P-384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
    "X25519": x25519.X25519PrivateKey.generate,
}


def _pem_private(key: Any, fmt: serialization.PrivateFormat) -> bytes:
    return bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))


def _pem_public(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.mark.parametrize("name", list(_PEM_KEYS))
def test_pem_loading(name: str) -> None:
    private = _PEM_KEYS[name]()
    expected = Key.from_cryptography(private)
    loaded = Key.from_pem(_pem_private(private, serialization.PrivateFormat.PKCS8), kid=b"pem")
    assert loaded.has_private
    assert loaded.kid == b"pem"
    assert loaded.to_cose_key(include_private=True) == expected.with_kid(b"pem").to_cose_key(
        include_private=True
    )
    public = Key.from_pem(_pem_public(private))
    assert not public.has_private
    assert public.equals_public(expected)


def test_pem_sec1_ec_private_key() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = _pem_private(private, serialization.PrivateFormat.TraditionalOpenSSL)
    assert pem.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert Key.from_pem(pem).equals_public(Key.from_cryptography(private))


def test_pem_refusals() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(UnsupportedPopKey):
        Key.from_pem(_pem_private(rsa_key, serialization.PrivateFormat.PKCS8))
    with pytest.raises(UnsupportedPopKey):
        Key.from_pem(_pem_public(rsa_key))
    p521 = ec.generate_private_key(ec.SECP521R1())
    with pytest.raises(UnsupportedPopKey):
        Key.from_pem(_pem_private(p521, serialization.PrivateFormat.PKCS8))
    with pytest.raises(DecodeError):
        Key.from_pem(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DecodeError):
        Key.from_pem(b"garbage")
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"password"),
    )
    with pytest.raises(DecodeError):
        Key.from_pem(encrypted)


# ---- RFC 7800 cnf ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("rfc7800_cnf.json"), ids=lambda c: c["section"])
def test_rfc7800_cnf_jwk_parses(case: dict[str, Any]) -> None:
    jwk = case["claims"]["cnf"]["jwk"]
    key = Key.from_jwk(jwk)
    assert key.kid is None
    if jwk["kty"] == "EC":
        assert (key.kty, key.curve, key.has_private) == (KeyType.EC2, Curve.P_256, False)
        out = key.to_jwk()
        assert (out["x"], out["y"], out["crv"]) == (jwk["x"], jwk["y"], "P-256")
        assert "use" not in out
        assert Key.from_cose_key(key.to_cose_key()) == key
    else:
        assert key.kty == KeyType.SYMMETRIC
        assert key.alg == Algorithm.HMAC_256_256
        assert key.secret == b64u_decode(jwk["k"])
        assert len(key.secret) == 32
        assert key.to_jwk(include_private=True) == jwk
