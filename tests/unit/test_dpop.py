"""DPoP proofs (RFC 9449): the RFC's examples, and one test per refusal of §4.3."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OctKey, OKPKey

from keybound.core.dpop import (
    MAX_PROOF_LENGTH,
    DPoPKeyMismatch,
    VerifiedProof,
    access_token_hash,
    jwk_thumbprint,
    normalize_htu,
    verify_proof,
)
from keybound.core.dpop_state import NonceIssuer, ReplayCacheFull, ReplayedProof
from keybound.core.errors import InvalidDPoPProof, InvalidToken, UseDPoPNonce
from keybound.tools.http.replay_cache import InMemoryReplayCache
from tests.helpers.dpop import create_proof
from tests.helpers.paths import VECTORS

NOW = 1_700_000_000
HTU = "https://rs.example.com/resource"
TOKEN = "an-access-token.with~token68/chars="


def _load_vectors(group: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(VECTORS.glob("rfc9449_*.json")):
        cases.extend(json.loads(path.read_text(encoding="utf-8")).get(group, []))
    return cases


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test id per example title, as the vector files name them."""
    for fixture, group in (
        ("thumbprint_vector", "thumbprints"),
        ("ath_vector", "access_token_hashes"),
        ("proof_vector", "proofs"),
        ("bound_token_vector", "bound_access_tokens"),
    ):
        if fixture in metafunc.fixturenames:
            cases = _load_vectors(group)
            metafunc.parametrize(fixture, cases, ids=[case["title"] for case in cases])


# ---- helpers --------------------------------------------------------------------------------


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def unb64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256")


@pytest.fixture(scope="module")
def other_key() -> ECKey:
    return ECKey.generate_key("P-256")


def claims_for(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"jti": "jti-1", "htm": "GET", "htu": HTU, "iat": NOW}
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign_raw(header: dict[str, Any], claims: dict[str, Any], signing_key: Any, alg: str) -> str:
    """A compact JWS over exactly this header and these claims, with no checks of ours."""
    return jws.serialize_compact(header, json.dumps(claims), signing_key, algorithms=[alg])


def proof_with(key: ECKey, header: dict[str, Any] | None = None, **claim_overrides: Any) -> str:
    base = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    base.update(header or {})
    return sign_raw(base, claims_for(**claim_overrides), key, "ES256")


def refused(proof: str, match: str, **kwargs: Any) -> InvalidDPoPProof:
    params: dict[str, Any] = {"htm": "GET", "htu": HTU, "now": NOW}
    params.update(kwargs)
    with pytest.raises(InvalidDPoPProof, match=match) as info:
        verify_proof(proof, **params)
    return info.value


# ---- RFC 9449 examples ----------------------------------------------------------------------


def test_rfc9449_thumbprint(thumbprint_vector: dict[str, Any]) -> None:
    got = jwk_thumbprint(thumbprint_vector["jwk"])
    assert got == thumbprint_vector["jkt"], f"§{thumbprint_vector['section']} jkt differs"
    assert ECKey.import_key(thumbprint_vector["jwk"]).thumbprint() == got


def test_rfc9449_access_token_hash(ath_vector: dict[str, Any]) -> None:
    got = access_token_hash(ath_vector["access_token"])
    assert got == ath_vector["ath"], f"§{ath_vector['section']} ath differs"


def test_rfc9449_example_proof_verifies(proof_vector: dict[str, Any]) -> None:
    verified = verify_proof(
        proof_vector["proof"],
        htm=proof_vector["htm"],
        htu=proof_vector["htu"],
        now=proof_vector["iat"],
        access_token=proof_vector.get("access_token"),
        expected_jkt=proof_vector["jkt"],
        replay_cache=InMemoryReplayCache(8),
    )
    assert isinstance(verified, VerifiedProof)
    assert (verified.jti, verified.iat, verified.htm, verified.htu) == (
        proof_vector["jti"],
        proof_vector["iat"],
        proof_vector["htm"],
        proof_vector["htu"],
    ), f"§{proof_vector['section']} claims differ"
    assert verified.jkt == proof_vector["jkt"]


