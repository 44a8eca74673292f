"""The token revocation list over HTTP (RFC 9770): the AS's ``GET /revoke/trl`` behind a
real uvicorn, and :class:`TrlFollower` keeping an API's view of it, revoked JWTs known
without an introspection round trip per request."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keybound.core import jwt, trl
from keybound.core.errors import InvalidToken
from keybound.core.keys import Key
from keybound.core.numbers.trl import (
    MEDIA_TYPE_ACE_TRL_CBOR,
    MEDIA_TYPE_CONCISE_PROBLEM_DETAILS,
    ProblemDetail,
    TrlParameter,
)
from keybound.tools.http import DPoPAuth, DPoPMiddleware, jwt_token_verifier_from_bundle
from keybound.tools.http.trl_follower import TrlFollower, following
from tests.helpers.authz import run_http_as
from tests.helpers.ports import free_port
from tests.http.running import start_uvicorn, stop_uvicorn

FULL, DIFF, CURSOR, MORE = (int(p) for p in TrlParameter)
WAIT = 20.0  # the longest a test waits for the follower: never a sleep to wait


def _rs_auth(s: dict[str, Any]) -> tuple[str, str]:
    return ("temp-rs", s["temp_bundle"]["introspection"]["http_secret"])


async def _jwt(client: httpx.AsyncClient, s: dict[str, Any]) -> str:
    response = await client.post(
        "/token", data={"aud": "temp"}, auth=("web-1", s["web"].http_secret)
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert isinstance(token, str)
    return token


def _cti(s: dict[str, Any], token: str) -> bytes:
    return jwt.decode(token, Key.from_jwk(s["temp_bundle"]["as_public_key"])).token.cti


def test_the_trl_over_http_for_the_rs_and_the_client(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        token = await _jwt(client, s)
        empty = await client.get("/revoke/trl", auth=_rs_auth(s))
        assert empty.status_code == 200
        assert empty.headers["content-type"] == MEDIA_TYPE_ACE_TRL_CBOR
        assert cbor2.loads(empty.content) == {FULL: [], CURSOR: None}
        s["store"].revoke(_cti(s, token))
        h = trl.response_token_hash(token)  # the AS sent it in a JSON response
        for auth in (_rs_auth(s), ("web-1", s["web"].http_secret)):
            full = await client.get("/revoke/trl", auth=auth)
            assert cbor2.loads(full.content) == {FULL: [h], CURSOR: 0}
            diff = await client.get("/revoke/trl", params={"diff": "1"}, auth=auth)
            assert cbor2.loads(diff.content) == {DIFF: [[[], [h]]], CURSOR: 0, MORE: False}
        other_rs = ("door-rs", s["door_bundle"]["introspection"]["http_secret"])
        assert cbor2.loads((await client.get("/revoke/trl", auth=other_rs)).content) == {
            FULL: [],
            CURSOR: None,
        }

    run_http_as(db_url, tmp_path, scenario)


def test_trl_errors_over_http(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        bad = await client.get("/revoke/trl", params={"cursor": "1"}, auth=_rs_auth(s))
        assert bad.status_code == 400
        assert bad.headers["content-type"] == MEDIA_TYPE_CONCISE_PROBLEM_DETAILS
        assert cbor2.loads(bad.content)[ProblemDetail.ACE_TRL_ERROR] == {0: 1}
        unauthenticated = await client.get("/revoke/trl")
        assert unauthenticated.status_code == 401
        wrong = await client.get("/revoke/trl", auth=("temp-rs", "not the secret"))
        assert wrong.status_code == 401

    run_http_as(db_url, tmp_path, scenario)


def test_the_follower_learns_of_a_revoked_jwt(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        base = str(client.base_url).rstrip("/")
        token, other = await _jwt(client, s), await _jwt(client, s)
        follower = TrlFollower(f"{base}/revoke/trl", *_rs_auth(s), interval=0.05)
        async with following(follower):
            async with asyncio.timeout(WAIT):
                while follower.refreshes < 1:
                    await asyncio.sleep(0.01)
            assert not follower.is_revoked(token)
            s["store"].revoke(_cti(s, token))
            async with asyncio.timeout(WAIT):
                while not follower.is_revoked(token):
                    await asyncio.sleep(0.01)
            assert not follower.is_revoked(other)
            assert follower.cursor == 0

    run_http_as(db_url, tmp_path, scenario)


def test_the_follower_catches_up_with_one_full_query_after_lost_updates(
    db_url: str, tmp_path: Path
) -> None:
    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        base = str(client.base_url).rstrip("/")
        store = s["store"]
        store.trl_limits = trl.TrlLimits(max_n=2, max_diff_batch=2)
        tokens = [await _jwt(client, s) for _ in range(5)]
        follower = TrlFollower(f"{base}/revoke/trl", *_rs_auth(s))
        await follower.refresh()
        store.revoke(_cti(s, tokens[0]))
        await follower.refresh()
        assert follower.cursor == 0
        for token in tokens[1:]:  # three more than the collection keeps while "offline"
            store.revoke(_cti(s, token))
        await follower.refresh()
        assert all(follower.is_revoked(t) for t in tokens)
        assert follower.cursor == 4

    run_http_as(db_url, tmp_path, scenario)


def test_a_revoked_jwt_is_refused_by_the_local_verifier(db_url: str, tmp_path: Path) -> None:
    """The API's local JWT check follows the TRL: refused once the follower knows."""

    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        base = str(client.base_url).rstrip("/")
        token = await _jwt(client, s)
        follower = TrlFollower(f"{base}/revoke/trl", *_rs_auth(s), interval=0.05)
        verify = jwt_token_verifier_from_bundle(s["temp_bundle"], revoked=follower.is_revoked)
        async with following(follower):
            assert verify(token)["aud"] == "temp"
            s["store"].revoke(_cti(s, token))
            async with asyncio.timeout(WAIT):
                while not follower.is_revoked(token):
                    await asyncio.sleep(0.01)
            with pytest.raises(InvalidToken, match="revoked"):
                verify(token)

    run_http_as(db_url, tmp_path, scenario)


