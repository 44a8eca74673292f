"""HTTP error responses: a :class:`~keybound.core.errors.KeyboundError` as status, headers, body.

:func:`render_http_error` is the one renderer of the AS's HTTP front
(:mod:`keybound.tools.authz_server.http`) and of the DPoP middleware of resource
servers (:mod:`keybound.tools.http.middleware`). What the endpoints do
differently is what their RFCs say, held as data in :class:`HttpErrorRules`:

- the token endpoint and introspection (RFC 6749 §5.2, RFC 7662 §2.3): the
  error's own status and a JSON body; ``invalid_client`` carries a challenge of
  the client authentication scheme, ``Basic`` (RFC 6749 §5.2, §2.3.1). At the
  token endpoint a bad DPoP proof and a missing nonce are 400 (RFC 9449 §5, §8):
  :data:`TOKEN_ENDPOINT_RULES`, :data:`INTROSPECTION_RULES`;
- a resource server (RFC 6750 §3, RFC 9449 §7.1): a resource access error code
  (:data:`keybound.core.errors.CHALLENGE_STATUS`) gets that code's status and a
  challenge of the scheme the request used (``DPoP``, ``PoP`` or ``Bearer``) with
  ``error`` and ``error_description``; a request without
  credentials gets the challenge without them and no body (RFC 6750 §3.1); other
  codes (a 503 of a full or unreachable store) keep their own status and go in the
  JSON body only: :func:`resource_server_rules`.

Every answer has ``Cache-Control: no-store`` (RFC 6749 §5.1, RFC 6750 §3); a
``use_dpop_nonce`` answer has the nonce in ``DPoP-Nonce`` (RFC 9449 §8.1, §9); a
``retry_after`` goes in ``Retry-After`` (RFC 9110 §10.2.3).

:meth:`HttpError.starlette` and :meth:`HttpError.asgi` frame the result for a
Starlette application and for plain ASGI.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from starlette.responses import JSONResponse, Response

from keybound.core.dpop_token_endpoint import TOKEN_ENDPOINT_STATUS
from keybound.core.errors import (
    CHALLENGE_STATUS,
    InvalidClient,
    InvalidDPoPProof,
    KeyboundError,
    TemporarilyUnavailable,
    UseDPoPNonce,
)

__all__ = [
    "INTROSPECTION_RULES",
    "TOKEN_ENDPOINT_RULES",
    "HttpError",
    "HttpErrorRules",
    "quote",
    "render_http_error",
    "resource_server_rules",
]

_NO_STATUSES: Mapping[str, int] = MappingProxyType({})


def quote(value: str) -> str:
    """An RFC 9110 §5.6.4 quoted-string of printable ASCII."""
    printable = "".join(char if " " <= char <= "~" else "?" for char in value)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class HttpErrorRules:
    """How one kind of HTTP endpoint answers an error (see the module docstring).

    :param statuses: per OAuth error code, the status that wins over the error's own.
    :param challenged: the error codes answered with ``WWW-Authenticate``.
    :param scheme: the challenge's authentication scheme.
    :param realm: the challenge's ``realm``, if any.
    :param describe: whether the challenge names the error (``error``,
        ``error_description``, ``scope``; RFC 6750 §3).
    :param algs: the challenge's ``algs`` (RFC 9449 §7.1); None leaves it out.
    """

    statuses: Mapping[str, int] = field(default_factory=lambda: _NO_STATUSES)
    challenged: frozenset[str] = frozenset()
    scheme: str = "Basic"
    realm: str | None = None
    describe: bool = False
    algs: tuple[str, ...] | None = None

    def challenge(self, err: KeyboundError | None, scopes: Collection[str] = ()) -> str:
        """The ``WWW-Authenticate`` value; ``err`` None leaves the error out."""
        params: list[str] = []
        if self.realm is not None:
            params.append(f"realm={quote(self.realm)}")
        if err is not None and self.describe:
            params.append(f"error={quote(err.error)}")
            params.append(f"error_description={quote(err.description)}")
            if scopes:
                params.append(f"scope={quote(' '.join(sorted(scopes)))}")
        if self.algs is not None:
            params.append(f"algs={quote(' '.join(self.algs))}")
        return f"{self.scheme} " + ", ".join(params)


#: ``/token`` (RFC 6749 §5.2; RFC 9449 §5, §8 for the DPoP errors).
TOKEN_ENDPOINT_RULES = HttpErrorRules(
    statuses=MappingProxyType(
        {
            InvalidDPoPProof.error: TOKEN_ENDPOINT_STATUS,
            UseDPoPNonce.error: TOKEN_ENDPOINT_STATUS,
        }
    ),
    challenged=frozenset({InvalidClient.error}),
    realm="keybound",
)

#: ``/introspect`` (RFC 7662 §2.3: the errors of RFC 6749 §5.2).
INTROSPECTION_RULES = HttpErrorRules(challenged=frozenset({InvalidClient.error}), realm="keybound")


def resource_server_rules(
    *, realm: str | None, algs: Collection[str] | None, scheme: str = "DPoP"
) -> HttpErrorRules:
    """A resource server's rules (RFC 6750 §3.1, RFC 9449 §7.1) for one authentication
    scheme: ``DPoP``, ``PoP`` (HTTP message signatures) or ``Bearer`` (certificate-bound
    tokens, RFC 8705 §3); ``algs`` None leaves the challenge's ``algs`` out."""
    return HttpErrorRules(
        statuses=CHALLENGE_STATUS,
        challenged=frozenset(CHALLENGE_STATUS),
        scheme=scheme,
        realm=realm,
        describe=True,
        algs=None if algs is None else tuple(algs),
    )


@dataclass(frozen=True)
class HttpError:
    """A rendered error: status, headers in the order sent, JSON body (None: no body)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: Mapping[str, str] | None = None

    def starlette(self) -> Response:
        """A Starlette response (Content-Length and Content-Type follow the headers)."""
        if self.body is None:
            return Response(status_code=self.status, headers=dict(self.headers))
        return JSONResponse(dict(self.body), status_code=self.status, headers=dict(self.headers))

    def asgi(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, raw headers and body for ``http.response.start`` and ``.body``
        (Content-Type follows Cache-Control)."""
        raw = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in self.headers
        ]
        if self.body is None:
            return self.status, raw, b""
        raw.insert(1, (b"content-type", b"application/json"))
        return self.status, raw, json.dumps(dict(self.body)).encode("utf-8")


def render_http_error(
    err: KeyboundError,
    rules: HttpErrorRules,
    *,
    scopes: Collection[str] = (),
    credentials: bool = True,
) -> HttpError:
    """The HTTP answer to ``err`` at an endpoint following ``rules``.

    ``scopes`` are the scopes the request needed (the challenge's ``scope``);
    ``credentials=False`` is a request that carried none, answered without an
    error code, description or body (RFC 6750 §3.1).
    """
    status = rules.statuses.get(err.error, err.http_status)
    headers = [("Cache-Control", "no-store")]
    if err.error in rules.challenged:
        headers.append(("WWW-Authenticate", rules.challenge(err if credentials else None, scopes)))
    if isinstance(err, UseDPoPNonce):
        headers.append(("DPoP-Nonce", err.nonce))
    if isinstance(err, TemporarilyUnavailable) and err.retry_after is not None:
        headers.append(("Retry-After", str(err.retry_after)))
    body = err.to_json() if credentials else None
    return HttpError(status, tuple(headers), body)