def test_rfc9449_example_proof_is_stale_today(proof_vector: dict[str, Any]) -> None:
    with pytest.raises(InvalidDPoPProof, match=r"iat is .* old"):
        verify_proof(
            proof_vector["proof"], htm=proof_vector["htm"], htu=proof_vector["htu"], now=NOW
        )


def test_rfc9449_bound_token_names_the_example_key(bound_token_vector: dict[str, Any]) -> None:
    payload = unb64json(bound_token_vector["jwt"].split(".")[1])
    assert payload == bound_token_vector["claims"]
    thumbprints = {case["jkt"] for case in _load_vectors("thumbprints")}
    assert payload["cnf"]["jkt"] in thumbprints


# ---- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        ("ES256", lambda: ECKey.generate_key("P-256")),
        ("ES384", lambda: ECKey.generate_key("P-384")),
        ("EdDSA", lambda: OKPKey.generate_key("Ed25519")),
    ],
)
def test_round_trip(alg: str, make_key: Any) -> None:
    signer = make_key()
    proof = create_proof(
        signer, "POST", HTU + "?q=1#frag", now=NOW, access_token=TOKEN, nonce="n-1", alg=alg
    )
    verified = verify_proof(
        proof,
        htm="POST",
        htu=HTU,
        now=NOW,
        access_token=TOKEN,
        expected_jkt=signer.thumbprint(),
    )
    assert verified.jkt == signer.thumbprint()
    assert verified.claims["htu"] == HTU
    assert verified.claims["ath"] == access_token_hash(TOKEN)
    assert verified.claims["nonce"] == "n-1"
    assert len(verified.jti) >= 16
    assert "d" not in verified.jwk


def test_create_proof_random_jti_differs(key: ECKey) -> None:
    first = verify_proof(create_proof(key, "GET", HTU, now=NOW), htm="GET", htu=HTU, now=NOW)
    second = verify_proof(create_proof(key, "GET", HTU, now=NOW), htm="GET", htu=HTU, now=NOW)
    assert first.jti != second.jti


def test_create_proof_needs_private_key_and_asymmetric_alg(key: ECKey) -> None:
    public = ECKey.import_key(key.as_dict(private=False))
    with pytest.raises(ValueError, match="private key"):
        create_proof(public, "GET", HTU, now=NOW)
    with pytest.raises(ValueError, match="asymmetric"):
        create_proof(key, "GET", HTU, now=NOW, alg="HS256")
    with pytest.raises(ValueError, match="cannot sign"):
        create_proof(key, "GET", HTU, now=NOW, alg="ES384")


def test_allow_list_cannot_hold_none_or_hmac(key: ECKey) -> None:
    proof = create_proof(key, "GET", HTU, now=NOW)
    for alg in ("none", "HS256"):
        with pytest.raises(ValueError, match="not an asymmetric"):
            verify_proof(proof, htm="GET", htu=HTU, now=NOW, allowed_algs=("ES256", alg))


# ---- refusals: the JWS and its header (RFC 9449 §4.3 checks 2, 4–7) -------------------------


def test_refuses_oversized_proof(key: ECKey) -> None:
    proof = proof_with(key, padding="x" * MAX_PROOF_LENGTH)
    refused(proof, "longer than 8192")


def test_refuses_what_is_not_a_single_compact_jws(key: ECKey) -> None:
    proof = create_proof(key, "GET", HTU, now=NOW)
    refused(proof + ".AAAA.BBBB", "not a single JWS")
    refused(proof.rsplit(".", 1)[0] + ".", "not a single JWS")
    refused(proof + " " + proof, "not a single JWS")
    refused(json.dumps({"payload": "x", "signatures": []}), "not a single JWS")


def test_refuses_duplicate_json_members(key: ECKey) -> None:
    header = b64(b'{"typ":"dpop+jwt","typ":"jwt","alg":"ES256"}')
    refused(f"{header}.{b64json(claims_for())}.AAAA", "duplicate member")


def test_refuses_wrong_typ(key: ECKey) -> None:
    refused(proof_with(key, {"typ": "JWT"}), "typ header is 'JWT'")
    refused(proof_with(key, {"typ": "at+jwt"}), "typ header")


