"""An ASGI middleware that admits only DPoP-bound access tokens (RFC 9449 §7).

For each HTTP request under a protected path it reads
``Authorization: DPoP <token>`` and the ``DPoP`` proof header, has the token
checked by ``verify_token`` (the JWT codec or an introspection client, which
returns the token's claims or raises a :class:`~keybound.core.errors.KeyboundError`),
checks the proof against the request with
:func:`keybound.core.dpop.verify_proof` (``htm``, ``htu``, ``ath``, the
token's ``cnf.jkt``, an optional server nonce, the ``jti`` replay cache),
checks the required scope, and only then calls the application.

The application finds the result as ``scope["state"]["keybound"]``, which
Starlette exposes as ``request.state.keybound``: a :class:`DPoPContext` with
the token's claims and the verified proof. The middleware hands the
application a new scope and a new state dict; the server's are not modified.

**Which URL is checked.** ``htu`` is compared with ``public_url`` (the URL at
which clients reach this application's root, e.g. ``https://api.example.com``
or ``https://example.com/api`` behind a path-stripping proxy) followed by the
request's raw path. The ``Host`` header and proxy headers such as
``X-Forwarded-Host`` are never used: a client chooses them, so trusting them
would let a proof made for another server pass here (RFC 9449 §11.1).

Refusals (RFC 9449 §7.1, §7.2, §9; RFC 6750 §3):

- no ``Authorization``: 401, ``WWW-Authenticate: DPoP algs="..."``;
- a ``DPoP`` proof without a token, an unknown scheme (``Bearer`` included:
  a DPoP-bound token sent as ``Bearer`` is named as such, §7.2), a malformed
  or oversized token, a token ``verify_token`` refuses, a token without
  ``cnf.jkt``, or a proof for another key: 401 ``error="invalid_token"``;
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
completes (HTTP 403): DPoP proofs are defined for HTTP requests.

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
from typing import Any

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
    InvalidToken,
    KeyboundError,
)
from keybound.tools.http.replay_cache import InMemoryReplayCache
from keybound.tools.http.verifiers import TokenVerifier

from .errors import render_http_error, resource_server_rules

__all__ = ["MAX_TOKEN_LENGTH", "DPoPContext", "DPoPMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Upper bound of the access token in the Authorization header, in characters.
MAX_TOKEN_LENGTH = 8192

# RFC 9110 §11.2 token68, as RFC 9449 §4.1 and §7.1 use it.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_STATE_KEY = "keybound"


@dataclass(frozen=True)
class DPoPContext:
    """What the middleware established about a request; ``request.state.keybound``."""

    #: the access token's claims as returned by ``verify_token``
    claims: Mapping[str, Any] = field(repr=False)
    #: the checked DPoP proof; ``proof.jkt`` is the key the token is bound to
    proof: VerifiedProof


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


class DPoPMiddleware:
    """Pure ASGI middleware requiring DPoP-bound access tokens on protected paths.

    :param app: the application to protect.
    :param verify_token: checks the access token and returns its claims
        (sync or async); it raises a ``KeyboundError`` (e.g. ``InvalidToken``)
        to refuse it. Token claims must carry ``cnf.jkt`` (RFC 9449 §6.1).
    :param public_url: the trusted external URL of this application's root;
        ``htu`` must equal it followed by the request path. See the module
        docstring for why the ``Host`` header is not used.
    :param protected: path prefixes that need a token (default: everything),
        or a predicate on the request path.
    :param required_scopes: per path prefix, scopes the token must all carry
        (the longest matching prefix wins), or a function from the request
        path to those scopes.
    :param nonce_issuer: when given, every proof must carry a current nonce
        from it (RFC 9449 §9); successful responses carry the next nonce in
        ``DPoP-Nonce`` once the current one is about to be replaced (§8.2).
    :param replay_cache: where ``jti`` values are remembered (RFC 9449 §11.1);
        an :class:`InMemoryReplayCache` by default. Share one between the
        processes behind one URL, or single use is not enforced.
    :param clock: seconds since the epoch.
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
            context = await self._authenticate(scope, now)
        except KeyboundError as err:
            await self._refuse(send, err, now)
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

    @staticmethod
    def _bound_jkt(claims: Mapping[str, Any]) -> str | None:
        cnf = claims.get("cnf")
        if isinstance(cnf, Mapping):
            jkt = cnf.get("jkt")
            if isinstance(jkt, str):
                return jkt
        return None

    async def _authenticate(self, scope: Scope, now: int) -> DPoPContext:
        auth_count, authorization = self._single_header(scope, b"authorization")
        proof_count, proof = self._single_header(scope, b"dpop")
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

        if scheme.lower() == "bearer":
            # RFC 9449 §7.2: a DPoP-bound token must never pass as a bearer token.
            claims = await self._claims_for(token)
            if self._bound_jkt(claims) is not None:
                raise InvalidToken("a DPoP-bound access token was presented as a Bearer token")
            raise InvalidToken("this resource requires the DPoP authentication scheme")
        if scheme.lower() != "dpop":
            raise InvalidToken(f"the authentication scheme {scheme!r} is not supported")

        if proof is None:
            raise InvalidDPoPProof("the DPoP header with the proof is missing")
        if proof_count > 1:
            raise InvalidDPoPProof("more than one DPoP header")
        if len(proof) > self.max_proof_length:
            raise InvalidDPoPProof(
                f"the DPoP proof is longer than {self.max_proof_length} characters"
            )

        claims = await self._claims_for(token)
        jkt = self._bound_jkt(claims)
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
        # A shared replay cache does database I/O: keep it off the event loop.
        in_memory = isinstance(self.replay_cache, InMemoryReplayCache)
        verified = check() if in_memory else await asyncio.to_thread(check)
        required = frozenset(self._scopes_for(scope["path"]))
        missing = required - _granted_scopes(claims)
        if missing:
            raise _ScopeMissing(required, missing)
        return DPoPContext(claims=MappingProxyType(dict(claims)), proof=verified)

    # ---- responses -----------------------------------------------------------------------

    async def _refuse(self, send: Send, err: KeyboundError, now: int) -> None:
        rules = resource_server_rules(realm=self.realm, algs=self.allowed_algs)
        refusal = render_http_error(
            err,
            rules,
            scopes=err.required if isinstance(err, _ScopeMissing) else (),
            credentials=not isinstance(err, _NoCredentials),
        )
        status, headers, body = refusal.asgi()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _wrap_send(self, send: Send, context: DPoPContext, now: int) -> Send:
        """Offer the next nonce on success when the client's one is not current (RFC 9449 §8.2)."""
        issuer = self.nonce_issuer
        if issuer is None:
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


class _NoCredentials(InvalidToken):
    """no access token was presented"""


class _ScopeMissing(InsufficientScope):
    """the token's scope does not allow this request"""

    def __init__(self, required: Collection[str], missing: Collection[str]) -> None:
        super().__init__(f"the access token lacks the scope {' '.join(sorted(missing))}")
        self.required = frozenset(required)
