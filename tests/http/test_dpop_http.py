"""DPoP over HTTP: the ASGI middleware behind a real uvicorn server, httpx clients with DPoPAuth.

An "authorization server" key signs JWT access tokens (RFC 7519) carrying
``cnf.jkt`` (RFC 9449 §6.1); the resource server's ``verify_token`` checks them
with joserfc. RS A needs no nonce, RS B does (RFC 9449 §9); both run on
127.0.0.1 on free ports, each in its own thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keybound.core.dpop import verify_proof
from keybound.core.dpop_state import NonceIssuer
from keybound.core.errors import InvalidToken, KeyboundError, UseDPoPNonce
from keybound.tools.http import (
    DPoPAuth,
    DPoPContext,
    DPoPMiddleware,
    InMemoryReplayCache,
    jwt_token_verifier,
)
from tests.helpers.dpop import create_proof

AS_KEY = ECKey.generate_key("P-256")
AS_ISSUER = "https://as.example.com"


def issue_token(
    jkt: str | None, scope: str = "read", lifetime: int = 300, audience: str | None = None
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": AS_ISSUER,
        "sub": "device-17",
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
        "scope": scope,
    }
    if jkt is not None:
        claims["cnf"] = {"jkt": jkt}
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, AS_KEY, algorithms=["ES256"])


async def verify_token(token: str) -> Mapping[str, Any]:
    """What the project's JWT codec will do: signature, typ, iss, exp."""
    try:
        decoded = jwt.decode(token, AS_KEY, algorithms=["ES256"])
        if decoded.header.get("typ") != "at+jwt":
            raise InvalidToken("not an access token")
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": AS_ISSUER}, exp={"essential": True}
        ).validate(decoded.claims)
    except JoseError as err:
        raise InvalidToken(str(err)) from err
    return decoded.claims


# ---- the applications -----------------------------------------------------------------------


async def resource(request: Request) -> JSONResponse:
    context: DPoPContext = request.state.keybound
    return JSONResponse(
        {"sub": context.claims["sub"], "jkt": context.proof.jkt, "path": request.url.path}
    )


async def public(request: Request) -> JSONResponse:
    return JSONResponse({"public": True})


def resource_app(
    public_url: str, nonce_issuer: NonceIssuer | None, clock: Any = time.time
) -> DPoPMiddleware:
    inner = Starlette(
        routes=[
            Route("/resource", resource, methods=["GET", "POST"]),
            Route("/admin/stats", resource),
            Route("/public", public),
        ]
    )
    return DPoPMiddleware(
        inner,
        verify_token=verify_token,
        public_url=public_url,
        protected=("/resource", "/admin"),
        required_scopes={"/admin": ["admin"]},
        nonce_issuer=nonce_issuer,
        replay_cache=InMemoryReplayCache(1024),
        clock=clock,
    )


