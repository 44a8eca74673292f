"""An ASGI middleware that admits only proof-of-possession access tokens.

One middleware for the three HTTP bindings keybound's AS issues; which one a
request uses follows from its ``Authorization`` scheme and the token's ``cnf``:

=================  ===================  ===============================================
scheme             token ``cnf``        proof
=================  ===================  ===============================================
``DPoP``           ``jkt``              a ``DPoP`` proof header (RFC 9449 §7)
``PoP``            ``jwe``              an HTTP message signature (RFC 9421,
                                        ``hmac-sha256``) with the symmetric key sealed
                                        for this RS in ``cnf.jwe`` (RFC 7800 §3.3)
``Bearer``         ``x5t#S256``         the TLS client certificate of the connection
                                        (RFC 8705 §3)
=================  ===================  ===============================================

For each HTTP request under a protected path it reads the ``Authorization``
header, has the token checked by ``verify_token`` (the JWT codec or an
introspection client, which returns the token's claims or raises a
:class:`~keybound.core.errors.KeyboundError`), checks the proof of its binding,
checks the required scope, and only then calls the application.

- **DPoP**: the proof is checked against the request with
  :func:`keybound.core.dpop.verify_proof` (``htm``, ``htu``, ``ath``, the
  token's ``cnf.jkt``, an optional server nonce, the ``jti`` replay cache).
- **Signatures** (on when ``rs_token_keys`` is given): the PoP key is
  decrypted from ``cnf.jwe`` with the RS's token key
  (:func:`keybound.core.jwt.open_key`); the request must carry a
  ``Signature-Input``/``Signature`` pair whose ``keyid`` is that key's ``kid``,
  covering at least ``@method``, ``@target-uri``, ``authorization`` and, when
  the request has content, ``content-digest`` (RFC 9530), which must match the
  content; ``created`` no older than ``signature_window`` seconds, and a
  ``nonce`` kept in the same replay cache as DPoP ``jti`` values
  (:func:`keybound.core.http_signatures.verify_request`). The content is read
  (at most ``max_body_bytes``) before the application sees it, and handed to
  it unchanged.
- **Certificates** (on when ``client_certificate`` is given): the
  ``x5t#S256`` of the connection's client certificate must equal the token's
  (:func:`keybound.core.tls_client_auth.check_certificate_binding`). Where the
  certificate comes from is the ``client_certificate`` function:
  :func:`~keybound.tools.http.tls.tls_extension_certificate` reads the ASGI
  ``tls`` extension (uvicorn does not fill it in;
  :class:`~keybound.tools.http.tls.TlsExtensionH11Protocol` makes it do so),
  :func:`~keybound.tools.http.tls.trusted_header_certificate` a header set by
  a TLS-terminating proxy (only behind such a proxy, which must overwrite it).

The application finds the result as ``scope["state"]["keybound"]``, which
Starlette exposes as ``request.state.keybound``: a :class:`DPoPContext`, a
:class:`SignatureContext` or a :class:`CertificateContext`, each with the
token's claims. The middleware hands the application a new scope and a new
state dict; the server's are not modified.

**Which URL is checked.** ``htu`` and ``@target-uri`` are compared with
``public_url`` (the URL at which clients reach this application's root, e.g.
``https://api.example.com`` or ``https://example.com/api`` behind a
path-stripping proxy) followed by the request's raw path (and, for
``@target-uri``, its query). The ``Host`` header and proxy headers such as
``X-Forwarded-Host`` are never used: a client chooses them, so trusting them
would let a proof made for another server pass here (RFC 9449 §11.1).

Refusals (RFC 9449 §7.1, §7.2, §9; RFC 6750 §3; RFC 8705 §3):

- no ``Authorization``: 401, ``WWW-Authenticate: DPoP algs="..."`` (and a
  ``PoP`` and a ``Bearer`` challenge when those bindings are on);
- a ``DPoP`` proof without a token, an unknown scheme (``Bearer`` included
  unless certificates are on: a DPoP-bound token sent as ``Bearer`` is named
  as such, §7.2), a malformed or oversized token, a token ``verify_token``
  refuses, a token without the ``cnf`` of its scheme, a proof for another key,
  a bad, stale, replayed or incomplete signature, a changed content, a
  ``cnf.jwe`` not sealed for this RS, a missing or other client certificate:
  401 ``error="invalid_token"`` in a challenge of the scheme used;
- a missing, repeated, oversized or invalid proof, or a replayed ``jti``:
  401 ``error="invalid_dpop_proof"``;
- a nonce is required and missing or stale: 401 ``error="use_dpop_nonce"``
  with a ``DPoP-Nonce`` header;
- the token lacks a required scope: 403 ``error="insufficient_scope"``;
- the replay cache is full or unreachable, or the AS cannot be asked: 503
  with a JSON ``temporarily_unavailable`` body and no challenge.

Each error code is answered with the status RFC 6750 §3.1 and RFC 9449 §7.1
give it, whatever binding the error class was made for.

WebSocket connections to protected paths are closed before the handshake
completes (HTTP 403): the proofs are defined for HTTP requests.

The ready-made ``verify_token`` functions for keybound's AS are in
:mod:`keybound.tools.http.verifiers`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from keybound.core import jwt
from keybound.core.content_digest import verify_content_digest
from keybound.core.dpop import (
    DEFAULT_ALGS,
    DEFAULT_IAT_LEEWAY,
    DEFAULT_IAT_WINDOW,
    MAX_PROOF_LENGTH,
    VerifiedProof,
    normalize_htu,
    verify_proof,
)
from keybound.core.dpop_state import NonceChecker, ReplayCache
from keybound.core.errors import (
    InsufficientScope,
    InvalidDPoPProof,
    InvalidRequest,
    InvalidToken,
    KeyboundError,
    PayloadTooLarge,
)
from keybound.core.http_signatures import (
    DEFAULT_CREATED_LEEWAY,
    DEFAULT_CREATED_WINDOW,
    HMAC_SHA256,
    InvalidSignature,
    RequestParts,
    VerifiedSignature,
    verify_request,
)
from keybound.core.keys import Key
from keybound.core.tls_client_auth import check_certificate_binding
from keybound.tools.http.replay_cache import InMemoryReplayCache
from keybound.tools.http.verifiers import TokenVerifier

from .errors import HttpErrorRules, render_http_error, resource_server_rules

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_TOKEN_LENGTH",
    "SIGNATURE_COMPONENTS",
    "CertificateContext",
    "CertificateSource",
    "DPoPContext",
    "DPoPMiddleware",
    "PoPMiddleware",
    "SignatureContext",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Finds the DER client certificate of a request's TLS connection, or None.
CertificateSource = Callable[[Scope], bytes | None]

#: Upper bound of the access token in the Authorization header, in characters.
MAX_TOKEN_LENGTH = 8192
#: Upper bound of a signed request's content, read to check its Content-Digest.
MAX_BODY_BYTES: Final = 1024 * 1024
#: The components every signature must cover (``content-digest`` too with content).
SIGNATURE_COMPONENTS: Final = ("@method", "@target-uri", "authorization")

# RFC 9110 §11.2 token68, as RFC 9449 §4.1 and §7.1 use it.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_STATE_KEY = "keybound"


@dataclass(frozen=True)
class DPoPContext:
    """What the middleware established about a DPoP request; ``request.state.keybound``."""

    #: the access token's claims as returned by ``verify_token``
    claims: Mapping[str, Any] = field(repr=False)
    #: the checked DPoP proof; ``proof.jkt`` is the key the token is bound to
    proof: VerifiedProof


@dataclass(frozen=True)
class SignatureContext:
    """What the middleware established about a signed request (RFC 9421)."""

    claims: Mapping[str, Any] = field(repr=False)
    #: the checked signature: label, covered components, created, nonce
    signature: VerifiedSignature
    #: the ``kid`` of the PoP key from ``cnf.jwe`` (the signature's ``keyid``)
    key_id: str


@dataclass(frozen=True)
class CertificateContext:
    """What the middleware established about a certificate-bound request (RFC 8705 §3)."""

    claims: Mapping[str, Any] = field(repr=False)
    #: the ``x5t#S256`` of the connection's client certificate (= the token's)
    thumbprint: str


def _prefix_matches(prefix: str, path: str) -> bool:
    """Segment-wise prefix match: ``/admin`` matches ``/admin/x``, not ``/administrator``."""
    if prefix in ("", "/"):
        return True
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


def _granted_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """The ``scope`` claim as a set (RFC 8693 §4.2: space-separated; a list is accepted too)."""
    value = claims.get("scope")
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()


def _cnf_text(claims: Mapping[str, Any], method: str) -> str | None:
    cnf = claims.get("cnf")
    if isinstance(cnf, Mapping):
        value = cnf.get(method)
        if isinstance(value, str):
            return value
    return None


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already read content over once, then defers."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class PoPMiddleware:
    """Pure ASGI middleware requiring proof-of-possession access tokens on protected paths.

    :param app: the application to protect.
    :param verify_token: checks the access token and returns its claims
        (sync or async); it raises a ``KeyboundError`` (e.g. ``InvalidToken``)
        to refuse it.
    :param public_url: the trusted external URL of this application's root;
        ``htu`` and ``@target-uri`` must equal it followed by the request path.
        See the module docstring for why the ``Host`` header is not used.
    :param protected: path prefixes that need a token (default: everything),
        or a predicate on the request path.
    :param required_scopes: per path prefix, scopes the token must all carry
        (the longest matching prefix wins), or a function from the request
        path to those scopes.
    :param nonce_issuer: when given, every DPoP proof must carry a current nonce
        from it (RFC 9449 §9); successful responses carry the next nonce in
        ``DPoP-Nonce`` once the current one is about to be replaced (§8.2).
    :param replay_cache: where DPoP ``jti`` values and signature nonces are
        remembered (RFC 9449 §11.1); an :class:`InMemoryReplayCache` by default.
        Share one between the processes behind one URL, or single use is not
        enforced.
    :param clock: seconds since the epoch.
    :param rs_token_keys: this RS's token keys (the RS bundle's ``token_key``),
        with which the AS seals symmetric PoP keys in ``cnf.jwe``; given, signed
        requests with the ``PoP`` scheme are accepted (RFC 9421).
    :param signature_window: seconds a signature is accepted after ``created``.
    :param client_certificate: where the TLS client certificate of a request
        is found; given, certificate-bound tokens with the ``Bearer`` scheme are
        accepted (RFC 8705 §3).
    :param max_body_bytes: the largest content of a signed request.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        verify_token: TokenVerifier,
        public_url: str,
        protected: Sequence[str] | Callable[[str], bool] = ("/",),
        required_scopes: Mapping[str, Collection[str]]
        | Callable[[str], Collection[str]]
        | None = None,
        nonce_issuer: NonceChecker | None = None,
        replay_cache: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
        allowed_algs: Collection[str] = DEFAULT_ALGS,
        iat_window: int = DEFAULT_IAT_WINDOW,
        iat_leeway: int = DEFAULT_IAT_LEEWAY,
        realm: str | None = None,
        max_token_length: int = MAX_TOKEN_LENGTH,
        max_proof_length: int = MAX_PROOF_LENGTH,
        rs_token_keys: Key | Sequence[Key] | None = None,
        signature_window: int = DEFAULT_CREATED_WINDOW,
        client_certificate: CertificateSource | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.app = app
        self.verify_token = verify_token
        base = public_url.rstrip("/")
        try:
            normalize_htu(base + "/")
        except ValueError as err:
            raise ValueError(f"public_url {public_url!r} is not usable: {err}") from err
        if "?" in base or "#" in base:
            raise ValueError("public_url must not have a query or a fragment")
        self.public_url = base
        self.protected = protected
        self.required_scopes = required_scopes
        self.nonce_issuer = nonce_issuer
        self.replay_cache: ReplayCache = (
            replay_cache if replay_cache is not None else InMemoryReplayCache()
        )
        self.clock = clock
        self.allowed_algs = tuple(allowed_algs)
        self.iat_window = iat_window
        self.iat_leeway = iat_leeway
        self.realm = realm
        self.max_token_length = max_token_length
        self.max_proof_length = max_proof_length
        keys = [rs_token_keys] if isinstance(rs_token_keys, Key) else list(rs_token_keys or ())
        if any(not key.is_symmetric for key in keys):
            raise ValueError("rs_token_keys are the RS's symmetric token keys")
        self.rs_token_keys: tuple[Key, ...] = tuple(keys)
        self.signature_window = signature_window
        self.client_certificate = client_certificate
        self.max_body_bytes = max_body_bytes

    # ---- ASGI entry ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._is_protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        now = int(self.clock())
        try:
            context, receive = await self._authenticate(scope, receive, now)
        except KeyboundError as err:
            await self._refuse(send, err, self._scheme_of(scope))
            return
        state = dict(scope.get("state") or {})
        state[_STATE_KEY] = context
        inner_scope = dict(scope)
        inner_scope["state"] = state
        await self.app(inner_scope, receive, self._wrap_send(send, context, now))

    def _is_protected(self, path: str) -> bool:
        if callable(self.protected):
            return self.protected(path)
        return any(_prefix_matches(prefix, path) for prefix in self.protected)

    def _scopes_for(self, path: str) -> Collection[str]:
        if self.required_scopes is None:
            return ()
        if callable(self.required_scopes):
            return self.required_scopes(path)
        best: str | None = None
        for prefix in self.required_scopes:
            if _prefix_matches(prefix, path) and (best is None or len(prefix) > len(best)):
                best = prefix
        return self.required_scopes[best] if best is not None else ()

    # ---- the checks ----------------------------------------------------------------------

    @staticmethod
    def _single_header(scope: Scope, name: bytes) -> tuple[int, str | None]:
        values = [value for key, value in scope["headers"] if key.lower() == name]
        if not values:
            return 0, None
        return len(values), values[0].decode("latin-1")

    async def _claims_for(self, token: str) -> Mapping[str, Any]:
        result = self.verify_token(token)
        claims = await result if inspect.isawaitable(result) else result
        if not isinstance(claims, Mapping):
            raise InvalidToken("the token verifier returned no claims")
        return claims

    async def _off_loop_if_shared(self, check: Callable[[], Any]) -> Any:
        # A shared replay cache does database I/O: keep it off the event loop.
        if isinstance(self.replay_cache, InMemoryReplayCache):
            return check()
        return await asyncio.to_thread(check)

    def _check_scope(self, scope: Scope, claims: Mapping[str, Any]) -> None:
        required = frozenset(self._scopes_for(scope["path"]))
        missing = required - _granted_scopes(claims)
        if missing:
            raise _ScopeMissing(required, missing)

    async def _authenticate(
        self, scope: Scope, receive: Receive, now: int
    ) -> tuple[DPoPContext | SignatureContext | CertificateContext, Receive]:
        auth_count, authorization = self._single_header(scope, b"authorization")
        _, proof = self._single_header(scope, b"dpop")
        if authorization is None:
            if proof is not None:
                raise InvalidToken("a DPoP proof was sent without an access token")
            raise _NoCredentials
        if auth_count > 1:
            raise InvalidToken("more than one Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if len(token) > self.max_token_length:
            raise InvalidToken(
                f"the access token is longer than {self.max_token_length} characters"
            )
        if not token or _TOKEN68.fullmatch(token) is None:
            raise InvalidToken("the Authorization header does not carry a token68 credential")

        scheme = scheme.lower()
        if scheme == "bearer":
            return await self._certificate_bound(scope, token), receive
        if scheme == "dpop":
            return await self._dpop_bound(scope, token, now), receive
        if scheme == "pop" and self.rs_token_keys:
            return await self._signature_bound(scope, receive, token, now)
        raise InvalidToken(f"the authentication scheme {scheme!r} is not supported")

    async def _dpop_bound(self, scope: Scope, token: str, now: int) -> DPoPContext:
        proof_count, proof = self._single_header(scope, b"dpop")
        if proof is None:
            raise InvalidDPoPProof("the DPoP header with the proof is missing")
        if proof_count > 1:
            raise InvalidDPoPProof("more than one DPoP header")
        if len(proof) > self.max_proof_length:
            raise InvalidDPoPProof(
                f"the DPoP proof is longer than {self.max_proof_length} characters"
            )

        claims = await self._claims_for(token)
        jkt = _cnf_text(claims, "jkt")
        if jkt is None:
            raise InvalidToken("the access token is not bound to a DPoP key (no cnf.jkt)")
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        htu = self.public_url + raw_path.decode("latin-1")
        check = functools.partial(
            verify_proof,
            proof,
            htm=scope["method"],
            htu=htu,
            now=now,
            access_token=token,
            expected_jkt=jkt,
            nonce_checker=self.nonce_issuer,
            replay_cache=self.replay_cache,
            iat_window=self.iat_window,
            iat_leeway=self.iat_leeway,
            allowed_algs=self.allowed_algs,
            max_proof_length=self.max_proof_length,
        )
        verified = await self._off_loop_if_shared(check)
        self._check_scope(scope, claims)
        return DPoPContext(claims=MappingProxyType(dict(claims)), proof=verified)

    async def _certificate_bound(self, scope: Scope, token: str) -> CertificateContext:
        # RFC 9449 §7.2: a DPoP-bound token must never pass as a bearer token.
        claims = await self._claims_for(token)
        if _cnf_text(claims, "jkt") is not None:
            raise InvalidToken("a DPoP-bound access token was presented as a Bearer token")
        x5t = _cnf_text(claims, "x5t#S256")
        if x5t is None or self.client_certificate is None:
            if _cnf_text(claims, "jwe") is not None:
                raise InvalidToken("a signature-bound access token was presented as a Bearer token")
            raise InvalidToken("this resource requires a proof-of-possession token")
        check_certificate_binding(x5t, self.client_certificate(scope))
        self._check_scope(scope, claims)
        return CertificateContext(claims=MappingProxyType(dict(claims)), thumbprint=x5t)

    def _open_pop_key(self, sealed: str) -> Key:
        for kek in self.rs_token_keys:
            try:
                key = jwt.open_key(sealed, kek)
            except KeyboundError:
                continue
            if key.is_symmetric and key.secret:
                return key
        raise InvalidToken("the token's PoP key is not sealed for this resource server")

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise InvalidRequest("the client went away before its content was read")
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLarge(
                    f"a signed request's content is at most {self.max_body_bytes} bytes"
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _signature_bound(
        self, scope: Scope, receive: Receive, token: str, now: int
    ) -> tuple[SignatureContext, Receive]:
        claims = await self._claims_for(token)
        sealed = _cnf_text(claims, "jwe")
        if sealed is None:
            raise InvalidToken("the access token is not bound to a symmetric key (no cnf.jwe)")
        key = self._open_pop_key(sealed)
        keyid = key.to_jwk(include_private=True).get("kid")
        if keyid is None:
            raise InvalidToken("the token's PoP key has no kid to name it by")
        body = await self._read_body(receive)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
        ]
        required: tuple[str, ...] = SIGNATURE_COMPONENTS
        if body:
            required = (*required, "content-digest")
            digests = [value for name, value in headers if name.lower() == "content-digest"]
            if not digests:
                raise InvalidSignature("a signed request with content needs a Content-Digest")
            try:
                verify_content_digest(", ".join(digests), body)
            except InvalidRequest as err:
                raise InvalidSignature(err.description) from None
        raw_path = scope.get("raw_path") or scope["path"].encode("utf-8")
        query = scope.get("query_string", b"")
        target = self.public_url + raw_path.decode("latin-1")
        if query:
            target += "?" + query.decode("latin-1")
        request = RequestParts.from_pairs(scope["method"], target, headers)
        check = functools.partial(
            verify_request,
            request,
            key.secret or b"",
            keyid=keyid,
            now=now,
            required=required,
            window=self.signature_window,
            leeway=DEFAULT_CREATED_LEEWAY,
            replay_cache=self.replay_cache,
        )
        verified = await self._off_loop_if_shared(check)
        self._check_scope(scope, claims)
        context = SignatureContext(
            claims=MappingProxyType(dict(claims)), signature=verified, key_id=keyid
        )
        return context, _replaying(body, receive)

    # ---- responses -----------------------------------------------------------------------

    @staticmethod
    def _scheme_of(scope: Scope) -> str:
        for key, value in scope["headers"]:
            if key.lower() == b"authorization":
                return str(value.decode("latin-1")).strip().partition(" ")[0].lower()
        return ""

    def _rules(self, scheme: str) -> HttpErrorRules:
        if scheme == "pop" and self.rs_token_keys:
            return resource_server_rules(realm=self.realm, algs=(HMAC_SHA256,), scheme="PoP")
        if scheme == "bearer" and self.client_certificate is not None:
            return resource_server_rules(realm=self.realm, algs=None, scheme="Bearer")
        return resource_server_rules(realm=self.realm, algs=self.allowed_algs)

    async def _refuse(self, send: Send, err: KeyboundError, scheme: str) -> None:
        credentials = not isinstance(err, _NoCredentials)
        refusal = render_http_error(
            err,
            self._rules(scheme),
            scopes=err.required if isinstance(err, _ScopeMissing) else (),
            credentials=credentials,
        )
        status, headers, body = refusal.asgi()
        if not credentials:  # RFC 9110 §11.6.1: one challenge per scheme accepted here
            others = [
                name
                for name, on in (("pop", self.rs_token_keys), ("bearer", self.client_certificate))
                if on
            ]
            for name in others:
                challenge = self._rules(name).challenge(None)
                headers.append((b"www-authenticate", challenge.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _wrap_send(
        self, send: Send, context: DPoPContext | SignatureContext | CertificateContext, now: int
    ) -> Send:
        """Offer the next nonce on success when the client's one is not current (RFC 9449 §8.2)."""
        issuer = self.nonce_issuer
        if issuer is None or not isinstance(context, DPoPContext):
            return send
        current = issuer.issue(now)
        if context.proof.claims.get("nonce") == current:
            return send

        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (key, value)
                    for key, value in message.get("headers", [])
                    if key.lower() != b"dpop-nonce"
                ]
                headers.append((b"dpop-nonce", current.encode("ascii")))
                if not any(key.lower() == b"cache-control" for key, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        return send_with_nonce


#: The middleware's first name, from when it admitted DPoP-bound tokens only.
DPoPMiddleware = PoPMiddleware


class _NoCredentials(InvalidToken):
    """no access token was presented"""


class _ScopeMissing(InsufficientScope):
    """the token's scope does not allow this request"""

    def __init__(self, required: Collection[str], missing: Collection[str]) -> None:
        super().__init__(f"the access token lacks the scope {' '.join(sorted(missing))}")
        self.required = frozenset(required)
