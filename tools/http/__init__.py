"""keybound.tools.http: HTTP bindings for DPoP-bound tokens (RFC 9449).

The public names, each from its home module: the ASGI middleware
(:mod:`~keybound.tools.http.middleware`), the token verifiers it is given
(:mod:`~keybound.tools.http.verifiers`), the httpx client auth
(:mod:`~keybound.tools.http.client`) and the replay caches
(:mod:`~keybound.tools.http.replay_cache`)::

    from keybound.tools.http import DPoPAuth, DPoPMiddleware, jwt_token_verifier_from_bundle
"""

from keybound.tools.http.client import DPoPAuth
from keybound.tools.http.middleware import DPoPContext, DPoPMiddleware
from keybound.tools.http.replay_cache import (
    InMemoryReplayCache,
    ReplayCacheUnavailable,
    SqlReplayCache,
)
from keybound.tools.http.verifiers import (
    ACCESS_TOKEN_ALGS,
    IntrospectionUnavailable,
    TokenVerifier,
    introspection_token_verifier,
    introspection_token_verifier_from_bundle,
    jwt_token_verifier,
    jwt_token_verifier_from_bundle,
    jwt_token_verifier_from_metadata,
)

__all__ = [
    "ACCESS_TOKEN_ALGS",
    "DPoPAuth",
    "DPoPContext",
    "DPoPMiddleware",
    "InMemoryReplayCache",
    "IntrospectionUnavailable",
    "ReplayCacheUnavailable",
    "SqlReplayCache",
    "TokenVerifier",
    "introspection_token_verifier",
    "introspection_token_verifier_from_bundle",
    "jwt_token_verifier",
    "jwt_token_verifier_from_bundle",
    "jwt_token_verifier_from_metadata",
]
