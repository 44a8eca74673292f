"""The DPoP verifier against its reference: the same answer to every proof (RFC 9449 §4.3).

:func:`keybound.core.dpop.verify_proof` caches imported keys, thumbprints and
normalised ``htu`` values and checks ES* and EdDSA signatures with
``cryptography`` directly. ``tests.helpers.dpop_reference`` is the verifier as
it was before (joserfc on every call, nothing cached). Generated proofs, valid
and mutated in their JOSE header, their claims and their compact form, must
get the same result from both: the same verified proof, or the same error
class, claim and description. ``normalize_htu`` is compared the same way on
generated URIs. ``KEYBOUND_DIFFERENTIAL_CASES`` raises the number of cases.
"""

from __future__ import annotations

import base64
import json
import os
import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, OKPKey, RSAKey

from keybound.core import dpop
from keybound.core.dpop_state import NonceIssuer
from keybound.core.errors import KeyboundError, UseDPoPNonce
from keybound.tools.http.replay_cache import InMemoryReplayCache
from tests.helpers import dpop_reference

CASES = int(os.environ.get("KEYBOUND_DIFFERENTIAL_CASES", "3000"))
URI_CASES = 4 * CASES
NOW = 1_700_000_000
TOKEN = "an-access-token.with~token68/chars="
SERVER_HTUS = (
    "https://rs.example.com/resource",
    "https://RS.example.com:443/a/./b/../resource?q=1",
    "http://[::1]:8080/x%7Ey",
    "https://rs.example.com",
)
ALL_ALGS = ("ES256", "ES384", "ES512", "EdDSA", "RS256", "PS256")
SECRET = b"0123456789abcdef0123456789abcdef"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Signer:
    alg: str
    private: Any
    jwk: dict[str, str]

    def sign(self, data: bytes) -> bytes:
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            hash_alg = {"ES256": hashes.SHA256, "ES384": hashes.SHA384, "ES512": hashes.SHA512}
            r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(hash_alg[self.alg]())))
            size = (self.private.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(self.private, rsa.RSAPrivateKey):
            if self.alg == "PS256":
                pss = padding.PSS(padding.MGF1(hashes.SHA256()), hashes.SHA256().digest_size)
                return self.private.sign(data, pss, hashes.SHA256())
            return self.private.sign(data, padding.PKCS1v15(), hashes.SHA256())
        signature: bytes = self.private.sign(data)
        return signature


def signers() -> list[Signer]:
    found = []
    for alg, curve in (("ES256", "P-256"), ("ES384", "P-384"), ("ES512", "P-521")):
        key = ECKey.generate_key(curve)
        found.append(Signer(alg, key.private_key, dict(key.as_dict(private=False))))
    for curve in ("Ed25519", "Ed448"):
        okp = OKPKey.generate_key(curve)
        raw = okp.private_key
        assert isinstance(raw, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey)
        found.append(Signer("EdDSA", raw, dict(okp.as_dict(private=False))))
    rsa_key = RSAKey.generate_key(2048)
    for alg in ("RS256", "PS256"):
        found.append(Signer(alg, rsa_key.private_key, dict(rsa_key.as_dict(private=False))))
    return found


def flip(rng: random.Random, text: str, alphabet: str) -> str:
    if not text:
        return rng.choice(alphabet)
    i = rng.randrange(len(text))
    return text[:i] + rng.choice(alphabet) + text[i + 1 :]


B64_ALPHABET = string.ascii_letters + string.digits + "-_"
URI_PIECES = (
    "a", "Z", "/", "//", ".", "..", "/./", "/../", "%", "%2", "%7e", "%7E", "%41", "%2F",
    "%zz", "%C3%A9", "é", "~", ":", "::", "@", "[", "]", "?", "#", " ", "\t", "\x7f", "+",
    "443", "80", ":443", ":80", ":99999", ":x", "[::1]", "EXAMPLE", "example.com", "-", "_",
)  # fmt: skip


def random_uri(rng: random.Random) -> str:
    valid = rng.random() < 0.6
    scheme = "https://" if valid else rng.choice(("http://", "HTTPS://", "ftp://", "", "http:///"))
    host = rng.choice(("rs.example.com", "RS.Example.COM", "[::1]", "r%41s", "user@rs", "", "é"))
    if valid:
        host = host if rng.random() < 0.5 else "rs.example.com"
    port = rng.choice(("", "", ":443", ":80", ":8443", ":0", ":65536", ":x"))
    path = "".join(rng.choice(URI_PIECES) for _ in range(rng.randrange(0, 8)))
    if rng.random() < 0.3 and path and not path.startswith("/"):
        path = "/" + path
    return scheme + host + port + path


def mutate_header(rng: random.Random, header: dict[str, Any], signer: Signer) -> dict[str, Any]:
    header = json.loads(json.dumps(header))
    jwk = header["jwk"]
    choice = rng.randrange(22)
    if choice == 0:
        header["typ"] = rng.choice(("jwt", "DPOP+JWT", None, 1))
    elif choice == 1:
        header["alg"] = rng.choice(("none", "NONE", "HS256", "hs512", "RS512", "ES384", "x", 5))
    elif choice == 2:
        del header["jwk"]
    elif choice == 3:
        header["jwk"] = rng.choice(("string", [1], None, {"kty": "oct", "k": "AAAA"}))
    elif choice == 4:
        jwk["d"] = "AAAA"
    elif choice == 5:
        jwk[rng.choice(("p", "q", "k", "oth"))] = "AAAA"
    elif choice == 6:
        jwk.pop(rng.choice(list(jwk)), None)
    elif choice == 7:
        jwk[rng.choice(list(jwk))] = rng.choice((1, None, ["x"], True))
    elif choice == 8:
        jwk["kty"] = rng.choice(("EC", "OKP", "RSA", "ec", "oct", ""))
    elif choice == 9 and "crv" in jwk:
        jwk["crv"] = rng.choice(("P-256", "P-384", "P-521", "Ed25519", "Ed448", "X25519", "p-256"))
    elif choice == 10:
        member = rng.choice([m for m in ("x", "y", "n", "e") if m in jwk])
        jwk[member] = flip(rng, jwk[member], B64_ALPHABET + "+/=")
    elif choice == 11:
        member = rng.choice([m for m in ("x", "y", "n", "e") if m in jwk])
        jwk[member] = rng.choice((jwk[member] + "=", jwk[member][:-1], "A" + jwk[member], ""))
    elif choice == 12:
        header["crit"] = ["b64"]
    elif choice == 13:
        header["b64"] = False
    elif choice == 14:
        jwk["kid"] = "extra members do not matter"
        jwk["use"] = rng.choice(("sig", "enc"))
    elif choice == 15:
        header["extra"] = {"nested": [1, 2, {"a": None}]}
    return header


def mutate_claims(rng: random.Random, claims: dict[str, Any]) -> dict[str, Any]:
    claims = dict(claims)
    choice = rng.randrange(20)
    name = rng.choice(("jti", "htm", "htu", "iat", "ath", "nonce"))
    if choice == 0:
        claims.pop(name, None)
    elif choice == 1:
        claims[name] = rng.choice((None, 1, 1.5, True, "", [], {}, "x" * 200, "x" * 3000))
    elif choice == 2:
        claims["iat"] = rng.choice(
            (NOW - 61, NOW - 60, NOW + 5, NOW + 6, NOW + 0.9, NOW - 60.5, 1e308, -1, NOW * 10)
        )
    elif choice == 3:
        claims["htu"] = random_uri(rng)
    elif choice == 4:
        claims["htm"] = rng.choice(("get", "POST", "GET ", "PUT"))
    elif choice == 5:
        claims["ath"] = flip(rng, claims.get("ath") or "AAAA", B64_ALPHABET)
    elif choice == 6:
        claims["nonce"] = rng.choice(("AAAAA", "", "not base64!", "A" * 32, "x" * 100))
    elif choice == 7:
        claims["jti"] = "j" * rng.choice((127, 128, 129))
    return claims


def dump(rng: random.Random, value: dict[str, Any]) -> bytes:
    """JSON text of ``value``, now and then spoiled where a JSON parser must refuse it."""
    text = json.dumps(value, separators=(",", ":"))
    choice = rng.randrange(100)
    if choice == 0 and text != "{}":
        first = text[1:].split(",", 1)[0]
        text = "{" + first + "," + text[1:]  # a duplicate member
    elif choice == 1:
        text = "\ufeff" + text
    elif choice == 2:
        text = text[:-1] + ',"n":NaN}'
    elif choice == 3:
        text = "[" + text + "]"
    elif choice == 4:
        text = text[: rng.randrange(len(text))]
    elif choice == 5:
        text = text + " "
    elif choice == 6:
        text = '{"a":' * 30 + "1" + "}" * 30
    elif choice == 7:
        return text.encode("utf-8")[:-1] + b"\xff"
    return text.encode("utf-8")


def mutate_compact(rng: random.Random, proof: str) -> str:
    choice = rng.randrange(10)
    if choice == 0:
        return flip(rng, proof, B64_ALPHABET)
    if choice == 1:
        return proof[: rng.randrange(len(proof))]
    if choice == 2:
        return proof + "." + rng.choice(("", "AAAA"))
    if choice == 3:
        head, payload, signature = proof.split(".")
        return ".".join((head, payload, signature[:-1]))
    if choice == 4:
        return proof.replace(".", "..", 1)
    if choice == 5:
        return proof + "="
    if choice == 6:
        return " " + proof
    if choice == 7:
        head, payload, _ = proof.split(".")
        return ".".join((head, payload, rng.choice(("A", "AAAAA", "AA" * 64, b64(bytes(64))))))
    return proof


@dataclass(frozen=True)
class Request:
    """What the server checks a proof against."""

    htm: str
    htu: str
    access_token: str | None
    nonce: bool


def make_case(rng: random.Random, signer: Signer, request: Request) -> str:
    """A proof for ``request``, mostly right, now and then mutated somewhere."""
    header: dict[str, Any] = {"typ": "dpop+jwt", "alg": signer.alg, "jwk": dict(signer.jwk)}
    htu = request.htu if rng.random() < 0.8 else rng.choice(SERVER_HTUS)
    claims: dict[str, Any] = {
        "jti": b64(rng.randbytes(rng.choice((8, 16)))),
        "htm": request.htm if rng.random() < 0.9 else rng.choice(("GET", "POST")),
        "htu": htu + rng.choice(("", "", "", "?q=2", "#frag")),
        "iat": NOW - rng.randrange(0, 40),
    }
    if request.access_token is not None and rng.random() < 0.9:
        claims["ath"] = dpop.access_token_hash(TOKEN if rng.random() < 0.9 else "other")
    if request.nonce and rng.random() < 0.9:
        claims["nonce"] = NonceIssuer(SECRET).issue(NOW - rng.choice((0, 0, 0, 60, 120)))
    if rng.random() < 0.25:
        header = mutate_header(rng, header, signer)
    if rng.random() < 0.3:
        claims = mutate_claims(rng, claims)
    signing_input = b64(dump(rng, header)) + "." + b64(dump(rng, claims))
    proof = signing_input + "." + b64(signer.sign(signing_input.encode("ascii")))
    if rng.random() < 0.1:
        proof = mutate_compact(rng, proof)
    return proof


Outcome = tuple[str, Any]


def outcome(verify: Callable[..., Any], proof: str, **kwargs: Any) -> Outcome:
    try:
        verified = verify(proof, **kwargs)
    except KeyboundError as err:
        return ("refused", (type(err).__name__, err.claim, err.description))
    except ValueError as err:  # the server's own htu
        return ("error", (type(err).__name__, str(err)))
    return (
        "verified",
        (
            verified.jkt,
            verified.jti,
            verified.iat,
            verified.htm,
            verified.htu,
            dict(verified.claims),
            dict(verified.jwk),
        ),
    )


def test_new_and_reference_verifiers_agree_on_generated_proofs() -> None:
    rng = random.Random(9449)
    pool = signers()
    caches = (InMemoryReplayCache(), InMemoryReplayCache())
    counts = {"verified": 0, "refused": 0, "error": 0}
    for _ in range(CASES):
        signer = rng.choice(pool)
        request = Request(
            htm=rng.choice(("GET", "GET", "POST")),
            htu=rng.choice(SERVER_HTUS),
            access_token=TOKEN if rng.random() < 0.5 else None,
            nonce=rng.random() < 0.4,
        )
        proof = make_case(rng, signer, request)
        kwargs: dict[str, Any] = {
            "htm": request.htm,
            "htu": request.htu,
            "now": NOW,
            "access_token": request.access_token,
            "allowed_algs": rng.choice(
                (dpop.DEFAULT_ALGS, ALL_ALGS, ALL_ALGS, ("ES256",), ("EdDSA", "PS256"))
            ),
        }
        if rng.random() < 0.3:
            kwargs["expected_jkt"] = rng.choice((dpop.jwk_thumbprint(signer.jwk), "other-jkt"))
        if request.nonce:
            kwargs["nonce_checker"] = NonceIssuer(SECRET)
        use_cache = rng.random() < 0.5
        for _attempt in range(2 if rng.random() < 0.2 else 1):  # now and then a replay
            new = outcome(
                dpop.verify_proof,
                proof,
                **kwargs,
                **({"replay_cache": caches[0]} if use_cache else {}),
            )
            old = outcome(
                dpop_reference.verify_proof,
                proof,
                **kwargs,
                **({"replay_cache": caches[1]} if use_cache else {}),
            )
            assert new == old, proof
            counts[new[0]] += 1
    # the cases reach both sides of the checks
    assert counts["verified"] > CASES // 10
    assert counts["refused"] > CASES // 4


def test_normalize_htu_agrees_with_the_reference_on_generated_uris() -> None:
    rng = random.Random(3986)
    accepted = 0
    for _ in range(URI_CASES):
        uri = random_uri(rng)
        results = []
        for normalize in (dpop.normalize_htu, dpop_reference.normalize_htu):
            try:
                results.append(("ok", normalize(uri)))
            except ValueError as err:
                results.append(("refused", str(err)))
        assert results[0] == results[1], uri
        accepted += results[0][0] == "ok"
    assert accepted > URI_CASES // 10


@pytest.mark.parametrize("size", [dpop.KEY_CACHE_SIZE, dpop.HTU_CACHE_SIZE])
def test_the_caches_are_bounded(size: int) -> None:
    """Distinct keys and URIs from clients never grow the caches past their bounds."""
    signer = signers()[0]
    key = ECKey.generate_key("P-256")
    for i in range(size + 50):
        htu = f"https://rs.example.com/r{i}"
        fresh = ECKey.generate_key("P-256") if i % 10 == 0 else key
        proof = dpop.create_proof(fresh, "GET", htu, now=NOW, random_bytes=os.urandom)
        dpop.verify_proof(proof, htm="GET", htu=htu, now=NOW)
    assert dpop._cached_htu.cache_info().currsize <= dpop.HTU_CACHE_SIZE
    assert dpop._cached_key.cache_info().currsize <= dpop.KEY_CACHE_SIZE
    assert signer.alg == "ES256"


def test_nonce_checks_agree_with_the_reference() -> None:
    """Nonces of near slots, mutated ones and junk: accepted exactly when the old check did."""
    rng = random.Random(8)
    issuer = NonceIssuer(SECRET, slot_seconds=60)
    other = NonceIssuer(b"another secret of 32 bytes......", slot_seconds=60)
    accepted = 0
    for _ in range(URI_CASES):
        now = NOW + rng.randrange(-300, 300)
        nonce = rng.choice((issuer, issuer, other)).issue(now + rng.choice((0, -60, -120, 60)))
        choice = rng.randrange(6)
        if choice == 0:
            nonce = flip(rng, nonce, B64_ALPHABET + "=+/ \ud800é")
        elif choice == 1:
            nonce = nonce[: rng.randrange(len(nonce) + 1)]
        elif choice == 2:
            nonce = "".join(rng.choice(B64_ALPHABET) for _ in range(rng.randrange(40)))
        if dpop_reference.nonce_accepted(issuer, nonce, now):
            issuer.check(nonce, now)
            accepted += 1
        else:
            with pytest.raises(UseDPoPNonce) as refused:
                issuer.check(nonce, now)
            assert refused.value.nonce == issuer.issue(now)
    assert accepted > URI_CASES // 10