async def _whoami(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.state.keybound.claims.get("sub")})


def test_a_revoked_dpop_jwt_is_refused_by_the_api_mid_stream(db_url: str, tmp_path: Path) -> None:
    """End to end over HTTP: the real AS (uvicorn) issues a DPoP-bound JWT; an API behind
    :class:`DPoPMiddleware` checks it locally, following the AS's TRL; the client calls it
    in a loop, the token is revoked, the API answers 401 ``invalid_token`` within one
    refresh of the follower, and a new token works. The time is printed, not asserted."""

    async def scenario(client: httpx.AsyncClient, s: dict[str, Any]) -> None:
        base = str(client.base_url).rstrip("/")
        follower = TrlFollower(f"{base}/revoke/trl", *_rs_auth(s), interval=0.2)
        verify = jwt_token_verifier_from_bundle(s["temp_bundle"], revoked=follower.is_revoked)
        port = free_port(socket.SOCK_STREAM)
        api_url = f"http://127.0.0.1:{port}"
        api = DPoPMiddleware(
            Starlette(routes=[Route("/whoami", _whoami)]), verify_token=verify, public_url=api_url
        )
        server = await start_uvicorn(api, port)
        key = ECKey.generate_key("P-256")
        auth, token_auth = DPoPAuth(key), DPoPAuth(key)  # at the API, at the AS

        async def dpop_token() -> str:
            """Basic client authentication, the key proven with DPoP (RFC 9449 §5)."""
            basic = base64.b64encode(f"web-1:{s['web'].http_secret}".encode()).decode()
            response = await client.post(
                "/token",
                data={"grant_type": "client_credentials", "audience": "temp", "scope": "read"},
                headers={"Authorization": f"Basic {basic}"},
                auth=token_auth,
            )
            assert response.status_code == 200, response.text
            assert response.json()["token_type"] == "DPoP"
            return str(response.json()["access_token"])

        try:
            async with following(follower), httpx.AsyncClient(base_url=api_url) as api_client:
                auth.access_token = token = await dpop_token()
                first = await api_client.get("/whoami", auth=auth)
                assert first.status_code == 200, first.text
                async with asyncio.timeout(WAIT):
                    while follower.refreshes < 1:
                        await asyncio.sleep(0.01)
                started = time.monotonic()
                await asyncio.to_thread(s["store"].revoke, _cti(s, token))
                async with asyncio.timeout(WAIT):
                    while True:
                        reply = await api_client.get("/whoami", auth=auth)
                        if reply.status_code != 200:
                            break
                refused = time.monotonic() - started
                assert reply.status_code == 401, reply.text
                assert 'error="invalid_token"' in reply.headers["www-authenticate"]
                assert "revoked" in reply.headers["www-authenticate"]
                auth.access_token = await dpop_token()  # the client starts over
                again = await api_client.get("/whoami", auth=auth)
                assert again.status_code == 200, again.text
        finally:
            await stop_uvicorn(*server)
        print(f"\nDPoP JWT: revocation to the refused request {refused:.3f} s (refresh 0.2 s)")

    run_http_as(db_url, tmp_path, scenario)


def test_the_follower_keeps_at_most_max_revoked_hashes_the_eldest_going_first() -> None:
    """The follower's bound (MAX_REVOKED, here 2): past it the earliest hashes it learnt
    are dropped (RFC 9770 §10.1 allows it under memory limits)."""
    follower = TrlFollower("http://127.0.0.1:1/revoke/trl", "rs", "secret", max_revoked=2)
    hashes = [trl.response_token_hash(name) for name in (b"t1", b"t2", b"t3")]
    entries = [[[], [h]] for h in reversed(hashes)]  # newest first, as the AS sends them
    follower._apply(trl.read_response(cbor2.dumps({DIFF: entries, CURSOR: 2, MORE: False})))
    assert follower.revoked == frozenset(hashes[1:])
    assert follower.cursor == 2
