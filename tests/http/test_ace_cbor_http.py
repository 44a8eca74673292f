"""ACE token requests over HTTP in ``application/ace+cbor`` (RFC 9200 §5.8, §8.16).

A real uvicorn serves the AS (:class:`RunningServer`), httpx is the client. An
EDHOC-profile token (draft-ietf-ace-edhoc-oscore-profile-11) obtained there is
posted to a real RS in the same event loop over UDP, EDHOC runs with aiocoap's
initiator, and an OSCORE GET reads ``/temp``. Each refusal is its own test: a
credential the client is not registered with, a content type the endpoint does not
take, a body over the bound, malformed CBOR, an unknown audience; and an
OSCORE-profile token (its answer carries the master secret) over plain HTTP
beyond loopback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiocoap
import httpx

from keybound.core import cbor
from keybound.core.authz_server import MAX_REQUEST_BYTES
from keybound.core.errors import AceErrorCode
from keybound.core.numbers.edhoc_profile import CNF_KCCS, PARAM_EDHOC_INFO
from keybound.tools.authz_server.provision import (
    add_clients,
    add_resource_server,
    as_config,
    init_issuer,
)
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import run_http_as
from tests.helpers.edhoc import (
    EDHOC,
    OSCORE,
    Party,
    edhoc_credentials,
    post_token,
    serving_edhoc,
    use_edhoc,
)
from tests.helpers.rs import AUDIENCE, ISSUER, Keys, client_ctx, request

ACE_CBOR = "application/ace+cbor"
Scenario = Callable[[httpx.AsyncClient, dict[str, Any]], Awaitable[None]]


def _provision(url: str) -> dict[str, Any]:
    """An AS (issuer of the test RS) with RS ``rs1`` of both profiles and its credential,
    client ``dev`` registered by its credential with an HTTP secret, and ``other``
    (an HTTP secret, no credential)."""
    rs, dev, stranger = (
        Party.make(b"\x32", "rs.example"),
        Party.make(b"\x2b", "dev-1"),
        Party.make(b"\x2c", "stranger"),
    )
    store = SqlAuthzStore.init(url)
    init_issuer(store, ISSUER)
    add_resource_server(
        store,
        "rs1-rs",
        AUDIENCE,
        ["temp.read"],
        profiles=[EDHOC, OSCORE],
        credential=rs.ccs.encoded,
    )
    grants = {AUDIENCE: ["temp.read"]}
    client = add_clients(
        store, ["dev"], grants, oscore=False, http_secret=True, credential=dev.ccs.encoded
    )[0]
    other = add_clients(store, ["other"], grants, oscore=False, http_secret=True)[0]
    return {
        "store": store,
        "rs": rs,
        "dev": dev,
        "stranger": stranger,
        "auth": ("dev", client.http_secret),
        "other_auth": ("other", other.http_secret),
    }


def _run(url: str, tmp_path: Path, scenario: Scenario, **options: Any) -> None:
    """Serve the AS of :func:`_provision` over plain HTTP on 127.0.0.1 (``options``: of
    :class:`RunningServer`) and run ``scenario`` with an httpx client on it."""
    run_http_as(url, tmp_path, scenario, provisioner=_provision, **options)


async def _ace_post(
    client: httpx.AsyncClient, body: bytes, auth: tuple[str, str], content_type: str = ACE_CBOR
) -> httpx.Response:
    return await client.post(
        "/token", content=body, auth=auth, headers={"content-type": content_type}
    )


def _edhoc_request(party: Party) -> bytes:
    return cbor.dumps(
        {5: AUDIENCE, 9: "temp.read", 38: EDHOC, 4: {CNF_KCCS: cbor.loads(party.ccs.encoded)}}
    )


def _cbor_error(response: httpx.Response, status: int, code: AceErrorCode) -> dict[int, Any]:
    assert response.status_code == status, response.content
    assert response.headers["content-type"] == ACE_CBOR
    assert response.headers["cache-control"] == "no-store"
    body = cbor.loads(response.content)
    assert body[30] == int(code), body  # error (RFC 9200 §5.8.3, abbreviation of §8.4)
    assert isinstance(body[31], str)
    assert body[31]  # error_description
    return dict(body)


def _code(message: aiocoap.Message) -> str:
    return f"{int(message.code) >> 5}.{int(message.code) & 0x1F:02d}"


def test_an_edhoc_token_over_http_reads_a_resource_through_edhoc(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await _ace_post(client, _edhoc_request(s["dev"]), s["auth"])
        assert response.status_code == 201, response.content  # RFC 9200 §5.8.2: 2.01
        assert response.headers["content-type"] == ACE_CBOR
        assert response.headers["cache-control"] == "no-store"
        body = cbor.loads(response.content)
        assert set(body) == {1, 2, 38, 41, PARAM_EDHOC_INFO}
        assert body[38] == EDHOC
        assert body[41] == {CNF_KCCS: cbor.loads(s["rs"].ccs.encoded)}
        assert body[2] > 0
        keys = Keys(as_key=as_config(s["store"]).signing_key)
        async with serving_edhoc(keys, s["rs"]) as (site, port), client_ctx() as coap:
            posted = await post_token(coap, port, body[1])
            assert _code(posted) == "2.01", posted.payload
            use_edhoc(coap, port, edhoc_credentials(s["dev"], s["rs"]))
            answer = await request(coap, port, aiocoap.GET, "/temp")
            assert _code(answer) == "2.05", answer.payload
            assert answer.payload == b"21.50"
            assert site.edhoc is not None
            assert site.edhoc.session(s["dev"].ccs.fingerprint) is not None

    _run(db_url, tmp_path, scenario)


def test_a_credential_the_client_is_not_registered_with_is_refused(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await _ace_post(client, _edhoc_request(s["stranger"]), s["auth"])
        body = _cbor_error(response, 400, AceErrorCode.INVALID_REQUEST)  # draft-11 §3.1
        assert "not registered with" in body[31]
        assert s["store"].list_tokens("dev") == []

    _run(db_url, tmp_path, scenario)


def test_another_content_type_is_refused(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await _ace_post(client, _edhoc_request(s["dev"]), s["auth"], "application/cbor")
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"
        assert ACE_CBOR in response.json()["error_description"]

    _run(db_url, tmp_path, scenario)


def test_a_body_over_the_bound_is_refused(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        padded = cbor.dumps({5: AUDIENCE, 9: "x" * MAX_REQUEST_BYTES})
        response = await _ace_post(client, padded, s["auth"])
        _cbor_error(response, 413, AceErrorCode.INVALID_REQUEST)

    _run(db_url, tmp_path, scenario)


def test_malformed_cbor_is_invalid_request(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await _ace_post(client, b"\xa2\x05", s["auth"])  # a map cut short
        _cbor_error(response, 400, AceErrorCode.INVALID_REQUEST)

    _run(db_url, tmp_path, scenario)


def test_an_unknown_audience_is_refused(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        body = cbor.dumps({5: "nowhere", 38: EDHOC})
        response = await _ace_post(client, body, s["auth"])
        # access_denied has no ACE abbreviation: invalid_request (1), HTTP 403 as over JSON
        _cbor_error(response, 403, AceErrorCode.INVALID_REQUEST)

    _run(db_url, tmp_path, scenario)


def test_a_wrong_client_secret_is_invalid_client(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await _ace_post(client, _edhoc_request(s["dev"]), ("dev", "not-the-secret"))
        _cbor_error(response, 401, AceErrorCode.INVALID_CLIENT)
        assert response.headers["www-authenticate"].startswith("Basic ")

    _run(db_url, tmp_path, scenario)


def test_an_oscore_profile_token_over_loopback_http_carries_its_material(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        body = cbor.dumps({5: AUDIENCE, 38: OSCORE})
        response = await _ace_post(client, body, s["other_auth"])
        assert response.status_code == 201, response.content
        answer = cbor.loads(response.content)
        assert answer[38] == OSCORE
        assert set(answer[8]) == {4}  # cnf: osc (RFC 9203 §3.2.1)

    _run(db_url, tmp_path, scenario)


def _oscore_request(client: httpx.AsyncClient, s: dict[str, Any]) -> Awaitable[httpx.Response]:
    return _ace_post(client, cbor.dumps({5: AUDIENCE, 38: OSCORE}), s["other_auth"])


def test_an_oscore_profile_token_is_refused_over_plain_http_published_beyond_loopback(
    db_url: str, tmp_path: Path
) -> None:
    """Clients reach this AS at a plain-HTTP URL of another host: the master secret is
    not sent, and no token is recorded."""

    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        body = _cbor_error(await _oscore_request(client, s), 400, AceErrorCode.INVALID_REQUEST)
        assert "HTTPS" in body[31]
        assert s["store"].list_tokens("other") == []
        edhoc = await _ace_post(client, _edhoc_request(s["dev"]), s["auth"])
        assert edhoc.status_code == 201, edhoc.content  # no secret in it: served

    _run(db_url, tmp_path, scenario, public_url="http://as.example:8080")


def test_an_oscore_profile_token_over_plain_http_with_insecure(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await _oscore_request(client, s)
        assert response.status_code == 201, response.content
        assert set(cbor.loads(response.content)[8]) == {4}

    _run(db_url, tmp_path, scenario, public_url="http://as.example:8080", insecure=True)


def test_metadata_lists_both_ace_profiles(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await client.get("/.well-known/oauth-authorization-server")
        assert response.json()["ace_profiles_supported"] == ["coap_oscore", "coap_edhoc_oscore"]

    _run(db_url, tmp_path, scenario)
