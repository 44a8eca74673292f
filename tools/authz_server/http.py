"""The Authorization Server's HTTP front (Starlette): token, introspection, metadata.

* ``POST /token`` — RFC 6749 §4.4 client credentials, form-encoded, JSON answer,
  ``client_secret_basic`` (RFC 6749 §2.3.1). PoP parameters of
  draft-ietf-oauth-pop-key-distribution §4: ``token_type=pop``, ``alg``,
  ``key`` (a public JWK, bound as ``cnf.jwk``) and ``aud``. Without ``key`` the
  AS makes a symmetric key, seals it for the RS in ``cnf.jwe`` (RFC 7800 §3.3)
  and returns it to the client in ``key``. A request with a ``DPoP`` header
  gets a JWT bound to the proof's key with ``cnf.jkt`` and ``token_type``
  ``DPoP`` (RFC 9449 §5, §6.1): the proof is checked against the token
  endpoint URL derived from the configured ``base_url`` (never the ``Host``
  header), single use and, when configured, a server nonce (§8); a bad proof
  is 400 ``invalid_dpop_proof``, a missing or stale nonce 400
  ``use_dpop_nonce`` with ``DPoP-Nonce`` (see
  :mod:`keybound.core.dpop_token_endpoint`). With a :class:`MutualTlsPolicy`
  (HTTPS with client certificates) a client registered for mutual-TLS
  authentication (RFC 8705 §2.1 PKI, §2.2 self-signed) authenticates with its
  TLS certificate and ``client_id`` instead of Basic, and gets a JWT bound to
  that certificate (``cnf`` ``x5t#S256``, ``token_type`` ``Bearer``, §3); a
  bad certificate is 401 ``invalid_client``. No refresh tokens are issued. A
  :data:`TokenRequestHook` lets a deployment rewrite the parsed request
  before it is issued.

  The same endpoint takes ACE token requests (RFC 9200 §5.8) in
  ``application/ace+cbor`` (§8.16): a CBOR map with the abbreviations of §8.10,
  parsed as the CoAP ``/token`` parses it, the client authenticated with
  ``client_secret_basic`` or, with a :class:`MutualTlsPolicy`, its TLS certificate
  and the map's ``client_id`` (the token is then bound as its profile says, not
  to the certificate), issued by the same :class:`AuthzService`. The answer
  is 201 Created (the HTTP equivalent of §5.8.2's 2.01) with the CBOR response
  the CoAP endpoint sends (``access_token``, ``expires_in``, ``ace_profile``,
  ``rs_cnf`` and ``edhoc_info`` for draft-ietf-ace-edhoc-oscore-profile-11,
  ``cnf`` ``osc`` for RFC 9203); an error is the §5.8.3 CBOR map (``error`` as
  its abbreviation of §8.4) with the status of RFC 6749 §5.2. The body is
  bounded by ``MAX_REQUEST_BYTES`` (413 past it). An OSCORE-profile token
  carries the master secret to the client: over plain HTTP it is issued only when
  the AS's published URL is ``https`` (TLS in front) or on loopback, or when the
  AS runs ``--insecure`` (400 ``invalid_request`` otherwise, before anything is
  minted or recorded).
* ``POST /introspect`` — RFC 7662, with ``cnf``. Callers authenticate with HTTP
  Basic: a client with its secret (it learns about its own tokens), or a
  resource server with its name and its introspection secret from the RS
  bundle's ``introspection.http_secret`` (it learns about tokens for its
  audience). The RS's token key is not a credential here: it is a different
  secret, stored hashed (scrypt), replaced on its own.
* ``GET /.well-known/oauth-authorization-server`` — RFC 8414 §2, with
  ``dpop_signing_alg_values_supported`` (RFC 9449 §5.1), ``jwks_uri`` and, with
  mutual TLS, ``tls_client_certificate_bound_access_tokens`` (RFC 8705 §3.3) and
  the two TLS authentication methods (§2.1.1, §2.2.1).
* ``GET /jwks`` — the AS's public signing key as a JWK Set (RFC 7517 §5), for
  resource servers that check JWT access tokens themselves.
* ``GET /revoke/trl`` — the token revocation list (RFC 9770 §6) in
  ``application/ace-trl+cbor``, with the same Basic credentials as ``/introspect``:
  an RS sees the hashes of tokens for its audience, a client those of its own tokens.

:func:`check_listen` refuses a non-loopback address without TLS unless the
operator insists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote_plus, urlsplit

from cryptography import x509
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from keybound.coap.authz_service import AuthzService
from keybound.core import cbor, trl
from keybound.core.authz_server import (
    MAX_REQUEST_BYTES,
    AuthzServerConfig,
    TokenGrant,
    TokenRequest,
    TokenResponse,
    parse_cbor_token_request,
    parse_form_token_request,
)
from keybound.core.authz_store import AuthzStore, Client, TrlStore, trl_requester
from keybound.core.dpop import DEFAULT_ALGS
from keybound.core.dpop_token_endpoint import (
    DPoPTokenEndpointPolicy,
    check_token_request_proof,
)
from keybound.core.errors import (
    InvalidClient,
    InvalidRequest,
    KeyboundError,
    PayloadTooLarge,
)
from keybound.core.numbers.ace_parameters import AceParameter
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.numbers.trl import MEDIA_TYPE_ACE_TRL_CBOR, MEDIA_TYPE_CONCISE_PROBLEM_DETAILS
from keybound.core.tls_client_auth import PKI, SELF_SIGNED, TlsClientRegistration
from keybound.tools.http.errors import INTROSPECTION_RULES, TOKEN_ENDPOINT_RULES, render_http_error
from keybound.tools.http.replay_cache import InMemoryReplayCache
from keybound.tools.http.tls import tls_extension_certificate

__all__ = [
    "ACE_PROFILES_SUPPORTED",
    "DPOP_SIGNING_ALGS",
    "DPoPTokenEndpointPolicy",
    "MutualTlsPolicy",
    "TokenRequestHook",
    "check_listen",
    "create_app",
    "metadata",
]

log = logging.getLogger("keybound.as.http")

TokenRequestHook = Callable[[Request, TokenRequest], Awaitable[TokenRequest]]
"""Called with the HTTP request and the parsed token request before issuing; returns
the request to issue (e.g. with a DPoP key bound). Raise a KeyboundError to refuse."""

DPOP_SIGNING_ALGS: tuple[str, ...] = DEFAULT_ALGS
"""The default ``dpop_signing_alg_values_supported`` (RFC 9449 §5.1): the proof
algorithms the token endpoint accepts unless its :class:`DPoPTokenEndpointPolicy`
says otherwise."""

_FORM = "application/x-www-form-urlencoded"
_ACE_CBOR = "application/ace+cbor"
"""RFC 9200 §8.16: ACE requests and responses in CBOR (CoAP Content-Format 19)."""

ACE_PROFILES_SUPPORTED: tuple[str, ...] = (
    AceProfile.COAP_OSCORE.text,
    AceProfile.COAP_EDHOC_OSCORE.text,
)
"""The ACE profiles this AS issues tokens for (RFC 9200 §8.8 names, ``ace_profiles_supported``
of RFC 9200 §5.1); the EDHOC one under the name of draft-ietf-ace-edhoc-oscore-profile-11."""


@dataclass(frozen=True)
class MutualTlsPolicy:
    """Mutual-TLS client authentication at the token endpoint (RFC 8705 §2).

    The server must ask for client certificates (uvicorn ``ssl_cert_reqs``
    ``CERT_OPTIONAL``, ``ssl_ca_certs`` trusting the PKI CAs and each
    self-signed client certificate) and hand them over in the ASGI ``tls``
    extension (:class:`keybound.tools.http.tls.TlsExtensionH11Protocol`).
    ``trust_anchors`` are the CA certificates a PKI client's certificate must
    chain to (§2.1); the leaf must be signed by one of them directly, since the
    TLS layer hands over the client's certificate only.
    """

    trust_anchors: tuple[x509.Certificate, ...] = ()


def metadata(
    issuer: str,
    base_url: str,
    *,
    dpop_algs: Sequence[str] | None = None,
    mutual_tls: bool = False,
) -> dict[str, Any]:
    """Authorization server metadata (RFC 8414 §2; RFC 9449 §5.1 for DPoP; RFC 8705 §2.1.1,
    §2.2.1, §3.3 for mutual TLS)."""
    out: dict[str, Any] = {
        "issuer": issuer,
        "token_endpoint": f"{base_url}/token",
        "introspection_endpoint": f"{base_url}/introspect",
        "jwks_uri": f"{base_url}/jwks",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic"],
        "token_types_supported": ["pop", "DPoP"],
        "ace_profiles_supported": list(ACE_PROFILES_SUPPORTED),
        "dpop_signing_alg_values_supported": list(
            DPOP_SIGNING_ALGS if dpop_algs is None else dpop_algs
        ),
    }
    if mutual_tls:
        out["token_endpoint_auth_methods_supported"] += [PKI, SELF_SIGNED]
        out["token_types_supported"] = [*out["token_types_supported"], "Bearer"]
        out["tls_client_certificate_bound_access_tokens"] = True
    return out


def _cbor_client_id(body: bytes) -> str | None:
    """The ``client_id`` (24) of a CBOR token request, for TLS client authentication
    (RFC 8705 §2 requires it); the request is parsed in full afterwards."""
    decoded = cbor.loads(body, max_size=MAX_REQUEST_BYTES)
    claimed = decoded.get(AceParameter.CLIENT_ID.value) if isinstance(decoded, dict) else None
    return claimed if isinstance(claimed, str) else None


def _log_issued(kind: str, response: TokenResponse, note: str) -> None:
    record = response.record
    log.info(
        "issued %s %s to %s for %s, scope %r%s",
        kind,
        record.cti.hex(),
        record.client_id,
        record.audience,
        record.scope,
        note,
    )


def _basic(request: Request) -> tuple[str, str]:
    """``client_secret_basic`` credentials (RFC 6749 §2.3.1: form-urlencoded, then Basic)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        raise InvalidClient("HTTP Basic client authentication is required")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials")
    return unquote_plus(user), unquote_plus(password)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _bounded_body(request: Request) -> bytes:
    """The request body, refused past :data:`MAX_REQUEST_BYTES` as it arrives."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_REQUEST_BYTES:
            raise PayloadTooLarge(
                f"request body larger than {MAX_REQUEST_BYTES} bytes", limit=MAX_REQUEST_BYTES
            )
    return body


async def _form(request: Request) -> dict[str, str]:
    if _media_type(request) != _FORM:
        raise InvalidRequest(f"the body must be {_FORM}")
    body = await _bounded_body(request)
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=False, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the body is not a valid form") from None
    form: dict[str, str] = {}
    for name, values in parsed.items():
        if len(values) != 1:
            raise InvalidRequest(f"parameter {name!r} is repeated (RFC 6749 §3.2)")
        form[name] = values[0]
    return form


def create_app(
    store: AuthzStore,
    config: AuthzServerConfig,
    *,
    base_url: str,
    token_request_hook: TokenRequestHook | None = None,
    dpop: DPoPTokenEndpointPolicy | None = None,
    clock: Callable[[], int] = lambda: int(time.time()),
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    service: AuthzService | None = None,
    mutual_tls: MutualTlsPolicy | None = None,
    insecure: bool = False,
) -> Starlette:
    """The Starlette app.

    ``base_url`` is the trusted external URL of the app's root: the metadata
    names endpoints under it, and DPoP proofs at the token endpoint must carry
    ``htu`` ``{base_url}/token`` (RFC 9449 §4.3 check 9). ``dpop`` sets the
    nonce requirement, replay cache and algorithms of DPoP (RFC 9449 §5, §8);
    by default proofs are accepted without a nonce, their ``jti`` values kept
    in an :class:`~keybound.tools.http.replay_cache.InMemoryReplayCache`. ``service`` answers the
    requests (one may be shared with the CoAP site); by default one on ``store``
    and ``config``. Store work runs in worker threads, off the event loop.
    ``mutual_tls`` turns on client authentication with TLS certificates and
    certificate-bound tokens (RFC 8705). ``insecure`` (the AS's ``--insecure``) lets
    OSCORE-profile tokens, whose answer carries the OSCORE master secret, go out
    over plain HTTP beyond loopback.
    """
    answering = service if service is not None else AuthzService(store, config)
    token_endpoint = f"{base_url.rstrip('/')}/token"
    published = urlsplit(base_url)
    published_safely = published.scheme == "https" or _is_loopback(published.hostname or "")
    dpop_policy = (
        dpop if dpop is not None else DPoPTokenEndpointPolicy(replay_cache=InMemoryReplayCache())
    )

    def _secrets_may_go(request: Request) -> Callable[[TokenGrant], None]:
        """Refuse a grant whose answer carries OSCORE input material (RFC 9203 §3.2) over
        plain HTTP beyond loopback: the secret would cross the network in clear. The
        published ``base_url`` says where clients reach the AS: ``https`` (TLS here or in
        front of it) or a loopback host is safe; a request over TLS is safe."""
        protected = published_safely or insecure or request.url.scheme == "https"

        def check(grant: TokenGrant) -> None:
            if grant.profile == AceProfile.COAP_OSCORE and not protected:
                raise InvalidRequest(
                    "an OSCORE-profile token carries the master secret: request it over HTTPS"
                )

        return check

    async def ace_token(request: Request) -> Response:
        """``POST /token`` in ``application/ace+cbor`` (RFC 9200 §5.8)."""
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            certificate = None if mutual_tls is None else tls_extension_certificate(request.scope)
            if certificate is not None and "authorization" not in request.headers:
                body = await _bounded_body(request)
                client, _ = await asyncio.to_thread(
                    _tls_client, _cbor_client_id(body), certificate, clock()
                )
            else:
                client_id, secret = _basic(request)
                client = await asyncio.to_thread(store.verify_client_secret, client_id, secret)
                body = await _bounded_body(request)
            parsed = parse_cbor_token_request(body, client.client_id)
            if token_request_hook is not None:
                parsed = await token_request_hook(request, parsed)
            response = await answering.issue_token_batched(
                parsed,
                now=clock(),
                random_bytes=random_bytes,
                client=client,
                check_grant=_secrets_may_go(request),
            )
        except KeyboundError as err:
            log.info("ACE token request refused: %s", err)
            rendered = render_http_error(err, TOKEN_ENDPOINT_RULES)
            return Response(
                cbor.dumps(err.to_cbor_map()),
                status_code=rendered.status,
                headers=dict(rendered.headers),
                media_type=_ACE_CBOR,
            )
        _log_issued("token", response, f", profile {response.ace_profile}")
        return Response(
            cbor.dumps(response.to_cbor_map()),
            status_code=201,  # RFC 9200 §5.8.2: the equivalent of 2.01 (Created)
            headers=headers,
            media_type=_ACE_CBOR,
        )

    async def token(request: Request) -> Response:
        if _media_type(request) == _ACE_CBOR:
            return await ace_token(request)
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            if _media_type(request) != _FORM:
                raise InvalidRequest(f"the body must be {_FORM} (OAuth) or {_ACE_CBOR} (ACE)")
            now = clock()
            certificate = None if mutual_tls is None else tls_extension_certificate(request.scope)
            x5t: str | None = None
            if certificate is not None and "authorization" not in request.headers:
                form = await _form(request)
                client, x5t = await asyncio.to_thread(
                    _tls_client, form.get("client_id"), certificate, now
                )
            else:
                client_id, secret = _basic(request)
                # scrypt and the database block: run them off the event loop.
                client = await asyncio.to_thread(store.verify_client_secret, client_id, secret)
                form = await _form(request)
            # The replay cache may be the database (tools.dpop_replay_cache): off the loop too.
            proof = await asyncio.to_thread(
                check_token_request_proof,
                request.headers.getlist("dpop"),
                form,
                token_endpoint=token_endpoint,
                policy=dpop_policy,
                now=now,
            )
            parsed = parse_form_token_request(
                form,
                client.client_id,
                dpop_jkt=None if proof is None else proof.jkt,
                tls_x5t=x5t,
            )
            if token_request_hook is not None:
                parsed = await token_request_hook(request, parsed)
            response = await answering.issue_token_batched(
                parsed, now=now, random_bytes=random_bytes, client=client
            )
        except KeyboundError as err:
            log.info("token request refused: %s", err)
            return render_http_error(err, TOKEN_ENDPOINT_RULES).starlette()
        nonces = dpop_policy.nonce_issuer
        if proof is not None and nonces is not None:
            current = nonces.issue(now)
            if proof.claims.get("nonce") != current:
                headers["DPoP-Nonce"] = current  # RFC 9449 §8.2: the next nonce
        _log_issued(
            "JWT",
            response,
            ", DPoP-bound" if proof is not None else ", certificate-bound" if x5t else "",
        )
        return JSONResponse(response.to_json(), headers=headers)

    def _tls_client(client_id: str | None, certificate: bytes, now: int) -> tuple[Client, str]:
        """The client a TLS certificate authenticates (RFC 8705 §2) and the certificate's
        ``x5t#S256``; ``client_id`` is required (§2)."""
        assert mutual_tls is not None
        if not client_id:
            raise InvalidClient("client_id is required with TLS client authentication")
        client = store.get_client(client_id)
        registration = None if client is None else TlsClientRegistration.decode(client.credential)
        if client is None or registration is None:
            raise InvalidClient("client authentication failed")
        x5t = registration.authenticate(
            certificate, trust_anchors=mutual_tls.trust_anchors, now=now
        )
        return client, x5t

    def _caller(user: str, password: str) -> tuple[str, str]:
        if store.get_resource_server(user) is not None:
            # The RS's own introspection secret, never its token key: whoever knows the
            # token key can decrypt every token's secrets and mint tokens for the RS.
            return "rs", store.verify_introspection_secret(user, password).audience
        return "client", store.verify_client_secret(user, password).client_id

    async def introspection(request: Request) -> Response:
        try:
            kind, who = await asyncio.to_thread(_caller, *_basic(request))
            form = await _form(request)
            token_text = form.get("token")
            if not token_text:
                raise InvalidRequest("token is required (RFC 7662 §2.1)")
            audiences = [who] if kind == "rs" else None
            result = await asyncio.to_thread(
                answering.introspect, token_text, now=clock(), audiences=audiences
            )
            if kind == "client" and result.record is not None and result.record.client_id != who:
                result = type(result)(active=False)
        except KeyboundError as err:
            return render_http_error(err, INTROSPECTION_RULES).starlette()
        log.info("introspection by %s %s: active=%s", kind, who, result.active)
        return JSONResponse(result.to_json(), headers={"Cache-Control": "no-store"})

    def _requester(user: str, password: str) -> str:
        if store.get_resource_server(user) is not None:
            return trl_requester("rs", store.verify_introspection_secret(user, password).name)
        return trl_requester("client", store.verify_client_secret(user, password).client_id)

    def _trl_answer(requester: str, query: list[str]) -> bytes:
        trl_store = cast(TrlStore, store)
        hashes, collection = trl_store.trl_view(requester)
        return trl.answer(query, lambda: hashes, collection, trl_store.trl_limits)

    async def revocation_list(request: Request) -> Response:
        """``GET /revoke/trl`` (RFC 9770 §6) for RSs and clients with HTTP credentials."""
        try:
            requester = await asyncio.to_thread(_requester, *_basic(request))
            query = [f"{k}={v}" for k, v in request.query_params.multi_items()][:8]
            payload = await asyncio.to_thread(_trl_answer, requester, query)
        except trl.TrlQueryError as err:
            return Response(
                err.problem_details(),
                status_code=400,
                media_type=MEDIA_TYPE_CONCISE_PROBLEM_DETAILS,
                headers={"Cache-Control": "no-store"},
            )
        except KeyboundError as err:
            return render_http_error(err, INTROSPECTION_RULES).starlette()
        return Response(
            payload, media_type=MEDIA_TYPE_ACE_TRL_CBOR, headers={"Cache-Control": "no-store"}
        )

    async def well_known(request: Request) -> Response:
        return JSONResponse(
            metadata(
                config.issuer,
                base_url.rstrip("/"),
                dpop_algs=dpop_policy.allowed_algs,
                mutual_tls=mutual_tls is not None,
            )
        )

    async def jwks(request: Request) -> Response:
        public = config.public_key.to_jwk()
        public.setdefault("alg", "ES256")
        public.setdefault("use", "sig")
        return JSONResponse({"keys": [public]})

    return Starlette(
        routes=[
            Route("/token", token, methods=["POST"]),
            Route("/introspect", introspection, methods=["POST"]),
            Route("/.well-known/oauth-authorization-server", well_known, methods=["GET"]),
            Route("/jwks", jwks, methods=["GET"]),
            *(
                [Route("/revoke/trl", revocation_list, methods=["GET"])]
                if hasattr(store, "trl_view")  # a store that keeps the TRL (RFC 9770)
                else []
            ),
        ]
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen(host: str, *, tls: bool, insecure: bool) -> None:
    """Refuse plain HTTP beyond loopback (RFC 6749 §2.3.1 requires TLS) unless ``insecure``."""
    if tls or insecure:
        return
    if not _is_loopback(host):
        raise ValueError(
            f"refusing to serve HTTP on {host} without TLS: give --cert and --keyfile, "
            "or --insecure for a test network"
        )
