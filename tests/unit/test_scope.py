"""Scopes: text (RFC 6749 §3.3) and AIF (RFC 9237), with the RFC 9237 examples as vectors."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keybound.core import cbor
from keybound.core.errors import InsufficientScope, InvalidRequest, InvalidScope
from keybound.core.scope import (
    MAX_SCOPE_ENTRIES,
    AifEntry,
    AifScope,
    ResourceScopes,
    RestMethod,
    Scope,
    TextScope,
)
from tests.helpers.paths import VECTORS

RFC9237: dict[str, Any] = json.loads((VECTORS / "rfc9237_aif.json").read_text())
RFC9203: dict[str, Any] = json.loads((VECTORS / "rfc9203_oscore_input_material.json").read_text())
MODEL = RFC9237["information_model"]


def _from_table(entries: list[tuple[str, list[str]]]) -> AifScope:
    pairs = []
    for path, names in entries:
        permissions = 0
        for name in names:
            permissions |= RestMethod.from_name(name)
        pairs.append((path, permissions))
    return AifScope.of(pairs)


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# ---- RFC 9237 vectors -------------------------------------------------------------------


@pytest.mark.parametrize("v", MODEL, ids=[v["section"] for v in MODEL])
def test_rfc9237_information_model_to_data_model(v: dict[str, Any]) -> None:
    scope = _from_table(v["entries"])
    assert _compact(scope.to_jwt()) == v["json"]
    assert Scope.from_jwt(json.loads(v["json"])) == scope
    if v["cbor_hex"] is not None:
        assert scope.encode() == bytes.fromhex(v["cbor_hex"])
        assert scope.to_cwt() == bytes.fromhex(v["cbor_hex"])
        assert Scope.from_cwt(bytes.fromhex(v["cbor_hex"])) == scope
        assert Scope.from_cwt(cbor.loads(bytes.fromhex(v["cbor_hex"]))) == scope


def test_rfc9237_figure_sizes() -> None:
    scope = _from_table(MODEL[0]["entries"])
    sizes = RFC9237["figure_sizes"]
    assert len(_compact(scope.to_jwt())) == sizes["json_bytes"]
    assert len(scope.encode()) == sizes["cbor_bytes"]


def test_rfc9237_method_bits() -> None:
    methods = RFC9237["data_model"]["methods"]
    for name, bit in methods.items():
        assert RestMethod.from_name(name) == 1 << bit, name
    assert len(RestMethod) == len(methods)


# ---- allows: AIF ------------------------------------------------------------------------

STATIC = _from_table(MODEL[0]["entries"])
DYNAMIC = _from_table(MODEL[1]["entries"])

AIF_TABLE: list[tuple[AifScope, str, str, str | None, bool]] = [
    (STATIC, "GET", "/s/temp", None, True),
    (STATIC, "PUT", "/s/temp", None, False),
    (STATIC, "FETCH", "/s/temp", None, False),
    (STATIC, "GET", "/a/led", None, True),
    (STATIC, "PUT", "/a/led", None, True),
    (STATIC, "DELETE", "/a/led", None, False),
    (STATIC, "POST", "/dtls", None, True),
    (STATIC, "GET", "/dtls", None, False),
    (STATIC, "GET", "/s/temp/", None, False),  # exact match only (RFC 9237 §2.2)
    (STATIC, "GET", "/s", None, False),
    (STATIC, "GET", "/unknown", None, False),
    (DYNAMIC, "POST", "/a/make-coffee", None, True),
    (DYNAMIC, "GET", "/a/make-coffee", None, False),
    (DYNAMIC, "GET", "/a/make-coffee/17", "/a/make-coffee", True),
    (DYNAMIC, "DELETE", "/a/make-coffee/17", "/a/make-coffee", True),
    (DYNAMIC, "PUT", "/a/make-coffee/17", "/a/make-coffee", False),
    (DYNAMIC, "GET", "/a/make-coffee/17", None, False),
    (STATIC, "GET", "/x", "/s/temp", False),  # GET is not Dynamic-GET
]


@pytest.mark.parametrize(
    ("scope", "method", "path", "created_by", "expected"),
    AIF_TABLE,
    ids=[f"{m} {p}{' via ' + c if c else ''}" for _, m, p, c, _ in AIF_TABLE],
)
def test_aif_allows(
    scope: AifScope, method: str, path: str, created_by: str | None, expected: bool
) -> None:
    assert scope.allows(method, path, created_by=created_by) is expected
    assert scope.allows(RestMethod.from_name(method), path, created_by=created_by) is expected
    if expected:
        scope.require(method, path, created_by=created_by)
    else:
        with pytest.raises(InsufficientScope):
            scope.require(method, path, created_by=created_by)


def test_allows_takes_one_basic_method() -> None:
    with pytest.raises(InvalidRequest):
        STATIC.allows(RestMethod.GET | RestMethod.PUT, "/a/led")
    with pytest.raises(InvalidRequest):
        STATIC.allows(RestMethod.DYNAMIC_GET, "/a/led")
    with pytest.raises(InvalidRequest):
        STATIC.allows("get", "/s/temp")


def test_coap_codes() -> None:
    assert [RestMethod.from_coap_code(c) for c in range(1, 8)] == [
        RestMethod.GET,
        RestMethod.POST,
        RestMethod.PUT,
        RestMethod.DELETE,
        RestMethod.FETCH,
        RestMethod.PATCH,
        RestMethod.IPATCH,
    ]
    for bad in (0, 8, True):
        with pytest.raises(InvalidRequest):
            RestMethod.from_coap_code(bad)


# ---- allows: text -----------------------------------------------------------------------

RESOURCES = ResourceScopes.from_dict(
    {
        "/temp": {"GET": ["temp.read", "temp.write"], "PUT": ["temp.write"]},
        "/fw": {"POST": ["firmware_p"]},
        "/temperature": {"GET": ["temperature_g"]},
    }
)

TEXT_TABLE: list[tuple[str, str, str, bool]] = [
    ("temp.read", "GET", "/temp", True),
    ("temp.read", "PUT", "/temp", False),
    ("temp.write", "PUT", "/temp", True),
    ("temp.write", "GET", "/temp", True),
    ("temp.read", "DELETE", "/temp", False),
    ("temp.read", "GET", "/fw", False),
    ("temp.read", "GET", "/nowhere", False),
    ("other temp.read", "GET", "/temp", True),
    # RFC 9203 §3.2 example scope
    ("temperature_g firmware_p", "GET", "/temperature", True),
    ("temperature_g firmware_p", "POST", "/fw", True),
    ("temperature_g firmware_p", "PUT", "/temperature", False),
]


@pytest.mark.parametrize(
    ("text", "method", "path", "expected"),
    TEXT_TABLE,
    ids=[f"{t!r} {m} {p}" for t, m, p, _ in TEXT_TABLE],
)
def test_text_allows(text: str, method: str, path: str, expected: bool) -> None:
    scope = TextScope.parse(text)
    assert scope.allows(method, path, resources=RESOURCES) is expected
    # Without the RS's declaration a text scope allows nothing.
    assert scope.allows(method, path) is False


def test_rfc9203_example_scope_from_the_cwt() -> None:
    v = RFC9203["cbor"][0]
    claims = cbor.loads(bytes.fromhex(v["claims_hex"]))
    scope = Scope.from_cwt(claims[9])
    assert scope == TextScope(("temperature_g", "firmware_p"))
    assert scope.to_cwt() == v["scope"]


def test_resource_declaration_is_checked() -> None:
    with pytest.raises(InvalidScope):
        ResourceScopes.from_dict({"temp": {"GET": ["a"]}})
    with pytest.raises(InvalidScope):
        ResourceScopes.from_dict({"/temp": {"GET": ["a b"]}})
    with pytest.raises(InvalidRequest):
        ResourceScopes.from_dict({"/temp": {"BREW": ["a"]}})


# ---- subset and intersection ------------------------------------------------------------

SUBSET_TABLE: list[tuple[Scope, Scope, bool]] = [
    (TextScope.parse("a"), TextScope.parse("a b"), True),
    (TextScope.parse("b a"), TextScope.parse("a b"), True),
    (TextScope.parse("a c"), TextScope.parse("a b"), False),
    (TextScope.parse("a b"), TextScope.parse("a"), False),
    (AifScope.of([("/s/temp", 1)]), STATIC, True),
    (AifScope.of([("/a/led", 4)]), STATIC, True),
    (AifScope.of([("/a/led", 5), ("/dtls", 2)]), STATIC, True),
    (AifScope.of([("/a/led", 8)]), STATIC, False),
    (AifScope.of([("/a/led", 1 << 32)]), STATIC, False),
    (AifScope.of([("/other", 1)]), STATIC, False),
    (AifScope.of([("/other", 0)]), STATIC, True),  # an empty permission set grants nothing
    (AifScope(()), STATIC, True),
    (STATIC, AifScope(()), False),
    (TextScope.parse("a"), STATIC, False),  # kinds do not mix
    (STATIC, TextScope.parse("a"), False),
]


@pytest.mark.parametrize(
    ("requested", "allowed", "expected"),
    SUBSET_TABLE,
    ids=[f"{r!s} in {a!s}" for r, a, _ in SUBSET_TABLE],
)
def test_is_subset_of(requested: Scope, allowed: Scope, expected: bool) -> None:
    assert requested.is_subset_of(allowed) is expected


def test_intersection() -> None:
    assert TextScope.parse("c a b").intersection(TextScope.parse("b c")) == TextScope(("c", "b"))
    assert TextScope.parse("a").intersection(TextScope.parse("b")) is None
    assert TextScope.parse("a").intersection(STATIC) is None
    requested = AifScope.of([("/a/led", 13), ("/dtls", 1), ("/s/temp", 1)])
    assert requested.intersection(STATIC) == AifScope.of([("/a/led", 5), ("/s/temp", 1)])
    assert AifScope.of([("/x", 1)]).intersection(STATIC) is None


# ---- encodings --------------------------------------------------------------------------


def test_cwt_and_jwt_forms() -> None:
    text = TextScope.parse("read write")
    assert text.to_cwt() == text.to_jwt() == "read write"
    assert STATIC.to_cwt(wrap=False) == [["/s/temp", 1], ["/a/led", 5], ["/dtls", 2]]
    assert Scope.from_claim(STATIC.to_cwt(wrap=False)) == STATIC
    assert Scope.from_claim(bytearray(STATIC.encode())) == STATIC
    assert Scope.from_jwt("read write") == text


def test_repeated_paths_are_merged() -> None:
    # RFC 9237 §3: entries naming the same URI-local-part are merged.
    scope = Scope.from_jwt([["/a", 1], ["/b", 2], ["/a", 4]])
    assert isinstance(scope, AifScope)
    assert scope.to_jwt() == [["/a", 5], ["/b", 2]]
    with pytest.raises(InvalidScope):
        AifScope((AifEntry("/a", 1), AifEntry("/a", 2)))


def test_text_scope_drops_repeated_tokens() -> None:
    assert TextScope.parse("a b a").tokens == ("a", "b")
    with pytest.raises(InvalidScope):
        TextScope(("a", "a"))


MALFORMED: list[tuple[str, object]] = [
    ("empty text", ""),
    ("leading space", " a"),
    ("trailing space", "a "),
    ("double space", "a  b"),
    ("tab", "a\tb"),
    ("quote", 'a"b'),
    ("backslash", "a\\b"),
    ("non-ASCII", "température"),
    ("token too long", "a" * 129),
    ("too many tokens", " ".join(f"t{i}" for i in range(MAX_SCOPE_ENTRIES + 1))),
    ("integer", 7),
    ("map", {"/a": 1}),
    ("none", None),
    ("entry not a pair", [["/a"]]),
    ("entry of three", [["/a", 1, 2]]),
    ("entry a map", [{"/a": 1}]),
    ("relative path", [["a", 1]]),
    ("path with space", [["/a b", 1]]),
    ("path with fragment", [["/a#b", 1]]),
    ("path too long", [["/" + "a" * 255, 1]]),
    ("path as bytes", [[b"/a", 1]]),
    ("negative permissions", [["/a", -1]]),
    ("boolean permissions", [["/a", True]]),
    ("float permissions", [["/a", 1.0]]),
    ("text permissions", [["/a", "GET"]]),
    ("permissions beyond 64 bits", [["/a", 1 << 64]]),
    ("too many entries", [[f"/r{i}", 1] for i in range(MAX_SCOPE_ENTRIES + 1)]),
    ("bytes not CBOR", b"\xff"),
    ("bytes with a CBOR map", cbor.dumps({"/a": 1})),
    ("bytes with CBOR text", cbor.dumps("read")),
    ("bytes with trailing data", cbor.dumps([["/a", 1]]) + b"\x00"),
    ("bytes too large", cbor.dumps([["/" + "a" * 200, 1]] * 30)),
]


@pytest.mark.parametrize("value", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_scopes_raise_invalid_scope(value: object) -> None:
    with pytest.raises(InvalidScope):
        Scope.from_claim(value)


def test_jwt_refuses_byte_strings() -> None:
    with pytest.raises(InvalidScope):
        Scope.from_jwt(STATIC.encode())


# ---- round trips ------------------------------------------------------------------------

_token = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"\\'),
    min_size=1,
    max_size=20,
)
_path = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="#"),
    max_size=30,
).map(lambda s: "/" + s)
_permissions = st.integers(min_value=0, max_value=0x7F) | st.integers(
    min_value=0, max_value=2**64 - 1
)
_text_scopes = st.lists(_token, min_size=1, max_size=12).map(TextScope.of)
_aif_scopes = st.dictionaries(_path, _permissions, max_size=10).map(
    lambda d: AifScope.of(d.items())
)


@given(_text_scopes)
def test_text_round_trip(scope: TextScope) -> None:
    assert Scope.from_claim(scope.to_cwt()) == scope
    assert Scope.from_jwt(json.loads(json.dumps(scope.to_jwt()))) == scope


@given(_aif_scopes)
def test_aif_round_trip(scope: AifScope) -> None:
    assert Scope.from_cwt(scope.to_cwt()) == scope
    assert Scope.from_cwt(cbor.loads(cbor.dumps(scope.to_cwt(wrap=False)))) == scope
    assert Scope.from_jwt(json.loads(json.dumps(scope.to_jwt()))) == scope


@given(_aif_scopes, _aif_scopes)
def test_aif_subset_laws(a: AifScope, b: AifScope) -> None:
    assert a.is_subset_of(a)
    common = a.intersection(b)
    if common is not None:
        assert common.is_subset_of(a)
        assert common.is_subset_of(b)
    if a.is_subset_of(b) and b.is_subset_of(a):
        assert {(e.path, e.permissions) for e in a.entries if e.permissions} == {
            (e.path, e.permissions) for e in b.entries if e.permissions
        }


@given(_text_scopes, _text_scopes)
def test_text_subset_laws(a: TextScope, b: TextScope) -> None:
    assert a.is_subset_of(a)
    common = a.intersection(b)
    if common is not None:
        assert common.is_subset_of(a)
        assert common.is_subset_of(b)
    assert a.is_subset_of(b) == set(a.tokens).issubset(b.tokens)
