"""The AS over HTTP: a real uvicorn, httpx as the client (RFC 6749, RFC 7662, RFC 8414)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from keybound.core import jwt
from keybound.core.keys import Key
from keybound.core.token import CnfEncryptedKey, CnfKey
from keybound.tools.authz_server.http import check_listen
from keybound.tools.authz_server.provision import new_introspection_secret, rotate_token_key
from keybound.tools.authz_server.schema import resource_servers_table
from keybound.tools.http import introspection_token_verifier_from_bundle
from tests.helpers.authz import ISSUER, run_http_as

Scenario = Callable[[httpx.AsyncClient, dict[str, Any]], Awaitable[None]]


run_http = run_http_as


def web_auth(setup: dict[str, Any]) -> tuple[str, str]:
    return ("web-1", setup["web"].http_secret)


def rs_key(setup: dict[str, Any]) -> Key:
    return Key.from_jwk(setup["temp_bundle"]["token_key"])


def as_key(setup: dict[str, Any]) -> Key:
    return Key.from_jwk(setup["temp_bundle"]["as_public_key"])


def test_pop_with_client_jwk(db_url: str, tmp_path: Path) -> None:
    mine = Key.generate_ec2()

    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        import json

        form = {
            "grant_type": "client_credentials",
            "token_type": "pop",
            "aud": "temp",
            "scope": "read",
            "alg": "ES256",
            "key": json.dumps(mine.public_key().to_jwk()),
        }
        response = await client.post("/token", data=form, auth=web_auth(s))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "pop"
        assert "key" not in body
        assert response.headers["cache-control"] == "no-store"
        token = jwt.decode(body["access_token"], as_key(s)).token
        assert token.iss == ISSUER
        assert token.aud == ("temp",)
        assert str(token.scope) == "read"
        assert isinstance(token.cnf, CnfKey)
        assert token.cnf.key.equals_public(mine)

    run_http(db_url, tmp_path, scenario)


def test_pop_with_as_generated_symmetric_key(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        form = {"grant_type": "client_credentials", "token_type": "pop", "aud": "temp"}
        response = await client.post("/token", data=form, auth=web_auth(s))
        assert response.status_code == 200, response.text
        body = response.json()
        returned = Key.from_jwk(body["key"])
        assert returned.is_symmetric
        assert body.get("scope") is None  # everything granted, as requested (none named)
        token = jwt.decode(body["access_token"], as_key(s)).token
        assert isinstance(token.cnf, CnfEncryptedKey)
        assert token.cnf.jwe is not None
        sealed = jwt.open_key(token.cnf.jwe, rs_key(s))
        assert sealed.secret == returned.secret
        assert str(token.scope) == "read write"

    run_http(db_url, tmp_path, scenario)


def test_scope_intersection_is_reported(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        form = {"aud": "temp", "scope": "read delete"}
        response = await client.post("/token", data=form, auth=web_auth(s))
        assert response.status_code == 200, response.text
        assert response.json()["scope"] == "read"

    run_http(db_url, tmp_path, scenario)


def test_introspection_by_client_and_rs(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await client.post("/token", data={"aud": "temp"}, auth=web_auth(s))
        token = response.json()["access_token"]
        answer = await client.post("/introspect", data={"token": token}, auth=web_auth(s))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["active"] is True
        assert body["aud"] == "temp"
        assert "jwe" in body["cnf"]
        assert body["client_id"] == "web-1"
        rs_auth = ("temp-rs", s["temp_bundle"]["introspection"]["http_secret"])
        answer = await client.post("/introspect", data={"token": token}, auth=rs_auth)
        assert answer.json()["active"] is True
        wrong_rs = ("door-rs", s["door_bundle"]["introspection"]["http_secret"])
        answer = await client.post("/introspect", data={"token": token}, auth=wrong_rs)
        assert answer.json() == {"active": False}
        cti = jwt.decode(token, as_key(s)).token.cti
        s["store"].revoke(cti)
        answer = await client.post("/introspect", data={"token": token}, auth=rs_auth)
        assert answer.json() == {"active": False}
        answer = await client.post("/introspect", data={"token": "a.b.c"}, auth=rs_auth)
        assert answer.json() == {"active": False}

    run_http(db_url, tmp_path, scenario)


def test_rs_introspection_credential_is_not_the_token_key(db_url: str, tmp_path: Path) -> None:
    """The RS authenticates at /introspect with its own secret; the token key is refused
    (401 invalid_client), and each of the two is replaced without the other."""

    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        store = s["store"]
        response = await client.post("/token", data={"aud": "temp"}, auth=web_auth(s))
        token = response.json()["access_token"]
        token_key = s["temp_bundle"]["token_key"]["k"]
        secret = s["temp_bundle"]["introspection"]["http_secret"]
        assert secret != token_key

        async def ask(password: str) -> httpx.Response:
            return await client.post(
                "/introspect", data={"token": token}, auth=("temp-rs", password)
            )

        refused = await ask(token_key)
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
        assert (await ask(secret)).json()["active"] is True

        rotate_token_key(store, "temp-rs")  # the introspection secret stays valid
        assert (await ask(secret)).json()["active"] is True
        rotated = store.get_resource_server("temp-rs").token_key
        new_key = Key.from_cose_key(rotated.key).to_jwk(include_private=True)["k"]
        assert (await ask(new_key)).status_code == 401

        new_secret = new_introspection_secret(store, "temp-rs")  # the token key stays
        assert (await ask(secret)).status_code == 401
        answer = await ask(new_secret)
        assert answer.json()["active"] is True  # still decrypted with the kept key
        assert store.get_resource_server("temp-rs").token_key == rotated

    run_http(db_url, tmp_path, scenario)


def test_rs_without_introspection_secret_is_told_what_to_do(db_url: str, tmp_path: Path) -> None:
    """An RS from a schema-1 database has no introspection secret: the 401 names the fix."""

    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await client.post("/token", data={"aud": "temp"}, auth=web_auth(s))
        token = response.json()["access_token"]
        with s["store"].engine.begin() as conn:
            conn.execute(
                update(resource_servers_table)
                .where(resource_servers_table.c.name == "temp-rs")
                .values(introspection_secret_hash=None)
            )
        answer = await client.post(
            "/introspect",
            data={"token": token},
            auth=("temp-rs", s["temp_bundle"]["token_key"]["k"]),
        )
        assert answer.status_code == 401
        assert answer.json()["error"] == "invalid_client"
        assert (
            "keybound as rotate-key temp-rs --introspection-secret"
            in answer.json()["error_description"]
        )

    run_http(db_url, tmp_path, scenario)


def test_metadata(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await client.get("/.well-known/oauth-authorization-server")
        body = response.json()
        assert body["issuer"] == ISSUER
        assert body["token_endpoint"].endswith("/token")
        assert body["introspection_endpoint"].endswith("/introspect")
        assert "dpop_signing_alg_values_supported" in body

    run_http(db_url, tmp_path, scenario)


# ---- errors ------------------------------------------------------------------------------------


def _error_case(
    db_url: str,
    tmp_path: Path,
    *,
    status: int,
    error: str,
    data: Any = None,
    content: bytes | None = None,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        response = await client.post(
            "/token",
            data=data,
            content=content,
            auth=auth or web_auth(s),
            headers=headers,
        )
        assert response.status_code == status, response.text
        assert response.json()["error"] == error

    run_http(db_url, tmp_path, scenario)


def test_unknown_audience(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, status=403, error="access_denied", data={"aud": "nowhere"})


def test_invalid_scope(db_url: str, tmp_path: Path) -> None:
    data = {"aud": "temp", "scope": "delete"}
    _error_case(db_url, tmp_path, status=400, error="invalid_scope", data=data)


def test_bad_client_secret(db_url: str, tmp_path: Path) -> None:
    auth = ("web-1", "not-the-secret")
    _error_case(db_url, tmp_path, status=401, error="invalid_client", data={"aud": "temp"},
                auth=auth)  # fmt: skip


def test_unsupported_grant_type(db_url: str, tmp_path: Path) -> None:
    data = {"aud": "temp", "grant_type": "password"}
    _error_case(db_url, tmp_path, status=400, error="unsupported_grant_type", data=data)


def test_unsupported_pop_key(db_url: str, tmp_path: Path) -> None:
    data = {"aud": "temp", "key": '{"kty":"oct","k":"AAAAAAAAAAAAAAAAAAAAAA"}'}
    _error_case(db_url, tmp_path, status=400, error="unsupported_pop_key", data=data)


def test_generated_key_pair_refused_by_default(db_url: str, tmp_path: Path) -> None:
    data = {"aud": "temp", "alg": "ES256"}
    _error_case(db_url, tmp_path, status=400, error="unsupported_pop_key", data=data)


def test_malformed_body(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, status=400, error="invalid_request", content=b'{"aud":',
                headers={"content-type": "application/json"})  # fmt: skip


def test_repeated_parameter(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, status=400, error="invalid_request", content=b"aud=a&aud=b",
                headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip


def test_oversized_body(db_url: str, tmp_path: Path) -> None:
    data = {"aud": "temp", "scope": "x" * 6000}
    _error_case(db_url, tmp_path, status=413, error="invalid_request", data=data)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.7", "example.org"])
def test_refuses_plain_http_beyond_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="without TLS"):
        check_listen(host, tls=False, insecure=False)
    check_listen(host, tls=True, insecure=False)
    check_listen(host, tls=False, insecure=True)


def test_loopback_plain_http_allowed() -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        check_listen(host, tls=False, insecure=False)


def test_rs_bundle_without_introspection_secret_names_the_fix() -> None:
    """A bundle written before introspection secrets: its token key is not used instead."""
    old_bundle = {"name": "temp-rs", "audience": "temp", "token_key": {"kty": "oct", "k": "AAAA"}}
    with pytest.raises(ValueError, match="keybound as rotate-key temp-rs --introspection-secret"):
        introspection_token_verifier_from_bundle(old_bundle, "http://127.0.0.1:1/introspect")
