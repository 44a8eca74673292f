"""validate() against its copy from before the audience and issuer checks took a string
without building a set: the same result and the same error for random tokens, clocks,
audiences and issuers. ``KEYBOUND_DIFF_VALIDATE=400000`` runs that many inputs.
"""

from __future__ import annotations

import os
import random
from collections.abc import Collection
from typing import Any

from keybound.core.errors import (
    ExpiredToken,
    InvalidAudience,
    InvalidClaim,
    InvalidIssuer,
    KeyboundError,
    NotYetValid,
)
from keybound.core.token import AccessToken
from keybound.core.validation import validate

DEFAULT_INPUTS = 40_000
INPUTS = int(os.environ.get("KEYBOUND_DIFF_VALIDATE", DEFAULT_INPUTS))


def reference_validate(
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
        wanted = {audience} if isinstance(audience, str) else set(audience)
        if not wanted.intersection(token.aud):
            raise InvalidAudience("the token is not meant for this audience", claim="aud")
    if issuer is not None:
        trusted = {issuer} if isinstance(issuer, str) else set(issuer)
        if token.iss not in trusted:
            raise InvalidIssuer("the token's issuer is not trusted", claim="iss")
    return token


_NAMES = ("rs1", "rs2", "as", "", "RS1", "rs1 ")
_TIMES = (None, 0, 99, 100, 101, 400, 1_000_000)


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    try:
        return ("ok", fn(*args, **kwargs))
    except KeyboundError as exc:
        return ("error", type(exc), str(exc), exc.ace_code, exc.claim)


def _names(rng: random.Random) -> Any:
    roll = rng.randrange(6)
    if roll == 0:
        return None
    if roll < 3:
        return rng.choice(_NAMES)
    picked = rng.sample(_NAMES, rng.randrange(0, 3))
    return rng.choice((list, tuple, set, frozenset))(picked)


def test_validate_matches_its_reference() -> None:
    rng = random.Random(8392)
    accepted = 0
    for _ in range(INPUTS):
        token = AccessToken(
            iss=rng.choice((None, *_NAMES)),
            aud=tuple(rng.sample(_NAMES, rng.randrange(0, 3))),
            exp=rng.choice(_TIMES),
            nbf=rng.choice(_TIMES),
            iat=rng.choice(_TIMES),
        )
        kwargs = {
            "now": rng.choice(_TIMES),
            "leeway": rng.choice((0, 0, 1, 60)),
            "audience": _names(rng),
            "issuer": _names(rng),
            "require": rng.choice(((), ("iss",), ("aud", "exp"))),
        }
        mine = _outcome(validate, token, **kwargs)
        ref = _outcome(reference_validate, token, **kwargs)
        assert mine == ref, (token, kwargs, mine, ref)
        accepted += mine[0] == "ok"
    print(f"{INPUTS} inputs, {accepted} accepted")
    assert INPUTS // 50 < accepted < INPUTS - INPUTS // 50, accepted
