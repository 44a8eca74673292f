"""HTTP Message Signatures (RFC 9421) and Content-Digest (RFC 9530): the RFCs' examples
byte for byte, an independent implementation agreeing with ours, and one test per refusal."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from keybound.core.content_digest import (
    ContentDigestMismatch,
    content_digest,
    parse_content_digest,
    verify_content_digest,
)
from keybound.core.errors import InvalidRequest, InvalidToken
from keybound.core.http_signatures import (
    InvalidSignature,
    RequestParts,
    SignatureParameters,
    sign_request,
    signature_base,
    verify_request,
)
from keybound.core.structured_fields import (
    MAX_FIELD_LENGTH,
    MAX_MEMBERS,
    InnerList,
    Item,
    StructuredFieldError,
    Token,
    parse_dictionary,
)
from keybound.tools.http.replay_cache import InMemoryReplayCache
from tests.helpers.paths import VECTORS

EXAMPLES: dict[str, Any] = json.loads(
    (VECTORS / "rfc9421_rfc9530_examples.json").read_text(encoding="utf-8")
)
SECRET = base64.b64decode(EXAMPLES["shared_secret"]["base64"])
B25 = EXAMPLES["hmac_sha256"]
NOW = 1_700_000_000
KEY = secrets.token_bytes(16)
KEYID = "a1b2c3d4"
URI = "https://api.example/items?x=1"
COVERED = ("@method", "@target-uri", "authorization", "content-digest")


def test_request() -> RequestParts:
    case = EXAMPLES["test_request"]
    return RequestParts.from_pairs(
        case["method"], case["target_uri"], [tuple(pair) for pair in case["fields"]]
    )


test_request.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


# ---- RFC 9421 B.2.5 ----------------------------------------------------------------------------


def test_b25_signature_base_byte_for_byte() -> None:
    base = signature_base(
        test_request(),
        B25["components"],
        SignatureParameters(created=B25["created"], keyid=B25["keyid"]),
    )
    assert base == B25["signature_base"].encode("ascii"), "RFC 9421 B.2.5 signature base"


def test_b25_signature_byte_for_byte() -> None:
    signature_input, signature = sign_request(
        test_request(),
        SECRET,
        B25["components"],
        SignatureParameters(created=B25["created"], keyid=B25["keyid"]),
        label=B25["label"],
    )
    assert signature_input == B25["signature_input"], "RFC 9421 B.2.5 Signature-Input"
    assert signature == B25["signature"], "RFC 9421 B.2.5 Signature"


def test_b25_message_verifies() -> None:
    case = EXAMPLES["test_request"]
    pairs = [tuple(pair) for pair in case["fields"]]
    pairs += [("Signature-Input", B25["signature_input"]), ("Signature", B25["signature"])]
    request = RequestParts.from_pairs(case["method"], case["target_uri"], pairs)
    verified = verify_request(
        request,
        SECRET,
        keyid=B25["keyid"],
        now=B25["created"] + 10,
        required=B25["components"],
        require_nonce=False,
    )
    assert verified.label == B25["label"]
    assert verified.components == tuple(B25["components"])
    assert verified.parameters.created == B25["created"]


def test_b25_message_with_another_secret_is_refused() -> None:
    case = EXAMPLES["test_request"]
    pairs = [tuple(pair) for pair in case["fields"]]
    pairs += [("Signature-Input", B25["signature_input"]), ("Signature", B25["signature"])]
    request = RequestParts.from_pairs(case["method"], case["target_uri"], pairs)
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify_request(
            request,
            SECRET[:-1] + bytes([SECRET[-1] ^ 1]),
            keyid=B25["keyid"],
            now=B25["created"],
            required=(),
            require_nonce=False,
        )


def test_derived_components_of_the_test_request() -> None:
    request = test_request()
    # RFC 9421 §2.2.3, §2.2.2, §2.2.5, §2.2.6, §2.2.7 examples for the same target URI
    assert request.derived("@authority") == "example.com"
    assert request.derived("@scheme") == "https"
    assert request.derived("@request-target") == "/foo?param=Value&Pet=dog"
    assert request.derived("@path") == "/foo"
    assert request.derived("@query") == "?param=Value&Pet=dog"
    assert request.derived("@method") == "POST"


# ---- RFC 9530 --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", EXAMPLES["content_digests"], ids=[c["title"] for c in EXAMPLES["content_digests"]]
)
def test_content_digest_examples(case: dict[str, Any]) -> None:
    body = case["content"].encode("utf-8")
    assert content_digest(body, case["algorithms"]) == case["field"], case["title"]
    verify_content_digest(case["field"], body)


def test_content_digest_of_a_changed_body_is_refused() -> None:
    case = EXAMPLES["content_digests"][0]
    with pytest.raises(ContentDigestMismatch):
        verify_content_digest(case["field"], case["content"].encode() + b" ")


def test_content_digest_with_only_unknown_algorithms_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="none of the accepted"):
        verify_content_digest("md5=:AAAA:", b"x")


def test_content_digest_with_unknown_and_known_members_checks_the_known() -> None:
    body = b"payload"
    verify_content_digest("unixsum=:AAAA:, " + content_digest(body), body)


def test_content_digest_not_a_dictionary_of_byte_sequences_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="byte sequence"):
        parse_content_digest('sha-256="not bytes"')


def test_content_digest_too_long_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="longer than"):
        parse_content_digest("sha-256=:" + "A" * 2000 + ":")


# ---- structured fields (RFC 8941) --------------------------------------------------------------


def test_dictionary_parses_inner_lists_items_and_parameters() -> None:
    parsed = parse_dictionary('a=("x" "y";p=1);n=-5;t=tok, b=:AQI=:, c, d=?0')
    assert parsed["a"] == InnerList(
        (Item("x"), Item("y", (("p", 1),))), (("n", -5), ("t", Token("tok")))
    )
    assert parsed["b"] == Item(b"\x01\x02")
    assert parsed["c"] == Item(True)
    assert parsed["d"] == Item(False)


@pytest.mark.parametrize(
    "value",
    ['a=("x"', 'a="open', "a=1.5", "a=:not base64!:", "a=1,", "A=1", 'a="\\x"', "a=1 b=2"],
)
def test_malformed_dictionaries_are_refused(value: str) -> None:
    with pytest.raises(StructuredFieldError):
        parse_dictionary(value)


def test_dictionary_bounds() -> None:
    with pytest.raises(StructuredFieldError, match="longer than"):
        parse_dictionary("a=" + "1" * MAX_FIELD_LENGTH)
    with pytest.raises(StructuredFieldError, match="members"):
        parse_dictionary(", ".join(f"k{i}=1" for i in range(MAX_MEMBERS + 1)))


# ---- our signatures: a round trip and the refusals ---------------------------------------------


def signed(
    *,
    components: tuple[str, ...] = COVERED,
    created: int = NOW,
    nonce: str | None = "n-1",
    key: bytes = KEY,
    keyid: str = KEYID,
    body: bytes = b'{"a": 1}',
    alg: str | None = None,
    expires: int | None = None,
) -> list[tuple[str, str]]:
    pairs = [("Authorization", "PoP tok"), ("Content-Digest", content_digest(body))]
    request = RequestParts.from_pairs("POST", URI, pairs)
    signature_input, signature = sign_request(
        request,
        key,
        components,
        SignatureParameters(created=created, keyid=keyid, nonce=nonce, alg=alg, expires=expires),
    )
    return [*pairs, ("Signature-Input", signature_input), ("Signature", signature)]


def verify(
    pairs: list[tuple[str, str]], *, method: str = "POST", uri: str = URI, **options: Any
) -> Any:
    options.setdefault("required", COVERED)
    options.setdefault("now", NOW)
    return verify_request(RequestParts.from_pairs(method, uri, pairs), KEY, keyid=KEYID, **options)


def test_round_trip() -> None:
    verified = verify(signed())
    assert verified.components == COVERED
    assert verified.parameters.nonce == "n-1"
    assert verified.parameters.keyid == KEYID


def test_signature_error_is_an_invalid_token() -> None:
    assert issubclass(InvalidSignature, InvalidToken)
    assert InvalidSignature.error == "invalid_token"


def test_wrong_key_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify(signed(key=secrets.token_bytes(16)))


def test_required_component_left_out_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not cover content-digest"):
        verify(signed(components=("@method", "@target-uri", "authorization")))


def test_changed_method_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify(signed(), method="PUT")


def test_changed_target_uri_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify(signed(), uri=URI + "&y=2")


def test_changed_covered_field_is_refused() -> None:
    pairs = [(name, "PoP other" if name == "Authorization" else value) for name, value in signed()]
    with pytest.raises(InvalidSignature, match="does not verify"):
        verify(pairs)


def test_stale_created_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="more than 60 seconds ago"):
        verify(signed(created=NOW - 61))


def test_created_in_the_future_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="in the future"):
        verify(signed(created=NOW + 6))


def test_expired_signature_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="expired"):
        verify(signed(expires=NOW - 1))


def test_missing_created_is_refused() -> None:
    pairs = [
        (name, value.replace(f";created={NOW}", "") if name == "Signature-Input" else value)
        for name, value in signed()
    ]
    with pytest.raises(InvalidSignature, match="no created"):
        verify(pairs)


def test_missing_nonce_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="no nonce"):
        verify(signed(nonce=None))


def test_replayed_nonce_is_refused() -> None:
    cache = InMemoryReplayCache()
    pairs = signed()
    verify(pairs, replay_cache=cache)
    with pytest.raises(InvalidSignature, match="used before"):
        verify(pairs, replay_cache=cache)


def test_other_algorithm_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="is not hmac-sha256"):
        verify(signed(alg="ed25519"))


def test_signature_by_another_keyid_is_refused() -> None:
    with pytest.raises(InvalidSignature, match="no signature names"):
        verify(signed(keyid="someone-else"))


def test_unknown_signature_parameter_is_refused() -> None:
    pairs = [
        (name, value + ';extra="1"' if name == "Signature-Input" else value)
        for name, value in signed()
    ]
    with pytest.raises(InvalidSignature, match="not supported"):
        verify(pairs)


def test_component_with_parameters_is_refused() -> None:
    pairs = [
        (
            name,
            value.replace('"authorization"', '"authorization";bs')
            if name == "Signature-Input"
            else value,
        )
        for name, value in signed()
    ]
    with pytest.raises(InvalidSignature, match="without parameters"):
        verify(pairs)


def test_covered_field_absent_from_the_message_is_refused() -> None:
    pairs = [(name, value) for name, value in signed() if name != "Authorization"]
    with pytest.raises(InvalidSignature, match="not in the message"):
        verify(pairs)


def test_missing_signature_field_is_refused() -> None:
    pairs = [(name, value) for name, value in signed() if name != "Signature"]
    with pytest.raises(InvalidSignature, match="no Signature field"):
        verify(pairs)


def test_malformed_signature_input_is_refused() -> None:
    pairs = [(name, "sig=(" if name == "Signature-Input" else value) for name, value in signed()]
    with pytest.raises(InvalidSignature, match="Signature-Input"):
        verify(pairs)


def test_two_signatures_by_the_same_key_are_refused() -> None:
    first = dict(signed())
    pairs = [
        *signed(),
        ("Signature-Input", first["Signature-Input"].replace("sig=", "sig2=", 1)),
        ("Signature", first["Signature"].replace("sig=", "sig2=", 1)),
    ]
    with pytest.raises(InvalidSignature, match="more than one"):
        verify(pairs)


# ---- an independent implementation agrees ------------------------------------------------------


def test_b25_with_an_independent_implementation() -> None:
    """http-message-signatures signs the B.2.5 inputs to the RFC's bytes, as we do."""
    hms = pytest.importorskip("http_message_signatures")
    from http_message_signatures.algorithms import HMAC_SHA256

    ours = sign_request(
        test_request(),
        SECRET,
        B25["components"],
        SignatureParameters(created=B25["created"], keyid=B25["keyid"]),
        label=B25["label"],
    )
    case = EXAMPLES["test_request"]

    class Message:
        def __init__(self) -> None:
            self.method = case["method"]
            self.url = case["target_uri"]
            self.headers = dict(case["fields"])

    class Keys(hms.HTTPSignatureKeyResolver):  # type: ignore[misc,name-defined]
        def resolve_private_key(self, key_id: str) -> bytes:
            return SECRET

        def resolve_public_key(self, key_id: str) -> bytes:
            return SECRET

    import datetime

    message = Message()
    hms.HTTPMessageSigner(signature_algorithm=HMAC_SHA256, key_resolver=Keys()).sign(
        message,
        key_id=B25["keyid"],
        created=datetime.datetime.fromtimestamp(B25["created"], tz=datetime.UTC),
        covered_component_ids=tuple(B25["components"]),
        label=B25["label"],
        include_alg=False,
        use_existing_digest=True,
    )
    assert message.headers["Signature"] == ours[1] == B25["signature"]