def token_endpoint_app(public_url: str) -> Starlette:
    """A token endpoint needing a nonce (RFC 9449 §8) that binds tokens to the proof's key (§5)."""
    issuer = NonceIssuer(b"token endpoint nonce secret 32 b")
    cache = InMemoryReplayCache(1024)

    async def token(request: Request) -> JSONResponse:
        now = int(time.time())
        try:
            proof = verify_proof(
                request.headers.get("dpop", ""),
                htm=request.method,
                htu=public_url + "/token",
                now=now,
                nonce_checker=issuer,
                replay_cache=cache,
            )
        except UseDPoPNonce as err:
            return JSONResponse(err.to_json(), status_code=400, headers={"DPoP-Nonce": err.nonce})
        except KeyboundError as err:
            return JSONResponse(err.to_json(), status_code=400)
        form = parse_qs((await request.body()).decode("ascii"))
        body = {
            "access_token": issue_token(proof.jkt, scope=form.get("scope", ["read"])[0]),
            "token_type": "DPoP",
            "expires_in": 300,
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/token", token, methods=["POST"])])


def audience_checking_app(public_url: str) -> DPoPMiddleware:
    """An API that checks the JWT's ``aud`` with the middleware's own verifier."""
    verify = jwt_token_verifier(
        AS_KEY.as_dict(private=False), issuer=AS_ISSUER, audience="https://api.example.com"
    )
    return DPoPMiddleware(
        Starlette(routes=[Route("/resource", resource)]),
        verify_token=verify,
        public_url=public_url,
    )


# ---- servers --------------------------------------------------------------------------------


@dataclass
class Running:
    url: str
    server: uvicorn.Server
    thread: threading.Thread


def _start(make_app: Any) -> Running:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(make_app(url), lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return Running(url, server, thread)


class SettableClock:
    def __init__(self) -> None:
        self.offset = 0

    def now(self) -> float:
        return time.time() + self.offset


RS_C_SECRET = b"rs c nonce secret, 32 bytes long"
RS_C_CLOCK = SettableClock()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    running = {
        "rs_a": _start(lambda url: resource_app(url, None)),
        "rs_b": _start(
            lambda url: resource_app(url, NonceIssuer(b"rs b nonce secret, 32 bytes long"))
        ),
        "as": _start(token_endpoint_app),
        "rs_c": _start(
            lambda url: resource_app(url, NonceIssuer(RS_C_SECRET, slot_seconds=60), RS_C_CLOCK.now)
        ),
        "rs_aud": _start(audience_checking_app),
        "rs_full": _start(
            lambda url: DPoPMiddleware(
                Starlette(routes=[Route("/resource", resource)]),
                verify_token=verify_token,
                public_url=url,
                replay_cache=InMemoryReplayCache(1),
            )
        ),
    }
    yield {name: run.url for name, run in running.items()}
    for run in running.values():
        run.server.should_exit = True
    for run in running.values():
        run.thread.join(timeout=10)


@pytest.fixture
def client_key() -> ECKey:
    return ECKey.generate_key("P-256")


def challenge(response: httpx.Response) -> str:
    value: str = response.headers.get("www-authenticate", "")
    return value


def manual_headers(
    key: ECKey, token: str | None, method: str, url: str, **kwargs: Any
) -> dict[str, str]:
    headers = {
        "DPoP": create_proof(key, method, url, now=int(time.time()), access_token=token, **kwargs)
    }
    if token is not None:
        headers["Authorization"] = f"DPoP {token}"
    return headers


# ---- success paths --------------------------------------------------------------------------


def test_success_with_dpop_auth(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    with httpx.Client(auth=DPoPAuth(client_key, token)) as client:
        response = client.get(servers["rs_a"] + "/resource?page=2")
        assert response.status_code == 200, response.text
        assert response.json() == {
            "sub": "device-17",
            "jkt": client_key.thumbprint(),
            "path": "/resource",
        }
        again = client.post(servers["rs_a"] + "/resource", content=b"x")
        assert again.status_code == 200, again.text


def test_success_with_async_client(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())

    async def run() -> list[int]:
        async with httpx.AsyncClient(auth=DPoPAuth(client_key, token)) as client:
            responses = await asyncio.gather(
                *(client.get(servers["rs_b"] + "/resource") for _ in range(3))
            )
            return [r.status_code for r in responses]

    assert asyncio.run(run()) == [200, 200, 200]


def test_token_endpoint_nonce_then_resource(servers: dict[str, str], client_key: ECKey) -> None:
    """RFC 9449 §8: 400 use_dpop_nonce with DPoP-Nonce, one retry, then a token bound to our key."""
    auth = DPoPAuth(client_key)
    statuses: list[int] = []
    hooks = {"response": [lambda r: statuses.append(r.status_code)]}
    with httpx.Client(auth=auth, event_hooks=hooks) as client:
        response = client.post(servers["as"] + "/token", data={"grant_type": "client_credentials"})
        assert response.status_code == 200, response.text
        assert statuses == [400, 200]
        assert response.json()["token_type"] == "DPoP"
        auth.access_token = response.json()["access_token"]
        claims = jwt.decode(auth.access_token, AS_KEY, algorithms=["ES256"]).claims
        assert claims["cnf"]["jkt"] == client_key.thumbprint()
        assert client.get(servers["rs_a"] + "/resource").status_code == 200


def test_resource_server_nonce_round_trip(servers: dict[str, str], client_key: ECKey) -> None:
    """RFC 9449 §9: 401 use_dpop_nonce with DPoP-Nonce, retried once; the nonce is reused later."""
    auth = DPoPAuth(client_key, issue_token(client_key.thumbprint()))
    statuses: list[int] = []
    hooks = {"response": [lambda r: statuses.append(r.status_code)]}
    with httpx.Client(auth=auth, event_hooks=hooks) as client:
        first = client.get(servers["rs_b"] + "/resource")
        assert first.status_code == 200, first.text
        assert statuses == [401, 200]
        assert auth.nonce_for(servers["rs_b"]) is not None
        assert auth.nonce_for(servers["rs_a"]) is None
        second = client.get(servers["rs_b"] + "/resource")
        assert second.status_code == 200
        assert statuses == [401, 200, 200]


def test_next_nonce_arrives_with_a_success(servers: dict[str, str], client_key: ECKey) -> None:
    """RFC 9449 §8.2: once the slot turns, a 200 carries the next nonce, and the client takes it."""
    auth = DPoPAuth(client_key, issue_token(client_key.thumbprint()), clock=RS_C_CLOCK.now)
    url = servers["rs_c"] + "/resource"
    statuses: list[int] = []
    hooks = {"response": [lambda r: statuses.append(r.status_code)]}
    with httpx.Client(auth=auth, event_hooks=hooks) as client:
        assert client.get(url).status_code == 200
        first_nonce = auth.nonce_for(url)
        RS_C_CLOCK.offset += 60  # the next slot: the old nonce is still accepted, once more
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["dpop-nonce"] != first_nonce
        assert response.headers["cache-control"] == "no-store"
        assert auth.nonce_for(url) == response.headers["dpop-nonce"]
        assert client.get(url).status_code == 200
    assert statuses == [401, 200, 200, 200]


def test_nonce_challenge_is_well_formed(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_b"] + "/resource"
    response = httpx.get(url, headers=manual_headers(client_key, token, "GET", url))
    assert response.status_code == 401
    assert challenge(response).startswith('DPoP error="use_dpop_nonce"')
    nonce = response.headers["dpop-nonce"]
    retry = httpx.get(url, headers=manual_headers(client_key, token, "GET", url, nonce=nonce))
    assert retry.status_code == 200, retry.text
    stale = manual_headers(
        client_key, token, "GET", url, nonce=nonce[:-1] + ("A" if nonce[-1] != "A" else "B")
    )
    refused = httpx.get(url, headers=stale)
    assert refused.status_code == 401
    assert 'error="use_dpop_nonce"' in challenge(refused)
    # The refusal hands out the current nonce (the same one unless a nonce slot ended in
    # between): a proof carrying it is accepted.
    fresh = refused.headers["dpop-nonce"]
    again = httpx.get(url, headers=manual_headers(client_key, token, "GET", url, nonce=fresh))
    assert again.status_code == 200, again.text


def test_unprotected_path_needs_nothing(servers: dict[str, str]) -> None:
    assert httpx.get(servers["rs_a"] + "/public").json() == {"public": True}


# ---- refusals -------------------------------------------------------------------------------


def test_no_authorization(servers: dict[str, str]) -> None:
    response = httpx.get(servers["rs_a"] + "/resource")
    assert response.status_code == 401
    assert challenge(response) == 'DPoP algs="ES256 ES384 EdDSA"'


def test_stolen_token_with_another_key(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    thief = DPoPAuth(ECKey.generate_key("P-256"), token)
    response = httpx.get(servers["rs_a"] + "/resource", auth=thief)
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)
    assert "Invalid DPoP key binding" in challenge(response)


def test_bound_token_as_bearer(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_a"] + "/resource"
    response = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)
    assert "DPoP-bound access token was presented as a Bearer token" in challenge(response)
    assert response.json()["error"] == "invalid_token"


def test_unbound_token_refused(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(None)
    url = servers["rs_a"] + "/resource"
    response = httpx.get(url, headers=manual_headers(client_key, token, "GET", url))
    assert response.status_code == 401
    assert "no cnf.jkt" in challenge(response)


def test_proof_without_token(servers: dict[str, str], client_key: ECKey) -> None:
    url = servers["rs_a"] + "/resource"
    response = httpx.get(url, headers=manual_headers(client_key, None, "GET", url))
    assert response.status_code == 401
    assert "DPoP proof was sent without an access token" in challenge(response)


def test_token_without_proof(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    response = httpx.get(servers["rs_a"] + "/resource", headers={"Authorization": f"DPoP {token}"})
    assert response.status_code == 401
    assert challenge(response).startswith('DPoP error="invalid_dpop_proof"')
    assert "missing" in response.json()["error_description"]


def test_invalid_token(servers: dict[str, str], client_key: ECKey) -> None:
    other_as = ECKey.generate_key("P-256")
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt"}, {"sub": "x"}, other_as)
    url = servers["rs_a"] + "/resource"
    response = httpx.get(url, headers=manual_headers(client_key, token, "GET", url))
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)


def test_two_dpop_headers(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_a"] + "/resource"
    first = manual_headers(client_key, token, "GET", url)
    second = manual_headers(client_key, token, "GET", url)
    headers = [
        ("Authorization", first["Authorization"]),
        ("DPoP", first["DPoP"]),
        ("DPoP", second["DPoP"]),
    ]
    response = httpx.get(url, headers=headers)
    assert response.status_code == 401
    assert "more than one DPoP header" in challenge(response)


def test_proof_for_another_path(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_a"] + "/resource"
    headers = manual_headers(client_key, token, "GET", servers["rs_a"] + "/admin/stats")
    response = httpx.get(url, headers=headers)
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(response)
    assert "does not match the request URI" in challenge(response)


def test_proof_for_another_method(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_a"] + "/resource"
    response = httpx.post(url, headers=manual_headers(client_key, token, "GET", url))
    assert response.status_code == 401
    assert "htm 'GET' does not match the method 'POST'" in challenge(response)


def test_host_header_is_not_trusted(servers: dict[str, str], client_key: ECKey) -> None:
    """A proof for the URL the client claims in Host is refused: htu comes from public_url."""
    token = issue_token(client_key.thumbprint())
    headers = manual_headers(client_key, token, "GET", "http://evil.example/resource")
    headers["Host"] = "evil.example"
    response = httpx.get(servers["rs_a"] + "/resource", headers=headers)
    assert response.status_code == 401
    assert "does not match the request URI" in challenge(response)


def test_replayed_proof(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_a"] + "/resource"
    headers = manual_headers(client_key, token, "GET", url)
    assert httpx.get(url, headers=headers).status_code == 200
    again = httpx.get(url, headers=headers)
    assert again.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(again)
    assert "already used" in challenge(again)


def test_proof_replayed_at_another_resource_server(
    servers: dict[str, str], client_key: ECKey
) -> None:
    """RFC 9449 §11.1: the proof names RS A in htu, so RS B refuses it before its replay cache."""
    token = issue_token(client_key.thumbprint())
    url_a, url_b = servers["rs_a"] + "/resource", servers["rs_b"] + "/resource"
    headers = manual_headers(client_key, token, "GET", url_a)
    assert httpx.get(url_a, headers=headers).status_code == 200
    response = httpx.get(url_b, headers=headers)
    assert response.status_code == 401
    assert 'error="invalid_dpop_proof"' in challenge(response)
    assert "does not match the request URI" in challenge(response)


def test_old_proof(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_a"] + "/resource"
    proof = create_proof(client_key, "GET", url, now=int(time.time()) - 300, access_token=token)
    response = httpx.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert response.status_code == 401
    assert "old, more than 60 s" in challenge(response)


def test_oversized_headers(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    url = servers["rs_a"] + "/resource"
    big_proof = httpx.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": "a" * 9000})
    assert big_proof.status_code == 401
    assert "longer than 8192" in challenge(big_proof)
    big_token = httpx.get(url, headers={"Authorization": "DPoP " + "a" * 9000, "DPoP": "x"})
    assert big_token.status_code == 401
    assert 'error="invalid_token"' in challenge(big_token)


def test_insufficient_scope(servers: dict[str, str], client_key: ECKey) -> None:
    url = servers["rs_a"] + "/admin/stats"
    reader = DPoPAuth(client_key, issue_token(client_key.thumbprint(), scope="read"))
    response = httpx.get(url, auth=reader)
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in challenge(response)
    assert 'scope="admin"' in challenge(response)
    admin = DPoPAuth(client_key, issue_token(client_key.thumbprint(), scope="read admin"))
    assert httpx.get(url, auth=admin).status_code == 200


def test_error_body_is_json(servers: dict[str, str], client_key: ECKey) -> None:
    token = issue_token(client_key.thumbprint())
    response = httpx.get(servers["rs_a"] + "/resource", headers={"Authorization": f"DPoP {token}"})
    assert response.headers["content-type"] == "application/json"
    assert set(json.loads(response.content)) == {"error", "error_description"}
    assert response.headers["cache-control"] == "no-store"


def test_token_for_another_audience_is_401_invalid_token(
    servers: dict[str, str], client_key: ECKey
) -> None:
    """RFC 6750 §3.1: ``invalid_token`` is answered 401, also for a token of another audience."""
    url = servers["rs_aud"] + "/resource"
    other = DPoPAuth(client_key, issue_token(client_key.thumbprint(), audience="https://other"))
    response = httpx.get(url, auth=other)
    assert response.status_code == 401
    assert 'error="invalid_token"' in challenge(response)
    assert response.json()["error"] == "invalid_token"
    ours = DPoPAuth(
        client_key, issue_token(client_key.thumbprint(), audience="https://api.example.com")
    )
    assert httpx.get(url, auth=ours).status_code == 200


def test_full_replay_cache_is_503_without_a_challenge(
    servers: dict[str, str], client_key: ECKey
) -> None:
    """503 is no authentication failure: ``temporarily_unavailable`` is not a resource
    access error code (RFC 6750 §3.1), so it goes in the body, not in WWW-Authenticate."""
    auth = DPoPAuth(client_key, issue_token(client_key.thumbprint()))
    url = servers["rs_full"] + "/resource"
    assert httpx.get(url, auth=auth).status_code == 200
    full = httpx.get(url, auth=auth)  # a fresh proof, but the one entry is unexpired
    assert full.status_code == 503
    assert "www-authenticate" not in full.headers
    assert full.json()["error"] == "temporarily_unavailable"
