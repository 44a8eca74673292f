"""Token verifiers for :class:`~keybound.tools.http.middleware.DPoPMiddleware`.

Two ready-made ``verify_token`` functions check the access tokens keybound's
AS issues (RFC 9449 §6, §7):

- :func:`jwt_token_verifier` checks the JWT locally with the AS's public key
  (:func:`jwt_token_verifier_from_bundle` takes it from an RS bundle's
  ``as_public_key``, :func:`jwt_token_verifier_from_metadata` from the AS
  metadata's ``jwks_uri``, RFC 8414 §2): signature, ``typ`` ``at+jwt``
  (RFC 9068 §4), ``iss``, ``aud`` and ``exp`` with
  :func:`keybound.core.jwt.decode` and :func:`keybound.core.validation.validate`;
- :func:`introspection_token_verifier` asks the AS at ``/introspect``
  (RFC 7662 §2; RFC 9449 §6.2 for ``cnf.jkt``), authenticated as the resource
  server with HTTP Basic, and so also sees revocation, at the price of one
  round trip per request.

The ``*_from_bundle`` variants take an :class:`~keybound.tools.bundles.RsBundle`
(``RsBundle.read(path)``) or the bundle's decoded JSON, which they read as
:class:`~keybound.tools.bundles.RsBundle` does; an unusable bundle is a
:class:`~keybound.tools.bundles.BundleError` (a ``ValueError``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any
from urllib.parse import quote_plus

import httpx

from keybound.core import jwt
from keybound.core.errors import InvalidToken, KeyboundError, TemporarilyUnavailable
from keybound.core.keys import Key
from keybound.core.validation import validate
from keybound.tools.bundles import BundleError, RsBundle

__all__ = [
    "ACCESS_TOKEN_ALGS",
    "IntrospectionUnavailable",
    "TokenVerifier",
    "introspection_token_verifier",
    "introspection_token_verifier_from_bundle",
    "jwt_token_verifier",
    "jwt_token_verifier_from_bundle",
    "jwt_token_verifier_from_metadata",
]

#: Checks an access token and returns its claims, or raises a KeyboundError.
TokenVerifier = Callable[[str], Awaitable[Mapping[str, Any]] | Mapping[str, Any]]

#: JWS algorithms accepted for access tokens by default (the AS signs with ES256).
ACCESS_TOKEN_ALGS: tuple[str, ...] = ("ES256", "ES384", "EdDSA")
_AT_JWT_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_MAX_AS_DOCUMENT = 64 * 1024


class IntrospectionUnavailable(TemporarilyUnavailable):
    """the authorization server's introspection endpoint could not be reached"""


def _as_key(value: Key | Mapping[str, Any]) -> Key:
    key = value if isinstance(value, Key) else Key.from_jwk(dict(value))
    if key.is_symmetric:
        raise ValueError("an access token verification key must be the AS's public key")
    return key.public_key() if key.has_private else key


def jwt_token_verifier(
    as_public_keys: Key | Mapping[str, Any] | Sequence[Key | Mapping[str, Any]],
    *,
    issuer: str,
    audience: str,
    algorithms: Collection[str] = ACCESS_TOKEN_ALGS,
    clock: Callable[[], float] = time.time,
    leeway: int = 0,
    revoked: Callable[[str], bool] | None = None,
) -> Callable[[str], Mapping[str, Any]]:
    """A ``verify_token`` that checks a JWT access token locally.

    The token must be a JWS by one of ``as_public_keys`` (keybound
    :class:`~keybound.core.keys.Key` objects or public JWKs) with an algorithm
    from ``algorithms``, of ``typ`` ``at+jwt`` (RFC 9068 §2.1, §4), issued by
    ``issuer`` for ``audience``, with an ``exp`` that has not passed
    (:func:`keybound.core.validation.validate`, RFC 7519 §4.1). The claims are
    returned as decoded, ``cnf.jkt`` included (RFC 9449 §6.1). Every refusal is
    an :class:`~keybound.core.errors.InvalidToken`.

    ``revoked`` tells whether the AS revoked a token: pass
    :meth:`keybound.tools.http.trl_follower.TrlFollower.is_revoked` to follow the AS's
    token revocation list (RFC 9770) without a round trip per request.
    """
    pool = [as_public_keys] if isinstance(as_public_keys, Key | Mapping) else as_public_keys
    keys = [_as_key(item) for item in pool]
    if not keys:
        raise ValueError("no key to check access tokens with")
    allowed = frozenset(algorithms)
    if not allowed <= jwt.SIGNATURE_ALGS - {"HS256"}:
        raise ValueError(f"not asymmetric JWS algorithms: {sorted(allowed)}")

    def verify(token: str) -> Mapping[str, Any]:
        try:
            decoded = jwt.decode(token, keys, allowed=allowed)
            typ = decoded.header.get("typ")
            if not isinstance(typ, str) or typ.lower() not in _AT_JWT_TYPES:
                raise InvalidToken("the JWT is not an access token (typ is not at+jwt)")
            validate(
                decoded.token,
                now=int(clock()),
                leeway=leeway,
                audience=audience,
                issuer=issuer,
                require=("exp",),
            )
        except InvalidToken:
            raise
        except KeyboundError as err:
            raise InvalidToken(err.description, claim=err.claim) from err
        if revoked is not None and revoked(token):
            raise InvalidToken("the token was revoked (on the AS's token revocation list)")
        return decoded.claims

    return verify