def test_refuses_missing_typ(key: ECKey) -> None:
    header = {"alg": "ES256", "jwk": key.as_dict(private=False)}
    refused(sign_raw(header, claims_for(), key, "ES256"), "typ header is None")


def test_refuses_alg_none(key: ECKey) -> None:
    header = {"typ": "dpop+jwt", "alg": "none", "jwk": key.as_dict(private=False)}
    refused(f"{b64json(header)}.{b64json(claims_for())}.AAAA", "alg 'none' is never accepted")


def test_refuses_hmac_alg(key: ECKey) -> None:
    # The classic confusion: an HMAC "signed" with the public key's bytes.
    public_jwk = key.as_dict(private=False)
    secret = OctKey.import_key(json.dumps(public_jwk).encode("utf-8"))
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": public_jwk}
    refused(sign_raw(header, claims_for(), secret, "HS256"), "symmetric alg 'HS256'")


def test_refuses_alg_outside_allow_list() -> None:
    signer = ECKey.generate_key("P-521")
    proof = create_proof(signer, "GET", HTU, now=NOW, alg="ES512")
    refused(proof, "alg 'ES512' is not allowed")
    verify_proof(proof, htm="GET", htu=HTU, now=NOW, allowed_algs=("ES512",))


def test_refuses_crit_header(key: ECKey) -> None:
    header = {
        "typ": "dpop+jwt",
        "alg": "ES256",
        "jwk": key.as_dict(private=False),
        "crit": ["b64"],
        "b64": True,
    }
    refused(sign_raw(header, claims_for(), key, "ES256"), "crit, b64")


def test_refuses_missing_jwk(key: ECKey) -> None:
    header = {"typ": "dpop+jwt", "alg": "ES256"}
    refused(sign_raw(header, claims_for(), key, "ES256"), "jwk header is missing")


def test_refuses_private_key_in_jwk(key: ECKey) -> None:
    refused(proof_with(key, {"jwk": key.as_dict(private=True)}), r"private key material \(d\)")


def test_refuses_symmetric_jwk(key: ECKey) -> None:
    oct_jwk = OctKey.generate_key(256).as_dict(private=True)
    refused(proof_with(key, {"jwk": oct_jwk}), r"symmetric \(oct\) key")


def test_refuses_jwk_of_wrong_type_for_alg(key: ECKey) -> None:
    okp_jwk = OKPKey.generate_key("Ed25519").as_dict(private=False)
    refused(proof_with(key, {"jwk": okp_jwk}), "needs a EC key")
    p384_jwk = ECKey.generate_key("P-384").as_dict(private=False)
    refused(proof_with(key, {"jwk": p384_jwk}), "cannot use curve 'P-384'")


def test_refuses_jwk_off_the_curve(key: ECKey) -> None:
    jwk = dict(key.as_dict(private=False))
    jwk["y"] = jwk["x"]
    refused(proof_with(key, {"jwk": jwk}), "not a usable public key|does not verify")


def test_refuses_bad_signature(key: ECKey, other_key: ECKey) -> None:
    # Signed by other_key while the header names key.
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    refused(sign_raw(header, claims_for(), other_key, "ES256"), "signature does not verify")


def test_refuses_tampered_claims(key: ECKey) -> None:
    header_segment, _, signature = create_proof(key, "GET", HTU, now=NOW).split(".")
    forged = f"{header_segment}.{b64json(claims_for(htm='DELETE'))}.{signature}"
    refused(forged, "signature does not verify", htm="DELETE")


# ---- refusals: the claims (RFC 9449 §4.3 checks 3, 8, 9, 11, 12) ----------------------------


def test_refuses_missing_jti(key: ECKey) -> None:
    refused(proof_with(key, jti=None), "jti claim is missing")


def test_refuses_oversized_jti(key: ECKey) -> None:
    refused(proof_with(key, jti="j" * 129), "jti claim is longer than 128")


