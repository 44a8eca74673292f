"""Certificate-bound tokens over real TLS on 127.0.0.1 (RFC 8705).

Certificates are made here (a CA, the servers' certificate, PKI client
certificates it signs, self-signed client certificates). The AS runs as
:class:`RunningServer` over HTTPS asking for client certificates; clients
registered with a self-signed certificate (§2.2) or by subject DN or SAN (§2.1)
authenticate with them and get JWTs with ``cnf`` ``x5t#S256``. The API is
:class:`PoPMiddleware` in uvicorn over TLS with
:class:`TlsExtensionH11Protocol`, so it sees the connection's certificate.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography import x509
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from keybound.core import cbor, jwt
from keybound.core.errors import AceErrorCode, InvalidClient
from keybound.core.tls_client_auth import (
    PKI,
    TlsClientRegistration,
    certificate_thumbprint,
)
from keybound.tools.authz_server.mutual_tls import add_tls_client, tls_registration
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.bundles import RsBundle
from keybound.tools.http import (
    CertificateContext,
    DPoPAuth,
    HttpSignatureAuth,
    PoPMiddleware,
    TlsExtensionH11Protocol,
    jwt_token_verifier_from_bundle,
    tls_extension_certificate,
    trusted_header_certificate,
)
from tests.helpers.authz import provision
from tests.helpers.ports import free_port
from tests.http.certificates import NOW, Pair, make_pair
from tests.http.running import (
    BackgroundLoop,
    assert_challenged,
    start_uvicorn,
    stop_uvicorn,
)


@dataclass
class World:
    as_url: str
    api_url: str
    header_api_url: str
    ca: Pair
    pki: Pair
    pki_san: Pair
    self_signed: Pair
    stranger: Pair
    bundle: RsBundle
    setup: dict[str, Any]

    def client(self, pair: Pair | None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca.cert))
        if pair is not None:
            context.load_cert_chain(str(pair.cert), str(pair.key))
        return httpx.Client(verify=context)

    def token(self, client_id: str, pair: Pair | None) -> httpx.Response:
        form = {"grant_type": "client_credentials", "audience": "temp", "client_id": client_id}
        with self.client(pair) as http:
            return http.post(f"{self.as_url}/token", data=form)


async def whoami(request: Request) -> JSONResponse:
    context: CertificateContext = request.state.keybound
    return JSONResponse({"x5t#S256": context.thumbprint, "sub": context.claims["sub"]})


async def binding(request: Request) -> JSONResponse:
    return JSONResponse({"context": type(request.state.keybound).__name__})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    where = tmp_path_factory.mktemp("mtls")
    ca, ca_cert, ca_key = make_pair(where, "ca", ca=True)
    server, _, _ = make_pair(
        where,
        "server",
        issuer=(ca_cert, ca_key),
        san=x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        client=False,
    )
    pki, pki_cert, _ = make_pair(
        where, "pki-client", issuer=(ca_cert, ca_key), san=x509.DNSName("pki.client.example")
    )
    pki_san, _, _ = make_pair(
        where, "pki-san-client", issuer=(ca_cert, ca_key), san=x509.DNSName("san.client.example")
    )
    self_signed, _, _ = make_pair(where, "self-signed-client", san=x509.DNSName("self.example"))
    stranger, _, _ = make_pair(where, "stranger-client", san=x509.DNSName("stranger.example"))

    setup = provision(f"sqlite:///{where / 'as.db'}")
    store = setup["store"]
    grants = {"temp": ["read"]}
    add_tls_client(store, "self-1", grants, tls_registration(self_signed=self_signed.der))
    # The stranger is registered too, so TLS lets it through; the AS and the API tell them apart.
    add_tls_client(store, "stranger", grants, tls_registration(self_signed=stranger.der))
    add_tls_client(
        store, "pki-1", grants, tls_registration(subject_dn=pki_cert.subject.rfc4514_string())
    )
    add_tls_client(store, "pki-san", grants, tls_registration(san="dns=san.client.example"))
    bundle = RsBundle.from_json(setup["temp_bundle"])

    as_port, api_port, header_port = (free_port(socket.SOCK_STREAM) for _ in range(3))
    auth_server = RunningServer(
        store,
        http=("127.0.0.1", as_port),
        state_dir=where / "state",
        certfile=str(server.cert),
        keyfile=str(server.key),
        mutual_tls=True,
        client_ca=str(ca.cert),
    )
    routes = [Route("/whoami", whoami)]
    api_url = f"https://127.0.0.1:{api_port}"
    api = PoPMiddleware(  # all three bindings at once
        Starlette(routes=[Route("/whoami", whoami), Route("/any", binding)]),
        verify_token=jwt_token_verifier_from_bundle(bundle),
        public_url=api_url,
        client_certificate=tls_extension_certificate,
        rs_token_keys=bundle.token_key,
    )
    header_url = f"http://127.0.0.1:{header_port}"
    header_api = PoPMiddleware(
        Starlette(routes=routes),
        verify_token=jwt_token_verifier_from_bundle(bundle),
        public_url=header_url,
        client_certificate=trusted_header_certificate("X-Client-Cert"),
    )
    loop = BackgroundLoop()
    loop.run(auth_server.start())
    trust = where / "state" / "tls-client-trust.pem"  # written by the AS: CA + self-signed
    running = loop.run(
        start_uvicorn(
            api,
            api_port,
            ssl_certfile=str(server.cert),
            ssl_keyfile=str(server.key),
            ssl_cert_reqs=ssl.CERT_OPTIONAL,
            ssl_ca_certs=str(trust),
            http=TlsExtensionH11Protocol,
        )
    )
    running_header = loop.run(start_uvicorn(header_api, header_port))
    try:
        yield World(
            as_url=f"https://127.0.0.1:{as_port}",
            api_url=api_url,
            header_api_url=header_url,
            ca=ca,
            pki=pki,
            pki_san=pki_san,
            self_signed=self_signed,
            stranger=stranger,
            bundle=bundle,
            setup=setup,
        )
    finally:
        loop.run(stop_uvicorn(*running))
        loop.run(stop_uvicorn(*running_header))
        loop.run(auth_server.stop())
        loop.close()
        store.close()


def bound_token(world: World, client_id: str, pair: Pair) -> str:
    answer = world.token(client_id, pair)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "Bearer"
    token = str(body["access_token"])
    claims = jwt.decode(token, world.bundle.as_public_key).claims  # type: ignore[arg-type]
    assert claims["cnf"] == {"x5t#S256": certificate_thumbprint(pair.der)}  # RFC 8705 §3.1
    assert claims["client_id"] == client_id
    return token


def call(world: World, token: str, pair: Pair | None) -> httpx.Response:
    with world.client(pair) as http:
        return http.get(f"{world.api_url}/whoami", headers={"Authorization": f"Bearer {token}"})


def assert_refused(response: httpx.Response, description: str) -> None:
    assert_challenged(response, "Bearer", description)


# ---- the AS --------------------------------------------------------------------------------------


def test_metadata_announces_certificate_bound_tokens(world: World) -> None:
    with world.client(None) as http:
        document = http.get(f"{world.as_url}/.well-known/oauth-authorization-server").json()
    assert document["tls_client_certificate_bound_access_tokens"] is True  # RFC 8705 §3.3
    assert {"tls_client_auth", "self_signed_tls_client_auth"} <= set(
        document["token_endpoint_auth_methods_supported"]
    )


def test_self_signed_client_gets_a_certificate_bound_token(world: World) -> None:
    bound_token(world, "self-1", world.self_signed)


def test_pki_client_by_subject_dn_gets_a_certificate_bound_token(world: World) -> None:
    bound_token(world, "pki-1", world.pki)


def test_pki_client_by_san_gets_a_certificate_bound_token(world: World) -> None:
    bound_token(world, "pki-san", world.pki_san)


def test_self_signed_client_with_another_certificate_is_refused(world: World) -> None:
    answer = world.token("self-1", world.stranger)
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"
    assert "not the registered one" in answer.json()["error_description"]


def test_pki_client_with_another_subject_is_refused(world: World) -> None:
    answer = world.token("pki-1", world.pki_san)
    assert answer.status_code == 401
    assert "another subject" in answer.json()["error_description"]


def test_pki_client_without_the_registered_san_is_refused(world: World) -> None:
    answer = world.token("pki-san", world.pki)
    assert answer.status_code == 401
    assert "lacks the dns SAN" in answer.json()["error_description"]


def test_certificate_without_client_id_is_refused(world: World) -> None:
    with world.client(world.self_signed) as http:
        answer = http.post(f"{world.as_url}/token", data={"audience": "temp"})
    assert answer.status_code == 401
    assert "client_id is required" in answer.json()["error_description"]


def test_tls_client_without_a_certificate_is_refused(world: World) -> None:
    answer = world.token("self-1", None)
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


# ---- the API -------------------------------------------------------------------------------------


def test_the_right_certificate_is_accepted(world: World) -> None:
    token = bound_token(world, "self-1", world.self_signed)
    response = call(world, token, world.self_signed)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "x5t#S256": certificate_thumbprint(world.self_signed.der),
        "sub": "self-1",
    }


def test_pki_token_with_its_certificate_is_accepted(world: World) -> None:
    token = bound_token(world, "pki-1", world.pki)
    assert call(world, token, world.pki).status_code == 200


def test_token_over_a_connection_with_another_certificate_is_refused(world: World) -> None:
    token = bound_token(world, "self-1", world.self_signed)
    assert_refused(call(world, token, world.stranger), "bound to another client certificate")


def test_token_over_a_connection_without_a_certificate_is_refused(world: World) -> None:
    token = bound_token(world, "self-1", world.self_signed)
    assert_refused(call(world, token, None), "no client certificate was sent")


def test_trusted_header_carries_the_certificate_from_a_proxy(world: World) -> None:
    token = bound_token(world, "pki-1", world.pki)
    pem = world.pki.cert.read_text()
    headers = {"Authorization": f"Bearer {token}", "X-Client-Cert": quote(pem)}
    response = httpx.get(f"{world.header_api_url}/whoami", headers=headers)
    assert response.status_code == 200, response.text
    other = {**headers, "X-Client-Cert": base64.b64encode(world.stranger.der).decode()}
    refused = httpx.get(f"{world.header_api_url}/whoami", headers=other)
    assert_refused(refused, "bound to another client certificate")


def test_trusted_header_absent_is_refused(world: World) -> None:
    token = bound_token(world, "pki-1", world.pki)
    response = httpx.get(
        f"{world.header_api_url}/whoami", headers={"Authorization": f"Bearer {token}"}
    )
    assert_refused(response, "no client certificate was sent")


def test_without_a_certificate_source_bearer_tokens_are_refused(world: World) -> None:
    token = bound_token(world, "pki-1", world.pki)
    app = PoPMiddleware(
        Starlette(routes=[Route("/whoami", whoami)]),
        verify_token=jwt_token_verifier_from_bundle(world.bundle),
        public_url="http://api.example",
    )
    transport = httpx.ASGITransport(app=app)

    async def ask() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as http:
            return await http.get("/whoami", headers={"Authorization": f"Bearer {token}"})

    response = asyncio.run(ask())
    assert response.status_code == 401
    assert "requires a proof-of-possession token" in response.text


# ---- PKI validation without TLS ----------------------------------------------------------------


def test_pki_certificate_of_another_ca_is_refused(tmp_path: Path) -> None:
    _, other_ca, other_key = make_pair(tmp_path, "other-ca", ca=True)
    _, trusted_ca, _ = make_pair(tmp_path, "trusted-ca", ca=True)
    leaf, leaf_cert, _ = make_pair(
        tmp_path, "leaf", issuer=(other_ca, other_key), san=x509.DNSName("leaf.example")
    )
    registration = TlsClientRegistration(method=PKI, subject_dn=leaf_cert.subject.rfc4514_string())
    with pytest.raises(InvalidClient, match="does not chain to a trusted CA"):
        registration.authenticate(leaf.der, trust_anchors=[trusted_ca], now=int(NOW.timestamp()))
    # and with its own CA as the anchor it passes
    assert registration.authenticate(
        leaf.der, trust_anchors=[other_ca], now=int(NOW.timestamp())
    ) == certificate_thumbprint(leaf.der)


def test_registration_round_trips_through_the_client_record() -> None:
    registration = TlsClientRegistration(method=PKI, san=("dns", "a.example"))
    assert TlsClientRegistration.decode(registration.encode()) == registration
    assert TlsClientRegistration.decode(b"\xa1\x01\x02") is None  # a CCS map is not one


def test_one_middleware_takes_all_three_bindings(world: World) -> None:
    """DPoP, a signature and a certificate, each against the real AS, at one API over TLS."""
    basic = base64.b64encode(f"web-1:{world.setup['web'].http_secret}".encode()).decode()
    form = {"grant_type": "client_credentials", "audience": "temp", "scope": "read"}
    with world.client(None) as http:
        dpop = DPoPAuth(ECKey.generate_key("P-256"))
        answer = http.post(
            f"{world.as_url}/token",
            data=form,
            headers={"Authorization": f"Basic {basic}"},
            auth=dpop,
        )
        assert answer.status_code == 200, answer.text
        dpop.access_token = answer.json()["access_token"]
        assert http.get(f"{world.api_url}/any", auth=dpop).json() == {"context": "DPoPContext"}

        answer = http.post(
            f"{world.as_url}/token",
            data={**form, "token_type": "pop"},
            headers={"Authorization": f"Basic {basic}"},
        )
        assert answer.status_code == 200, answer.text
        signed = HttpSignatureAuth.from_token_response(answer.json())
        reply = http.get(f"{world.api_url}/any", auth=signed)
        assert reply.json() == {"context": "SignatureContext"}

    token = bound_token(world, "pki-1", world.pki)
    with world.client(world.pki) as http:
        reply = http.get(f"{world.api_url}/any", headers={"Authorization": f"Bearer {token}"})
    assert reply.json() == {"context": "CertificateContext"}


def _ace_token(world: World, pair: Pair, request: dict[int, object]) -> httpx.Response:
    with world.client(pair) as http:
        return http.post(
            f"{world.as_url}/token",
            content=cbor.dumps(request),
            headers={"Content-Type": "application/ace+cbor"},
        )


def test_an_ace_cbor_request_authenticates_with_the_certificate(world: World) -> None:
    """RFC 9200 §5.8 over HTTPS: the certificate and ``client_id`` (24) authenticate; the
    OSCORE-profile token is bound to its OSCORE input material, not to the certificate."""
    answer = _ace_token(world, world.self_signed, {5: "temp", 24: "self-1"})
    assert answer.status_code == 201, answer.content
    assert answer.headers["content-type"] == "application/ace+cbor"
    body = cbor.loads(answer.content)
    assert body[38] == 2  # coap_oscore (RFC 9203)
    assert set(body[8]) == {4}  # cnf: osc, sent over TLS


def test_an_ace_cbor_request_with_a_certificate_and_no_client_id_is_refused(
    world: World,
) -> None:
    answer = _ace_token(world, world.self_signed, {5: "temp"})
    assert answer.status_code == 401, answer.content
    assert answer.headers["content-type"] == "application/ace+cbor"
    assert cbor.loads(answer.content)[30] == int(AceErrorCode.INVALID_CLIENT)


def test_an_ace_cbor_request_with_another_clients_certificate_is_refused(world: World) -> None:
    answer = _ace_token(world, world.stranger, {5: "temp", 24: "self-1"})
    assert answer.status_code == 401, answer.content
    assert cbor.loads(answer.content)[30] == int(AceErrorCode.INVALID_CLIENT)
