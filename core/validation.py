"""Claim validation, separate from decoding (RFC 7519 §4.1, RFC 8392 §3, RFC 9200 §5.10.1.1).

Decoding checks signatures and MACs; :func:`validate` then checks the claims
against an injected clock. A claim error names the claim.
"""

from __future__ import annotations

from collections.abc import Collection

from .errors import ExpiredToken, InvalidAudience, InvalidClaim, InvalidIssuer, NotYetValid
from .token import AccessToken


def validate(
    token: AccessToken,
    *,
    now: int | None,
    leeway: int = 0,
    audience: str | Collection[str] | None = None,
    issuer: str | Collection[str] | None = None,
    require: Collection[str] = (),
) -> AccessToken:
    """Raise unless ``token`` is valid at ``now`` for ``audience`` from ``issuer``.

    ``now=None`` means the caller has no clock: ``exp``/``nbf`` cannot be
    checked and the caller must rely on ``exi`` (RFC 9200 §5.10.3).
    ``require`` names claims that must be present.
    """
    for claim in require:
        if getattr(token, claim, None) in (None, ()):
            raise InvalidClaim(f"the {claim} claim is required", claim=claim)
    if now is not None:
        if token.exp is not None and now >= token.exp + leeway:
            raise ExpiredToken(f"the token expired at {token.exp}", claim="exp")
        if token.nbf is not None and now + leeway < token.nbf:
            raise NotYetValid(f"the token is not valid before {token.nbf}", claim="nbf")
        if token.iat is not None and token.iat > now + leeway + 300:
            raise InvalidClaim("the token was issued in the future", claim="iat")
    if audience is not None:
        if isinstance(audience, str):
            meant = audience in token.aud
        else:
            meant = not set(audience).isdisjoint(token.aud)
        if not meant:
            raise InvalidAudience("the token is not meant for this audience", claim="aud")
    if issuer is not None:
        trusted = token.iss == issuer if isinstance(issuer, str) else token.iss in set(issuer)
        if not trusted:
            raise InvalidIssuer("the token's issuer is not trusted", claim="iss")
    return token


__all__ = ["validate"]