def test_refuses_missing_htm_htu_iat(key: ECKey) -> None:
    refused(proof_with(key, htm=None), "htm claim is missing")
    refused(proof_with(key, htu=None), "htu claim is missing")
    refused(proof_with(key, iat=None), "iat claim is missing")
    refused(proof_with(key, iat="1700000000"), "iat claim is not a NumericDate")


def test_refuses_htm_mismatch(key: ECKey) -> None:
    refused(create_proof(key, "GET", HTU, now=NOW), "htm 'GET' does not match", htm="POST")
    refused(create_proof(key, "get", HTU, now=NOW), "htm 'get' does not match")


@pytest.mark.parametrize(
    "proof_htu",
    [
        "https://other-rs.example.com/resource",
        "https://rs.example.com/other",
        "https://rs.example.com/resource/more",
        "http://rs.example.com/resource",
        "https://rs.example.com:8443/resource",
        "urn:example:resource",
    ],
)
def test_refuses_htu_mismatch(key: ECKey, proof_htu: str) -> None:
    refused(create_proof(key, "GET", proof_htu, now=NOW), "htu")


@pytest.mark.parametrize(
    "proof_htu",
    [
        "https://rs.example.com/resource?a=b",
        "https://rs.example.com/resource#fragment",
        "HTTPS://RS.Example.COM:443/resource",
        "https://rs.example.com/%72esource",
        "https://rs.example.com/x/../resource",
    ],
)
def test_accepts_equivalent_htu(key: ECKey, proof_htu: str) -> None:
    # create_proof drops query and fragment itself; sign these raw to be sure the verifier does too.
    verified = verify_proof(proof_with(key, htu=proof_htu), htm="GET", htu=HTU + "?c=d", now=NOW)
    assert verified.htu == HTU


def test_refuses_iat_too_old(key: ECKey) -> None:
    proof = create_proof(key, "GET", HTU, now=NOW - 61)
    refused(proof, "iat is 61 s old, more than 60 s")
    verify_proof(create_proof(key, "GET", HTU, now=NOW - 60), htm="GET", htu=HTU, now=NOW)


def test_refuses_iat_in_the_future(key: ECKey) -> None:
    refused(create_proof(key, "GET", HTU, now=NOW + 6), "iat is 6 s in the future")
    verify_proof(create_proof(key, "GET", HTU, now=NOW + 5), htm="GET", htu=HTU, now=NOW)


def test_refuses_ath_mismatch(key: ECKey) -> None:
    proof = create_proof(key, "GET", HTU, now=NOW, access_token="another-token")
    refused(proof, "ath does not match", access_token=TOKEN)


def test_refuses_missing_ath_when_token_presented(key: ECKey) -> None:
    refused(create_proof(key, "GET", HTU, now=NOW), "ath claim is missing", access_token=TOKEN)


def test_refuses_jkt_mismatch(key: ECKey, other_key: ECKey) -> None:
    proof = create_proof(key, "GET", HTU, now=NOW, access_token=TOKEN)
    with pytest.raises(DPoPKeyMismatch, match="Invalid DPoP key binding") as info:
        verify_proof(
            proof,
            htm="GET",
            htu=HTU,
            now=NOW,
            access_token=TOKEN,
            expected_jkt=other_key.thumbprint(),
        )
    assert isinstance(info.value, InvalidToken)
    assert info.value.error == "invalid_token"
    assert info.value.http_status == 401


# ---- nonces (RFC 9449 §8, §9, §11.3) --------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"


def test_nonce_required(key: ECKey) -> None:
    issuer = NonceIssuer(SECRET, slot_seconds=60)
    with pytest.raises(UseDPoPNonce, match="requires a nonce") as info:
        verify_proof(
            create_proof(key, "GET", HTU, now=NOW),
            htm="GET",
            htu=HTU,
            now=NOW,
            nonce_checker=issuer,
        )
    assert info.value.nonce == issuer.issue(NOW)
    assert info.value.http_status == 401
    proof = create_proof(key, "GET", HTU, now=NOW, nonce=info.value.nonce)
    verified = verify_proof(proof, htm="GET", htu=HTU, now=NOW, nonce_checker=issuer)
    assert verified.claims["nonce"] == info.value.nonce