def jwt_token_verifier_from_bundle(
    bundle: RsBundle | Mapping[str, Any],
    *,
    clock: Callable[[], float] = time.time,
    leeway: int = 0,
    revoked: Callable[[str], bool] | None = None,
) -> Callable[[str], Mapping[str, Any]]:
    """:func:`jwt_token_verifier` with the ``as_public_key``, ``issuer`` and
    ``audience`` of an RS bundle (``keybound as rs add``); a bundle without the AS's
    public key or issuer is refused with a :class:`BundleError`."""
    rs = bundle if isinstance(bundle, RsBundle) else RsBundle.from_json(bundle)
    if rs.as_public_key is None:
        raise BundleError("the RS bundle lacks 'as_public_key'")
    if rs.issuer is None:
        raise BundleError("the RS bundle lacks 'issuer'")
    return jwt_token_verifier(
        rs.as_public_key,
        issuer=rs.issuer,
        audience=rs.audience,
        clock=clock,
        leeway=leeway,
        revoked=revoked,
    )


async def _get_json(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url, headers={"Accept": "application/json"})
    response.raise_for_status()
    if len(response.content) > _MAX_AS_DOCUMENT:
        raise ValueError(f"{url} answered with more than {_MAX_AS_DOCUMENT} bytes")
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError(f"{url} did not answer with a JSON object")
    return body


