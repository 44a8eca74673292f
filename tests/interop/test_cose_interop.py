"""COSE interoperability: keybound against pycose, python-cwt and the cose-wg Examples.

Every kind of message keybound emits must verify (or decrypt) with pycose and
with python-cwt's COSE layer, and what they emit must verify with keybound.
Where a library lacks an algorithm the pair is skipped with the reason.

The cose-wg Examples (``tests/vectors/cose-wg``) are loaded one test per
example title: keybound must verify every passing example it can take, refuse
every failing one, and re-encode the deterministic ones byte for byte when the
example's header layout is the one keybound writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.exceptions import InvalidTag
from cwt import COSE, COSEKey, CWTError
from pycose.algorithms import CoseAlgorithm
from pycose.headers import IV, KID
from pycose.headers import Algorithm as PycoseAlgHeader
from pycose.keys import CoseKey
from pycose.messages import CoseMessage, Enc0Message, Mac0Message, Sign1Message

from keybound.core import cbor, cose
from keybound.core.errors import AlgorithmNotAllowed, BadSignature, KeyboundError
from keybound.core.keys import Key, b64u_encode
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_headers import CoseTag
from tests.helpers import cose as cose_support
from tests.helpers.cose import verifier
from tests.helpers.paths import VECTORS

PAYLOAD = b"keybound interop payload"
AAD = b"external aad"
KID_VALUE = b"interop-kid"
ALL_ALGORITHMS = cose.SIGNATURE_ALGORITHMS | cose.MAC_ALGORITHMS | cose.AEAD_ALGORITHMS
ALGS = sorted(ALL_ALGORITHMS, key=lambda a: a.name)
KIND_TAG = {"sign": CoseTag.SIGN1, "mac": CoseTag.MAC0, "aead": CoseTag.ENCRYPT0}

#: Algorithms a peer library does not implement, with the reason the pair is skipped.
PYCOSE_LACKS = {
    Algorithm.CHACHA20_POLY1305: "pycose 1.1 has no ChaCha20/Poly1305 (COSE algorithm 24)",
}
CWT_LACKS: dict[Algorithm, str] = {}


def key_for(alg: Algorithm) -> Key:
    return cose_support.key_for(alg, kid=KID_VALUE)


def emit(alg: Algorithm, key: Key, payload: bytes = PAYLOAD, **kwargs: Any) -> bytes:
    return cose_support.emit(alg, key, payload, **kwargs)


def pycose_key(key: Key, alg: Algorithm) -> Any:
    mapping = key.to_cose_key(include_private=True)
    mapping[3] = alg.id
    return CoseKey.from_dict(mapping)


def cwt_key(key: Key, alg: Algorithm) -> Any:
    mapping = key.to_cose_key(include_private=True)
    mapping[3] = alg.id
    return COSEKey.new(mapping)


def _skip_if_lacking(table: dict[Algorithm, str], alg: Algorithm) -> None:
    if alg in table:
        pytest.skip(table[alg])


@pytest.fixture(params=ALGS, ids=[a.name for a in ALGS])
def alg(request: pytest.FixtureRequest) -> Algorithm:
    return request.param  # type: ignore[no-any-return]


# ---- keybound -> pycose / python-cwt ---------------------------------------------------------


def test_keybound_to_pycose(alg: Algorithm) -> None:
    _skip_if_lacking(PYCOSE_LACKS, alg)
    key = key_for(alg)
    message = CoseMessage.decode(emit(alg, key, external_aad=AAD))
    message.key = pycose_key(verifier(key), alg)
    message.external_aad = AAD
    assert message.get_attr(KID) == KID_VALUE
    if alg.kind == "sign":
        assert isinstance(message, Sign1Message)
        assert message.verify_signature() is True
        assert message.payload == PAYLOAD
    elif alg.kind == "mac":
        assert isinstance(message, Mac0Message)
        assert message.verify_tag() is True
        assert message.payload == PAYLOAD
    else:
        assert isinstance(message, Enc0Message)
        assert message.decrypt() == PAYLOAD


def test_keybound_to_pycose_detects_other_aad(alg: Algorithm) -> None:
    """A control: pycose really checks what keybound protected."""
    _skip_if_lacking(PYCOSE_LACKS, alg)
    key = key_for(alg)
    message = CoseMessage.decode(emit(alg, key, external_aad=AAD))
    message.key = pycose_key(verifier(key), alg)
    message.external_aad = b"other"
    if alg.kind == "sign":
        assert message.verify_signature() is False
    elif alg.kind == "mac":
        assert message.verify_tag() is False
    else:
        with pytest.raises(InvalidTag):
            message.decrypt()


def test_keybound_to_cwt(alg: Algorithm) -> None:
    _skip_if_lacking(CWT_LACKS, alg)
    key = key_for(alg)
    message = emit(alg, key, external_aad=AAD)
    protected, unprotected, payload = COSE.new().decode_with_headers(
        message, cwt_key(verifier(key), alg), external_aad=AAD
    )
    assert payload == PAYLOAD
    assert protected == {1: alg.id}
    assert unprotected[4] == KID_VALUE


def test_keybound_to_cwt_detects_other_aad(alg: Algorithm) -> None:
    _skip_if_lacking(CWT_LACKS, alg)
    key = key_for(alg)
    message = emit(alg, key, external_aad=AAD)
    with pytest.raises(CWTError):  # VerifyError for signatures and MACs, DecodeError for AEAD
        COSE.new().decode(message, cwt_key(verifier(key), alg), external_aad=b"other")


# ---- pycose / python-cwt -> keybound ---------------------------------------------------------


def test_pycose_to_keybound(alg: Algorithm) -> None:
    _skip_if_lacking(PYCOSE_LACKS, alg)
    key = key_for(alg)
    phdr = {PycoseAlgHeader: CoseAlgorithm.from_id(alg.id)}
    uhdr: dict[Any, Any] = {KID: KID_VALUE}
    message: Any
    if alg.kind == "sign":
        message = Sign1Message(phdr=phdr, uhdr=uhdr, payload=PAYLOAD, external_aad=AAD)
    elif alg.kind == "mac":
        message = Mac0Message(phdr=phdr, uhdr=uhdr, payload=PAYLOAD, external_aad=AAD)
    else:
        uhdr[IV] = bytes(range(alg.iv_bytes))
        message = Enc0Message(phdr=phdr, uhdr=uhdr, payload=PAYLOAD, external_aad=AAD)
    message.key = pycose_key(key, alg)
    encoded = message.encode()
    out = cose.decode(encoded, verifier(key), allowed={alg}, external_aad=AAD)
    assert (out.payload, out.alg, out.kid) == (PAYLOAD, alg, KID_VALUE)
    with pytest.raises(BadSignature):
        cose.decode(encoded, verifier(key), allowed={alg}, external_aad=b"other")


def test_cwt_to_keybound(alg: Algorithm) -> None:
    _skip_if_lacking(CWT_LACKS, alg)
    key = key_for(alg)
    unprotected: dict[int, Any] = {4: KID_VALUE}
    if alg.kind == "aead":
        unprotected[5] = bytes(range(alg.iv_bytes))
    encoded = COSE.new().encode(
        PAYLOAD,
        cwt_key(key, alg),
        protected={1: alg.id},
        unprotected=unprotected,
        external_aad=AAD,
    )
    out = cose.decode(encoded, verifier(key), allowed={alg}, external_aad=AAD)
    assert (out.payload, out.alg, out.kid, out.kind) == (
        PAYLOAD,
        alg,
        KID_VALUE,
        KIND_TAG[alg.kind],
    )
    with pytest.raises(BadSignature):
        cose.decode(encoded, verifier(key), allowed={alg}, external_aad=b"other")


def test_deterministic_messages_are_identical_across_libraries() -> None:
    """With the same key, headers and IV, keybound and python-cwt write the same bytes."""
    for alg in (Algorithm.HMAC_256_64, Algorithm.AES_CCM_16_64_128, Algorithm.EDDSA):
        key = key_for(alg)
        iv = bytes(range(alg.iv_bytes)) if alg.kind == "aead" else None
        mine = emit(alg, key, **({"iv": iv} if iv else {}))
        unprotected: dict[int, Any] = {4: KID_VALUE, **({5: iv} if iv else {})}
        theirs = COSE.new().encode(
            PAYLOAD, cwt_key(key, alg), protected={1: alg.id}, unprotected=unprotected
        )
        assert mine == theirs, alg.name


# ---- cose-wg Examples -------------------------------------------------------------------------

COSE_WG = VECTORS / "cose-wg"

#: cose-wg algorithm names -> keybound algorithms. Names keybound lacks map to None.
COSE_WG_ALGS: dict[str, Algorithm | None] = {
    "ES256": Algorithm.ES256,
    "ES384": Algorithm.ES384,
    "EdDSA": Algorithm.EDDSA,
    "HS256": Algorithm.HMAC_256_256,
    "HS256/64": Algorithm.HMAC_256_64,
    "A128GCM": Algorithm.A128GCM,
    "A256GCM": Algorithm.A256GCM,
    "AES-CCM-16-128/64": Algorithm.AES_CCM_16_64_128,
    "AES-CCM-16-128/128": Algorithm.AES_CCM_16_128_128,
    "ChaCha-Poly1305": Algorithm.CHACHA20_POLY1305,
}
_KINDS = {"sign0": CoseTag.SIGN1, "mac0": CoseTag.MAC0, "encrypted": CoseTag.ENCRYPT0}


def _example_files() -> list[Path]:
    return sorted(COSE_WG.rglob("*.json"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cose_wg_example" in metafunc.fixturenames:
        examples = [json.loads(path.read_text()) for path in _example_files()]
        metafunc.parametrize(
            "cose_wg_example", examples, ids=[example["title"] for example in examples]
        )


def _jwk_from_example(spec: dict[str, Any]) -> Key:
    """The example's key as a JWK; ``x_hex`` style members become base64url members."""
    jwk = {k: v for k, v in spec.items() if not k.endswith("_hex") and k != "use"}
    for name in ("x", "y", "d", "k"):
        if f"{name}_hex" in spec:
            jwk[name] = b64u_encode(bytes.fromhex(spec[f"{name}_hex"]))
    return Key.from_jwk(jwk)