def test_stale_nonce(key: ECKey) -> None:
    issuer = NonceIssuer(SECRET, slot_seconds=60)
    old = issuer.issue(NOW - 120)
    proof = create_proof(key, "GET", HTU, now=NOW, nonce=old)
    with pytest.raises(UseDPoPNonce, match="stale or invalid") as info:
        verify_proof(proof, htm="GET", htu=HTU, now=NOW, nonce_checker=issuer)
    assert info.value.nonce == issuer.issue(NOW)


def test_nonce_from_another_server(key: ECKey) -> None:
    ours = NonceIssuer(SECRET)
    theirs = NonceIssuer(b"another secret of 32 bytes......")
    proof = create_proof(key, "GET", HTU, now=NOW, nonce=theirs.issue(NOW))
    with pytest.raises(UseDPoPNonce, match="stale or invalid"):
        verify_proof(proof, htm="GET", htu=HTU, now=NOW, nonce_checker=ours)


def test_nonce_issuer_slots() -> None:
    issuer = NonceIssuer(SECRET, slot_seconds=60)
    slot_start = NOW - NOW % 60
    nonce = issuer.issue(slot_start)
    assert issuer.issue(slot_start + 59) == nonce
    issuer.check(nonce, slot_start + 119)  # the previous slot is still good
    with pytest.raises(UseDPoPNonce):
        issuer.check(nonce, slot_start + 120)
    # "AAAAA": base64url characters of a length no encoding has (5 = 1 mod 4);
    # "\ud800": a lone surrogate, which a JSON string can carry
    junks = ("", "not base64!", "A" * 32, nonce[:-2], nonce + "AA", "x" * 1000, "AAAAA", "\ud800")
    for junk in junks:
        with pytest.raises(UseDPoPNonce):
            issuer.check(junk, slot_start)
    with pytest.raises(ValueError, match="16 bytes"):
        NonceIssuer(b"short")


def test_nonce_issuer_keeps_few_slots_and_the_same_nonces() -> None:
    """The nonces of recent slots are kept computed; a long run of slots keeps only a few."""
    issuer = NonceIssuer(SECRET, slot_seconds=1)
    fresh = NonceIssuer(SECRET, slot_seconds=1)
    for second in range(100):
        assert issuer.issue(second) == fresh._nonce_for_slot(second)
        issuer.check(issuer.issue(second), second)
    assert len(issuer._recent) <= 4


# ---- replay (RFC 9449 §11.1) ----------------------------------------------------------------


def test_refuses_replayed_jti(key: ECKey) -> None:
    cache = InMemoryReplayCache(16)
    proof = create_proof(key, "GET", HTU, now=NOW)
    verify_proof(proof, htm="GET", htu=HTU, now=NOW, replay_cache=cache)
    with pytest.raises(ReplayedProof, match="already used"):
        verify_proof(proof, htm="GET", htu=HTU, now=NOW + 1, replay_cache=cache)
    # A fresh proof with the same jti is refused as well: the jti is what counts.
    again = create_proof(key, "GET", HTU, now=NOW + 2, jti=unb64json(proof.split(".")[1])["jti"])
    with pytest.raises(ReplayedProof):
        verify_proof(again, htm="GET", htu=HTU, now=NOW + 2, replay_cache=cache)


def test_refused_proof_leaves_no_replay_entry(key: ECKey) -> None:
    cache = InMemoryReplayCache(16)
    proof = create_proof(key, "GET", HTU, now=NOW, access_token="other")
    with pytest.raises(InvalidDPoPProof):
        verify_proof(proof, htm="GET", htu=HTU, now=NOW, access_token=TOKEN, replay_cache=cache)
    assert len(cache) == 0