async def jwt_token_verifier_from_metadata(
    metadata_url: str,
    *,
    audience: str,
    issuer: str | None = None,
    client: httpx.AsyncClient | None = None,
    clock: Callable[[], float] = time.time,
    leeway: int = 0,
) -> Callable[[str], Mapping[str, Any]]:
    """:func:`jwt_token_verifier` with the keys of the AS's metadata (RFC 8414 §2,
    §3): ``metadata_url`` is the ``/.well-known/oauth-authorization-server``
    document; its ``jwks_uri`` gives the keys (RFC 7517 §5) and its
    ``issuer`` the expected ``iss``, which must equal ``issuer`` when given.

    Fetch the metadata over HTTPS (or from a trusted network): whoever answers
    chooses the keys. The keys are read once; call again after a key rotation.
    """
    own_client = client is None
    http = client if client is not None else httpx.AsyncClient(timeout=10.0)
    try:
        document = await _get_json(http, metadata_url)
        stated = document.get("issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(stated, str) or not isinstance(jwks_uri, str):
            raise ValueError("the AS metadata lacks issuer or jwks_uri")
        if issuer is not None and stated != issuer:
            raise ValueError(f"the AS metadata names issuer {stated!r}, not {issuer!r}")
        jwks = await _get_json(http, jwks_uri)
    finally:
        if own_client:
            await http.aclose()
    found = jwks.get("keys")
    if not isinstance(found, list):
        raise ValueError("the JWK Set has no keys list")
    keys = [item for item in found if isinstance(item, dict) and item.get("kty") != "oct"]
    return jwt_token_verifier(keys, issuer=stated, audience=audience, clock=clock, leeway=leeway)


def _aud_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _error_description(response: httpx.Response) -> str:
    """``": error: description"`` of an RFC 6749 §5.2 error body, bounded, or ``""``."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return ""
    described = f"{body['error']}: {body.get('error_description', '')}"
    return ": " + described[:300]


def introspection_token_verifier(
    introspection_url: str,
    *,
    rs_name: str,
    rs_secret: str,
    audience: str,
    client: httpx.AsyncClient | None = None,
    timeout: float = 5.0,
) -> Callable[[str], Awaitable[Mapping[str, Any]]]:
    """A ``verify_token`` that asks the AS whether the token is active (RFC 7662 §2).

    The resource server authenticates with HTTP Basic (``client_secret_basic``
    encoding, RFC 6749 §2.3.1) as ``rs_name`` with ``rs_secret``; keybound's AS
    expects the RS's name and its ``introspection.http_secret`` from the RS
    bundle, and answers only about tokens for that RS's audience. An inactive token,
    or one for another audience, is :class:`~keybound.core.errors.InvalidToken`;
    an unreachable or failing AS is :class:`IntrospectionUnavailable` (503).
    The answer carries ``cnf.jkt`` and ``token_type`` ``DPoP`` (RFC 9449 §6.2).
    Pass an ``httpx.AsyncClient`` to reuse connections; otherwise one is made
    per request.
    """
    credentials = (quote_plus(rs_name), quote_plus(rs_secret))

    async def ask(http: httpx.AsyncClient, token: str) -> httpx.Response:
        return await http.post(
            introspection_url,
            data={"token": token, "token_type_hint": "access_token"},
            auth=credentials,
            headers={"Accept": "application/json"},
        )

    async def verify(token: str) -> Mapping[str, Any]:
        try:
            if client is not None:
                response = await ask(client, token)
            else:
                async with httpx.AsyncClient(timeout=timeout) as http:
                    response = await ask(http, token)
        except httpx.HTTPError as err:
            raise IntrospectionUnavailable(f"introspection failed: {err!r}") from err
        if response.status_code != 200:
            raise IntrospectionUnavailable(
                f"the introspection endpoint answered {response.status_code}"
                + _error_description(response)
            )
        try:
            answer = response.json()
        except ValueError as err:
            raise IntrospectionUnavailable("the introspection answer is not JSON") from err
        if not isinstance(answer, dict) or answer.get("active") is not True:
            raise InvalidToken("the access token is not active")
        if audience not in _aud_list(answer.get("aud")):
            raise InvalidToken("the access token is not meant for this resource server")
        return answer

    return verify


def introspection_token_verifier_from_bundle(
    bundle: RsBundle | Mapping[str, Any],
    introspection_url: str,
    *,
    client: httpx.AsyncClient | None = None,
    timeout: float = 5.0,
) -> Callable[[str], Awaitable[Mapping[str, Any]]]:
    """:func:`introspection_token_verifier` authenticated with an RS bundle's ``name``
    and ``introspection.http_secret``; ``introspection_url`` is the AS's HTTP
    ``/introspect``. A bundle without that secret (written before the AS gave
    resource servers their own introspection credential) is refused with a
    :class:`BundleError` that names the command writing a new one."""
    if not isinstance(bundle, RsBundle):
        # An old bundle's refusal names the fix, whatever else its JSON lacks.
        introspection = bundle.get("introspection")
        if not isinstance(introspection, Mapping) or not introspection.get("http_secret"):
            raise _no_introspection_secret(bundle.get("name"))
        bundle = RsBundle.from_json(bundle)
    secret = bundle.introspection_secret
    if not secret:
        raise _no_introspection_secret(bundle.name)
    return introspection_token_verifier(
        introspection_url,
        rs_name=bundle.name,
        rs_secret=secret,
        audience=bundle.audience,
        client=client,
        timeout=timeout,
    )


def _no_introspection_secret(name: object) -> BundleError:
    return BundleError(
        "the RS bundle has no introspection.http_secret (the token key is not an "
        f"introspection credential): run `keybound as rotate-key {name} "
        "--introspection-secret` and use the bundle it writes"
    )
