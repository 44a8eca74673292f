"""RFC 8392 Appendix A: every example decodes and verifies; A.4 and A.5 re-encode byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from keybound.core import cwt
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.token import AccessToken
from tests.helpers.paths import load_vectors

VECTORS = load_vectors("rfc8392_appendix_a.json")
A1_CLAIMS = bytes.fromhex(VECTORS["claims"]["A.1 Example CWT Claims Set"])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "example" in metafunc.fixturenames:
        tokens = VECTORS["tokens"]
        if metafunc.function.__name__.endswith("_deterministic"):
            tokens = [t for t in tokens if t["deterministic"]]
        metafunc.parametrize("example", tokens, ids=[t["section"] for t in tokens])


def _expected_a1() -> AccessToken:
    return AccessToken(
        iss="coap://as.example.com",
        sub="erikw",
        aud=("coap://light.example.com",),
        exp=1444064944,
        nbf=1443944944,
        iat=1443944944,
        cti=bytes.fromhex("0b71"),
    )


def test_decodes_and_verifies(example: dict[str, Any], a2_keys: dict[str, Key]) -> None:
    keys = [a2_keys[name] for name in example["keys"]]
    decoded = cwt.decode(bytes.fromhex(example["hex"]), keys)
    layers = [(layer.kind.name, layer.alg.value.name, layer.kid) for layer in decoded.layers]
    expected_layers = [(k, a, kid.encode()) for k, a, kid in example["layers"]]
    assert layers == expected_layers, f"{example['section']}: layers differ"
    assert decoded.cwt_tag == example["cwt_tag"], example["section"]
    if "iat" in example:
        assert decoded.token.iat == example["iat"], f"{example['section']}: iat"
    else:
        assert decoded.token == _expected_a1(), f"{example['section']}: claims differ"


def test_reencodes_deterministic(example: dict[str, Any], a2_keys: dict[str, Key]) -> None:
    (key,) = [a2_keys[name] for name in example["keys"]]
    token = _expected_a1()
    assert token.to_cwt_payload() == A1_CLAIMS, "A.1 claims set does not re-encode"
    protection: cwt.Protection
    if "iv" in example:
        protection = cwt.Encrypt0(key, Algorithm.AES_CCM_16_64_128, iv=bytes.fromhex(example["iv"]))
    else:
        protection = cwt.Mac0(key, Algorithm.HMAC_256_64)
    encoded = cwt.encode(token, protection, cwt_tag=example["cwt_tag"])
    assert encoded.hex() == example["hex"], f"{example['section']}: bytes differ"


def test_a3_with_the_public_key_only(a2_keys: dict[str, Key]) -> None:
    signer = a2_keys[
        "A.2.3 Elliptic Curve Digital Signature Algorithm (ECDSA) P-256 256-Bit COSE Key"
    ]
    a3 = next(t for t in VECTORS["tokens"] if t["section"].startswith("A.3"))
    decoded = cwt.decode(bytes.fromhex(a3["hex"]), signer.public_key())
    assert decoded.token.sub == "erikw"


def test_a6_needs_both_keys(a2_keys: dict[str, Key]) -> None:
    from keybound.core.errors import KeyNotFound

    a6 = next(t for t in VECTORS["tokens"] if t["section"].startswith("A.6"))
    with pytest.raises(KeyNotFound):
        cwt.decode(bytes.fromhex(a6["hex"]), a2_keys["A.2.1 128-Bit Symmetric Key"])
