"""Errors render themselves: the tree of keybound.core.errors, and the one CoAP and one
HTTP renderer (keybound.coap.errors, keybound.tools.http.errors) that every front uses."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass

import pytest
from aiocoap.numbers.codes import Code

from keybound.coap.errors import coap_code, error_response
from keybound.coap.introspection import AsUnreachable
from keybound.core import cbor, errors
from keybound.core.client_flow import FlowError
from keybound.core.dpop import DPoPKeyMismatch
from keybound.core.dpop_state import ReplayCacheFull, ReplayedProof
from keybound.core.errors import (
    AccessDenied,
    CapacityExceeded,
    IncompatibleAceProfiles,
    InsufficientScope,
    InvalidClient,
    InvalidDPoPProof,
    InvalidToken,
    KeyboundError,
    PayloadTooLarge,
    TemporarilyUnavailable,
    UseDPoPNonce,
)
from keybound.core.numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR, AceParameter
from keybound.core.oscore_sequence import SequenceNumberExhausted
from keybound.tools.http.errors import (
    INTROSPECTION_RULES,
    TOKEN_ENDPOINT_RULES,
    render_http_error,
    resource_server_rules,
)
from keybound.tools.http.replay_cache import ReplayCacheUnavailable
from keybound.tools.http.verifiers import IntrospectionUnavailable

RS_RULES = resource_server_rules(realm="api", algs=("ES256", "EdDSA"))


@dataclass(frozen=True)
class Documented:
    """One line of the tree in the module docstring of keybound.core.errors."""

    depth: int
    name: str
    error: str
    ace: int | None
    coap: tuple[int, int]
    http: int
    challenge: int | None


_LINE = re.compile(
    r"^    (?P<indent> *)(?P<name>[A-Z]\w+) +(?P<error>[a-z_]+) +(?P<ace>\d|-) +"
    r"(?P<klass>\d)\.(?P<detail>\d\d) +(?P<http>\d{3}) +(?P<challenge>\d{3}|-)$"
)


def documented_tree() -> list[Documented]:
    doc = errors.__doc__ or ""
    rows = []
    for line in doc.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        rows.append(
            Documented(
                depth=len(match["indent"]) // 2,
                name=match["name"],
                error=match["error"],
                ace=None if match["ace"] == "-" else int(match["ace"]),
                coap=(int(match["klass"]), int(match["detail"])),
                http=int(match["http"]),
                challenge=None if match["challenge"] == "-" else int(match["challenge"]),
            )
        )
    return rows


TREE = documented_tree()


def make(cls: type[KeyboundError], description: str = "why") -> KeyboundError:
    if issubclass(cls, UseDPoPNonce):
        return cls(description, nonce="n-1")
    return cls(description)


def test_the_tree_lists_every_error_class_of_the_module_once() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, KeyboundError)
        and value.__module__ == errors.__name__
    }
    names = [row.name for row in TREE]
    assert len(names) == len(set(names))
    assert set(names) == defined


def test_the_tree_is_drawn_as_the_classes_inherit() -> None:
    parents: list[str] = []
    for row in TREE:
        del parents[row.depth :]
        cls = getattr(errors, row.name)
        if parents:
            assert cls.__bases__ == (getattr(errors, parents[-1]),), row.name
        else:
            assert cls is KeyboundError
        parents.append(row.name)


@pytest.mark.parametrize("row", TREE, ids=lambda row: row.name)
def test_each_class_has_the_documented_codes(row: Documented) -> None:
    cls = getattr(errors, row.name)
    err = make(cls)
    assert (err.error, err.coap_code, err.http_status) == (row.error, row.coap, row.http)
    assert (None if err.ace_code is None else int(err.ace_code)) == row.ace
    assert err.challenge_status == row.challenge


@pytest.mark.parametrize("row", TREE, ids=lambda row: row.name)
def test_each_class_renders_its_documented_coap_code_and_error_map(row: Documented) -> None:
    message = error_response(make(getattr(errors, row.name), "what went wrong"))
    assert message.code == coap_code(row.coap)
    assert message.opt.content_format == CONTENT_FORMAT_ACE_CBOR
    assert cbor.loads(message.payload) == {
        AceParameter.ERROR: row.error if row.ace is None else row.ace,
        AceParameter.ERROR_DESCRIPTION: "what went wrong",
    }


@pytest.mark.parametrize("row", TREE, ids=lambda row: row.name)
def test_each_class_renders_its_documented_http_status_and_body(row: Documented) -> None:
    """The AS's introspection endpoint answers with the class's own status; a resource
    server with the challenge status of a resource access error code."""
    err = make(getattr(errors, row.name), "what went wrong")
    at_as = render_http_error(err, INTROSPECTION_RULES)
    assert at_as.status == row.http
    assert at_as.body == {"error": row.error, "error_description": "what went wrong"}
    at_rs = render_http_error(err, RS_RULES)
    assert at_rs.status == (row.http if row.challenge is None else row.challenge)
    assert at_rs.body == at_as.body
    challenges = [value for name, value in at_rs.headers if name == "WWW-Authenticate"]
    if row.challenge is None:
        assert challenges == []
    else:
        assert challenges == [
            f'DPoP realm="api", error="{row.error}", '
            'error_description="what went wrong", algs="ES256 EdDSA"'
        ]


OUTSIDE = [
    (ReplayedProof, "invalid_dpop_proof", (4, 0), 401),
    (ReplayCacheFull, "temporarily_unavailable", (5, 3), 503),
    (SequenceNumberExhausted, "temporarily_unavailable", (5, 3), 503),
    (AsUnreachable, "temporarily_unavailable", (5, 3), 503),
    (ReplayCacheUnavailable, "temporarily_unavailable", (5, 3), 503),
    (IntrospectionUnavailable, "temporarily_unavailable", (5, 3), 503),
    (DPoPKeyMismatch, "invalid_token", (4, 1), 401),
    (FlowError, "invalid_request", (4, 0), 400),
]


@pytest.mark.parametrize(
    ("cls", "error", "coap", "http"), OUTSIDE, ids=[row[0].__name__ for row in OUTSIDE]
)
def test_errors_defined_elsewhere_render_through_the_same_renderers(
    cls: type[KeyboundError], error: str, coap: tuple[int, int], http: int
) -> None:
    err = cls("why")
    assert error_response(err).code == coap_code(coap)
    rendered = render_http_error(err, INTROSPECTION_RULES)
    assert (rendered.status, rendered.body) == (http, {"error": error, "error_description": "why"})


def test_every_5_03_is_temporarily_unavailable() -> None:
    for cls in (CapacityExceeded, ReplayCacheFull, SequenceNumberExhausted):
        assert issubclass(cls, CapacityExceeded)
    for cls in (AsUnreachable, ReplayCacheUnavailable, IntrospectionUnavailable):
        assert issubclass(cls, TemporarilyUnavailable)
        assert not issubclass(cls, CapacityExceeded)


def test_access_denied_is_invalid_request_over_coap() -> None:
    """The ACE error registry (RFC 9200 §8.4) has no access_denied."""
    err = AccessDenied("unknown audience 'nowhere'")
    message = error_response(err)
    assert message.code == Code.BAD_REQUEST
    assert cbor.loads(message.payload) == {30: 1, 31: "unknown audience 'nowhere'"}
    rendered = render_http_error(err, TOKEN_ENDPOINT_RULES)
    assert rendered.status == 403
    assert rendered.body == {"error": "access_denied", "error_description": err.description}


def test_incompatible_ace_profiles_is_ace_code_8() -> None:
    message = error_response(IncompatibleAceProfiles("ACE profile 1 is not supported here"))
    assert message.code == Code.BAD_REQUEST
    assert cbor.loads(message.payload)[30] == 8


def test_options_for_size_limit_and_retry() -> None:
    too_large = error_response(PayloadTooLarge("too big", limit=1024))
    assert too_large.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert too_large.opt.size1 == 1024
    assert error_response(PayloadTooLarge("too big")).opt.size1 is None
    busy = error_response(TemporarilyUnavailable("busy", retry_after=7), error_map=False)
    assert busy.code == Code.SERVICE_UNAVAILABLE
    assert busy.opt.max_age == 7
    assert busy.payload == b""
    assert busy.opt.content_format is None
    full = error_response(CapacityExceeded("full"))
    assert full.opt.max_age is None
    assert cbor.loads(full.payload) == {30: "temporarily_unavailable", 31: "full"}
    assert ("Retry-After", "7") in render_http_error(
        TemporarilyUnavailable("busy", retry_after=7), INTROSPECTION_RULES
    ).headers


# ---- the HTTP fronts' differences (RFC 6749 §5.2, RFC 6750 §3.1, RFC 9449 §5, §7.1, §8) ----


def test_token_endpoint_answers_dpop_errors_with_400_and_the_nonce() -> None:
    refused = render_http_error(
        UseDPoPNonce("a nonce is required", nonce="n-1"), TOKEN_ENDPOINT_RULES
    )
    assert refused.status == 400
    assert refused.headers == (("Cache-Control", "no-store"), ("DPoP-Nonce", "n-1"))
    assert render_http_error(ReplayedProof("seen"), TOKEN_ENDPOINT_RULES).status == 400
    assert render_http_error(InvalidDPoPProof("bad"), INTROSPECTION_RULES).status == 401


def test_as_challenges_invalid_client_with_basic_only() -> None:
    for rules in (TOKEN_ENDPOINT_RULES, INTROSPECTION_RULES):
        refused = render_http_error(InvalidClient("who are you"), rules)
        assert refused.status == 401
        assert refused.headers == (
            ("Cache-Control", "no-store"),
            ("WWW-Authenticate", 'Basic realm="keybound"'),
        )
        assert render_http_error(InvalidToken("no"), rules).headers == (
            ("Cache-Control", "no-store"),
        )
    at_rs = render_http_error(InvalidClient("who are you"), RS_RULES)
    assert (at_rs.status, at_rs.headers) == (401, (("Cache-Control", "no-store"),))


def test_resource_server_without_credentials_names_no_error() -> None:
    refused = render_http_error(InvalidToken("none"), RS_RULES, credentials=False)
    assert refused.status == 401
    assert refused.body is None
    assert refused.asgi() == (
        401,
        [
            (b"cache-control", b"no-store"),
            (b"www-authenticate", b'DPoP realm="api", algs="ES256 EdDSA"'),
        ],
        b"",
    )


def test_resource_server_asgi_answer_bytes() -> None:
    rules = resource_server_rules(realm=None, algs=("ES256",))
    err = UseDPoPNonce('use "this"\n', nonce="abc")
    assert render_http_error(err, rules).asgi() == (
        401,
        [
            (b"cache-control", b"no-store"),
            (b"content-type", b"application/json"),
            (
                b"www-authenticate",
                b'DPoP error="use_dpop_nonce", error_description="use \\"this\\"?", algs="ES256"',
            ),
            (b"dpop-nonce", b"abc"),
        ],
        json.dumps({"error": "use_dpop_nonce", "error_description": 'use "this"\n'}).encode(),
    )
    scoped = render_http_error(InsufficientScope("more"), rules, scopes={"b", "a"})
    challenge = dict(scoped.headers)["WWW-Authenticate"]
    assert scoped.status == 403
    assert challenge.endswith('error_description="more", scope="a b", algs="ES256"')
    unavailable = render_http_error(CapacityExceeded("full"), rules)
    assert unavailable.status == 503
    assert "WWW-Authenticate" not in dict(unavailable.headers)


def test_starlette_framing_is_compact_json_after_the_error_headers() -> None:
    response = render_http_error(InvalidClient("é"), TOKEN_ENDPOINT_RULES).starlette()
    assert response.status_code == 401
    assert response.body == '{"error":"invalid_client","error_description":"é"}'.encode()
    assert [name for name, _ in response.raw_headers] == [
        b"cache-control",
        b"www-authenticate",
        b"content-length",
        b"content-type",
    ]
