"""Symmetric PoP over real HTTP: the AS makes the key, the client signs (RFC 9421), the API checks.

The AS (:class:`RunningServer` with uvicorn on 127.0.0.1) issues a JWT whose
``cnf.jwe`` seals a fresh symmetric key for the RS ``temp`` and returns that key
to the client in ``key`` (draft-ietf-oauth-pop-key-distribution §4.2). The API
is :class:`PoPMiddleware` with the RS bundle's token key, in uvicorn as well;
the client is httpx with :class:`HttpSignatureAuth`. Each refusal of the
middleware has its own test.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from keybound.core import jwt
from keybound.core.http_signatures import RequestParts, SignatureParameters, sign_request
from keybound.core.keys import Key, b64u_encode
from keybound.core.token import AccessToken, CnfEncryptedKey
from keybound.tools.authz_server.provision import add_resource_server
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.bundles import RsBundle, rs_bundle
from keybound.tools.http import (
    DPoPAuth,
    HttpSignatureAuth,
    PoPMiddleware,
)
from tests.helpers.authz import ISSUER, provision
from tests.helpers.paths import ROOT
from tests.helpers.ports import free_port
from tests.http.running import (
    BackgroundLoop,
    assert_challenged,
    start_uvicorn,
    stop_uvicorn,
)

EXAMPLE = re.compile(r"<!-- httpsig-example: ([\w-]+) -->\s*```python\n(.*?)```", re.DOTALL)


def documented_examples() -> dict[str, str]:
    """The Python examples of the README's signature section, by name."""
    found = dict(EXAMPLE.findall((ROOT / "README.md").read_text()))
    assert set(found) == {"client", "api"}, sorted(found)
    return found


@dataclass
class World:
    setup: dict[str, Any]
    as_url: str
    api_url: str
    bundle: RsBundle

    def basic(self) -> dict[str, str]:
        raw = f"web-1:{self.setup['web'].http_secret}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def token(self, audience: str = "temp") -> dict[str, Any]:
        form = {"grant_type": "client_credentials", "audience": audience, "token_type": "pop"}
        answer = httpx.post(f"{self.as_url}/token", data=form, headers=self.basic())
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    where = tmp_path_factory.mktemp("httpsig-flow")
    setup = provision(f"sqlite:///{where / 'as.db'}")
    store = setup["store"]
    lamp = add_resource_server(store, "lamp-rs", "lamp", ["on"], has_clock=True)
    store.set_grants("web-1", {"temp": ["read", "write"], "lamp": ["on"]})
    issuer = store.get_issuer()
    setup["lamp_bundle"] = rs_bundle(lamp, issuer, as_base="coap://127.0.0.1:5683")
    bundle = RsBundle.from_json(setup["temp_bundle"])
    bundle_path = where / "temp-rs.json"
    bundle_path.write_text(json.dumps(setup["temp_bundle"]))
    as_port, api_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)
    api_url = f"http://127.0.0.1:{api_port}"
    namespace: dict[str, Any] = {"__name__": "httpsig_example"}
    with pytest.MonkeyPatch.context() as env:  # the README's API, as written
        env.setenv("API_PUBLIC_URL", api_url)
        env.setenv("KEYBOUND_RS_BUNDLE", str(bundle_path))
        exec(compile(documented_examples()["api"], "README.md:httpsig-api", "exec"), namespace)
    api = namespace["api"]
    assert isinstance(api, PoPMiddleware)
    loop = BackgroundLoop()
    auth_server = RunningServer(store, http=("127.0.0.1", as_port), state_dir=where / "state")
    loop.run(auth_server.start())
    running = loop.run(start_uvicorn(api, api_port))
    try:
        yield World(setup, f"http://127.0.0.1:{as_port}", api_url, bundle)
    finally:
        loop.run(stop_uvicorn(*running))
        loop.run(auth_server.stop())
        loop.close()
        store.close()


def assert_refused(response: httpx.Response, description: str) -> None:
    assert_challenged(response, "PoP", description)