class Example:
    """What a cose-wg example asks of keybound."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.title: str = data["title"]
        self.fail: bool = bool(data.get("fail"))
        inputs = data["input"]
        (kind_name,) = (name for name in _KINDS if name in inputs)
        self.kind = _KINDS[kind_name]
        layer = inputs[kind_name]
        key_spec = layer["key"] if "key" in layer else layer["recipients"][0]["key"]
        self.key = _jwk_from_example(key_spec)
        self.plaintext: bytes = inputs["plaintext"].encode()
        self.external = bytes.fromhex(layer.get("external", ""))
        self.output = bytes.fromhex(data["output"]["cbor"])
        self.failures: dict[str, Any] = inputs.get("failures", {})
        protected = layer.get("protected", {})
        alg_name = protected.get("alg") or layer.get("unprotected", {}).get("alg")
        self.alg = COSE_WG_ALGS.get(alg_name)
        self.alg_only_unprotected = "alg" not in protected

    @property
    def verifier(self) -> Key:
        return verifier(self.key)

    def decode(self) -> cose.CoseMessage:
        return cose.decode(
            self.output,
            self.verifier,
            allowed=ALL_ALGORITHMS,
            expected=self.kind,
            external_aad=self.external,
        )


def _keybound_layout(message: cose.CoseMessage, protected_bytes: bytes) -> bool:
    """True when keybound would write these headers with these very bytes."""
    if cbor.dumps(dict(message.protected)) != protected_bytes:
        return False
    order = [label for label in (4, 5) if label in message.unprotected]
    return list(message.unprotected) == order


def _reencode(example: Example, message: cose.CoseMessage) -> bytes:
    extra = {k: v for k, v in message.protected.items() if k != 1} or None
    key = example.key.with_kid(None)
    kid = message.unprotected.get(4)
    common: dict[str, Any] = {
        "alg": message.alg,
        "kid": kid,
        "protected": extra,
        "external_aad": example.external,
        "tagged": message.tagged,
    }
    if example.kind == CoseTag.SIGN1:
        return cose.sign1(example.plaintext, key, **common)
    if example.kind == CoseTag.MAC0:
        return cose.mac0(example.plaintext, key, **common)
    return cose.encrypt0(example.plaintext, key, iv=message.unprotected[5], **common)


_DETERMINISTIC = cose.MAC_ALGORITHMS | cose.AEAD_ALGORITHMS | {Algorithm.EDDSA}
_REENCODED: set[Algorithm] = set()


def test_cose_wg_example(cose_wg_example: dict[str, Any]) -> None:
    example = Example(cose_wg_example)
    if example.fail:
        with pytest.raises(KeyboundError) as info:
            example.decode()
        if "ChangeTag" in example.failures:
            assert info.type is BadSignature, f"{example.title}: {info.value}"
        return
    if example.alg is None:
        # An algorithm keybound does not implement must be refused, not guessed.
        with pytest.raises(AlgorithmNotAllowed):
            example.decode()
        return
    if example.alg_only_unprotected:
        # RFC 9052 lets alg sit in the unprotected bucket; keybound refuses that on purpose
        # (the algorithm must be integrity-protected). The message itself is sound: pycose
        # verifies it, so the refusal is policy, not a broken primitive.
        with pytest.raises(AlgorithmNotAllowed):
            example.decode()
        theirs = CoseMessage.decode(example.output)
        theirs.key = pycose_key(example.verifier, example.alg)
        theirs.external_aad = example.external
        verified = (
            theirs.verify_signature() if example.kind == CoseTag.SIGN1 else theirs.verify_tag()
        )
        assert verified is True
        return
    message = example.decode()
    assert message.payload == example.plaintext, example.title
    assert message.alg == example.alg
    assert message.tagged == isinstance(cbor2.loads(example.output), cbor2.CBORTag)
    decoded = cbor2.loads(example.output)
    items = decoded.value if isinstance(decoded, cbor2.CBORTag) else decoded
    if example.alg in _DETERMINISTIC and _keybound_layout(message, items[0]):
        assert _reencode(example, message) == example.output, f"{example.title}: re-encoding"
        _REENCODED.add(example.alg)


def test_cose_wg_reencoding_covered_every_deterministic_algorithm() -> None:
    """Guards against the byte-for-byte check being skipped everywhere by a layout mismatch."""
    for path in _example_files():
        test_cose_wg_example(json.loads(path.read_text()))
    assert _REENCODED == _DETERMINISTIC