def test_replay_across_resource_servers_is_refused_by_htu(key: ECKey) -> None:
    """RFC 9449 §11.1: a proof captured at RS A is useless at RS B, whose cache never saw it."""
    rs_a, rs_b = "https://a.example.com/data", "https://b.example.com/data"
    cache_a, cache_b = InMemoryReplayCache(16), InMemoryReplayCache(16)
    proof = create_proof(key, "GET", rs_a, now=NOW, access_token=TOKEN)
    verify_proof(proof, htm="GET", htu=rs_a, now=NOW, access_token=TOKEN, replay_cache=cache_a)
    with pytest.raises(InvalidDPoPProof, match=r"htu .* does not match"):
        verify_proof(proof, htm="GET", htu=rs_b, now=NOW, access_token=TOKEN, replay_cache=cache_b)
    assert len(cache_b) == 0
    with pytest.raises(ReplayedProof):
        verify_proof(proof, htm="GET", htu=rs_a, now=NOW, access_token=TOKEN, replay_cache=cache_a)


def test_replay_cache_keys_by_target_uri() -> None:
    cache = InMemoryReplayCache(4)
    cache.check_and_store("https://a.example.com/x", "j", NOW + 60, NOW)
    cache.check_and_store("https://b.example.com/x", "j", NOW + 60, NOW)
    with pytest.raises(ReplayedProof):
        cache.check_and_store("https://a.example.com/x", "j", NOW + 60, NOW)


def test_replay_cache_evicts_expired_then_refuses() -> None:
    cache = InMemoryReplayCache(2)
    cache.check_and_store("k", "a", NOW + 10, NOW)
    cache.check_and_store("k", "b", NOW + 60, NOW)
    with pytest.raises(ReplayCacheFull, match="holds 2 unexpired") as info:
        cache.check_and_store("k", "c", NOW + 60, NOW + 10)
    assert info.value.http_status == 503
    cache.check_and_store("k", "c", NOW + 71, NOW + 11)  # "a" expired and made room
    assert len(cache) == 2
    with pytest.raises(ReplayedProof):
        cache.check_and_store("k", "b", NOW + 71, NOW + 11)
    with pytest.raises(ReplayCacheFull):  # "b" and "c" are both unexpired
        cache.check_and_store("k", "d", NOW + 72, NOW + 12)
    cache.check_and_store("k", "a", NOW + 121, NOW + 61)  # "b" expired; "a" may come back
    assert len(cache) == 2


def test_full_replay_cache_refuses_proofs(key: ECKey) -> None:
    cache = InMemoryReplayCache(1)
    verify_proof(
        create_proof(key, "GET", HTU, now=NOW), htm="GET", htu=HTU, now=NOW, replay_cache=cache
    )
    with pytest.raises(ReplayCacheFull):
        verify_proof(
            create_proof(key, "GET", HTU, now=NOW), htm="GET", htu=HTU, now=NOW, replay_cache=cache
        )


# ---- htu normalisation (RFC 3986 §6.2.2, §6.2.3) --------------------------------------------


@pytest.mark.parametrize(
    ("given", "normal"),
    [
        ("HTTPS://Example.COM", "https://example.com/"),
        ("https://example.com:443/a", "https://example.com/a"),
        ("http://example.com:80/a", "http://example.com/a"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://example.com/%7euser/%2f", "https://example.com/~user/%2F"),
        ("https://example.com/a/./b/../c", "https://example.com/a/c"),
        ("https://example.com/a?x=1#y", "https://example.com/a"),
        ("https://[::1]:8443/a", "https://[::1]:8443/a"),
        ("https://example.com/caf\u00e9", "https://example.com/caf%C3%A9"),
    ],
)
def test_normalize_htu(given: str, normal: str) -> None:
    assert normalize_htu(given) == normal


@pytest.mark.parametrize(
    "bad",
    [
        "ftp://example.com/a",
        "https:///a",
        "https://user:pw@example.com/a",
        "https://example.com/%zz",
        "https://example.com:99999/a",
        "https://exa\tmple.com/a",
        "https://example.com/" + "a" * 3000,
    ],
)
def test_normalize_htu_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_htu(bad)


def test_jwk_thumbprint_refuses_unknown_key_types() -> None:
    with pytest.raises(ValueError, match="unsupported JWK key type"):
        jwk_thumbprint({"kty": "XYZ"})
    with pytest.raises(ValueError, match="'y' is missing"):
        jwk_thumbprint({"kty": "EC", "crv": "P-256", "x": "AA"})