def signed_request(auth: HttpSignatureAuth, method: str, url: str, **kwargs: Any) -> httpx.Request:
    """A request as ``auth`` signs it, ready to be sent (or changed, then sent)."""
    request = httpx.Request(method, url, **kwargs)
    return next(auth.auth_flow(request))


def signed_headers(request: httpx.Request) -> dict[str, str]:
    """The headers of a signed request, without those httpx derives from the content."""
    return {k: v for k, v in request.headers.items() if k.lower() != "content-length"}


# ---- the flow ---------------------------------------------------------------------------------


def test_as_issues_a_symmetric_key_sealed_for_the_rs(world: World) -> None:
    answer = world.token()
    assert answer["token_type"] == "pop"
    key = Key.from_jwk(answer["key"])
    assert key.is_symmetric
    claims = jwt.decode(answer["access_token"], world.bundle.as_public_key).claims  # type: ignore[arg-type]
    assert set(claims["cnf"]) == {"jwe"}  # RFC 7800 §3.3
    sealed = jwt.open_key(claims["cnf"]["jwe"], world.bundle.token_key)
    assert sealed.secret == key.secret
    assert sealed.kid == key.kid


def test_signed_get_is_accepted(world: World) -> None:
    answer = world.token()
    response = httpx.get(
        f"{world.api_url}/whoami", auth=HttpSignatureAuth.from_token_response(answer)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["key_id"] == answer["key"]["kid"]
    assert body["components"] == ["@method", "@target-uri", "authorization"]
    assert body["sub"] == "web-1"


def test_signed_post_with_content_is_accepted_and_the_app_reads_the_content(world: World) -> None:
    auth = HttpSignatureAuth.from_token_response(world.token())
    response = httpx.post(f"{world.api_url}/whoami?x=1", json={"t": 21.5}, auth=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["components"] == ["@method", "@target-uri", "authorization", "content-digest"]
    assert json.loads(body["body"]) == {"t": 21.5}


def test_no_credentials_is_challenged_for_both_schemes(world: World) -> None:
    response = httpx.get(f"{world.api_url}/whoami")
    assert response.status_code == 401
    challenges = response.headers.get_list("www-authenticate")
    assert [c.split(" ")[0] for c in challenges] == ["DPoP", "PoP"]
    assert 'algs="hmac-sha256"' in challenges[1]


# ---- refusals -----------------------------------------------------------------------------------


def test_wrong_key_is_refused(world: World) -> None:
    answer = world.token()
    forged = {**answer["key"], "k": b64u_encode(secrets.token_bytes(16))}
    auth = HttpSignatureAuth(forged, answer["access_token"])
    response = httpx.get(f"{world.api_url}/whoami", auth=auth)
    assert_refused(response, "does not verify")


def test_component_left_out_is_refused(world: World) -> None:
    """A signature that does not cover authorization: the token could be swapped."""
    answer = world.token()
    auth = HttpSignatureAuth.from_token_response(answer)
    request = signed_request(auth, "GET", f"{world.api_url}/whoami")
    # Re-sign the same request without "authorization" in the covered components.
    parts = RequestParts.from_pairs("GET", str(request.url), request.headers.multi_items())
    key = Key.from_jwk(answer["key"])
    assert key.secret is not None
    signature_input, signature = sign_request(
        parts,
        key.secret,
        ["@method", "@target-uri"],
        SignatureParameters(created=int(time.time()), keyid=answer["key"]["kid"], nonce="n-x"),
    )
    request.headers["Signature-Input"] = signature_input
    request.headers["Signature"] = signature
    response = httpx.Client().send(request)
    assert_refused(response, "does not cover authorization")


def test_changed_body_is_refused(world: World) -> None:
    auth = HttpSignatureAuth.from_token_response(world.token())
    request = signed_request(auth, "POST", f"{world.api_url}/whoami", content=b'{"t": 21.5}')
    changed = httpx.Request(
        "POST", request.url, headers=signed_headers(request), content=b'{"t": 99.9}'
    )
    response = httpx.Client().send(changed)
    assert_refused(response, "does not match its sha-256 Content-Digest")


def test_body_without_a_covered_digest_is_refused(world: World) -> None:
    """Content added to a request signed without any: the signature does not cover it."""
    auth = HttpSignatureAuth.from_token_response(world.token())
    request = signed_request(auth, "POST", f"{world.api_url}/whoami")
    with_body = httpx.Request(
        "POST", request.url, headers=signed_headers(request), content=b"smuggled"
    )
    response = httpx.Client().send(with_body)
    assert_refused(response, "needs a Content-Digest")


def test_stale_created_is_refused(world: World) -> None:
    auth = HttpSignatureAuth.from_token_response(world.token(), clock=lambda: time.time() - 120)
    response = httpx.get(f"{world.api_url}/whoami", auth=auth)
    assert_refused(response, "more than 60 seconds ago")


def test_replayed_signature_is_refused(world: World) -> None:
    auth = HttpSignatureAuth.from_token_response(world.token())
    request = signed_request(auth, "GET", f"{world.api_url}/whoami")
    with httpx.Client() as http:
        assert http.send(request).status_code == 200
        again = httpx.Request("GET", request.url, headers=dict(request.headers))
        assert_refused(http.send(again), "used before (same nonce)")


def test_token_whose_key_is_sealed_for_another_rs_is_refused(world: World) -> None:
    """A token for this audience whose cnf.jwe only the RS lamp can open."""
    issuer = world.setup["store"].get_issuer()
    signing_key = Key.from_cose_key(issuer.signing_key)
    lamp_key = RsBundle.from_json(world.setup["lamp_bundle"]).token_key
    pop_key = Key.symmetric(secrets.token_bytes(16), kid=b"cafe0001")
    now = int(time.time())
    token = AccessToken(
        iss=ISSUER,
        sub="web-1",
        aud=("temp",),
        iat=now,
        exp=now + 300,
        cti=secrets.token_bytes(16),
        cnf=CnfEncryptedKey(jwe=jwt.seal_key(pop_key, lamp_key)),
        extra={"client_id": "web-1"},
    )
    encoded = jwt.encode(token, signing_key, alg="ES256")
    auth = HttpSignatureAuth(pop_key, encoded)
    response = httpx.get(f"{world.api_url}/whoami", auth=auth)
    assert_refused(response, "not sealed for this resource server")


def test_token_issued_for_another_rs_is_refused(world: World) -> None:
    answer = world.token(audience="lamp")
    response = httpx.get(
        f"{world.api_url}/whoami", auth=HttpSignatureAuth.from_token_response(answer)
    )
    assert_refused(response, "aud")


def test_signature_bound_token_as_bearer_is_refused(world: World) -> None:
    answer = world.token()
    response = httpx.get(
        f"{world.api_url}/whoami",
        headers={"Authorization": f"Bearer {answer['access_token']}"},
    )
    assert response.status_code == 401
    assert "signature-bound access token was presented as a Bearer token" in response.text


def test_dpop_bound_token_with_the_pop_scheme_is_refused(world: World) -> None:
    dpop = DPoPAuth(ECKey.generate_key("P-256"))
    form = {"grant_type": "client_credentials", "audience": "temp"}
    answer = httpx.post(f"{world.as_url}/token", data=form, headers=world.basic(), auth=dpop)
    assert answer.status_code == 200, answer.text
    fake_key = {"kty": "oct", "k": "AAAAAAAAAAAAAAAAAAAAAA", "kid": "x"}
    auth = HttpSignatureAuth(fake_key, answer.json()["access_token"])
    response = httpx.get(f"{world.api_url}/whoami", auth=auth)
    assert_refused(response, "not bound to a symmetric key (no cnf.jwe)")


def test_documented_client_example_runs(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KEYBOUND_AS_URL", world.as_url)
        env.setenv("API_PUBLIC_URL", world.api_url)
        env.setenv("KEYBOUND_CLIENT_SECRET", world.setup["web"].http_secret)
        code = compile(documented_examples()["client"], "README.md:httpsig-client", "exec")
        exec(code, {"__name__": "httpsig_client"})
    printed = capsys.readouterr().out
    assert printed.startswith("200 ['@method', '@target-uri', 'authorization', 'content-digest']")
