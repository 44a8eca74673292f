"""keybound.tools.http: HTTP bindings for proof-of-possession tokens: DPoP (RFC 9449),
HTTP message signatures (RFC 9421) and certificate-bound tokens (RFC 8705).

The public names, each from its home module: the ASGI middleware
(:mod:`~keybound.tools.http.middleware`), the token verifiers it is given
(:mod:`~keybound.tools.http.verifiers`), the httpx client auths
(:mod:`~keybound.tools.http.client`), the TLS client certificate sources
(:mod:`~keybound.tools.http.tls`), the replay caches
(:mod:`~keybound.tools.http.replay_cache`) and the follower of the AS's token
revocation list (:mod:`~keybound.tools.http.trl_follower`, RFC 9770)::

    from keybound.tools.http import DPoPAuth, PoPMiddleware, jwt_token_verifier_from_bundle
"""

from keybound.tools.http.client import DPoPAuth, HttpSignatureAuth
from keybound.tools.http.middleware import (
    CertificateContext,
    DPoPContext,
    DPoPMiddleware,
    PoPMiddleware,
    SignatureContext,
)
from keybound.tools.http.replay_cache import (
    InMemoryReplayCache,
    ReplayCacheUnavailable,
    SqlReplayCache,
)
from keybound.tools.http.tls import (
    TlsExtensionH11Protocol,
    tls_extension_certificate,
    trusted_header_certificate,
)
from keybound.tools.http.trl_follower import TrlFollower, following
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
    "CertificateContext",
    "DPoPAuth",
    "DPoPContext",
    "DPoPMiddleware",
    "HttpSignatureAuth",
    "InMemoryReplayCache",
    "IntrospectionUnavailable",
    "PoPMiddleware",
    "ReplayCacheUnavailable",
    "SignatureContext",
    "SqlReplayCache",
    "TlsExtensionH11Protocol",
    "TokenVerifier",
    "TrlFollower",
    "following",
    "introspection_token_verifier",
    "introspection_token_verifier_from_bundle",
    "jwt_token_verifier",
    "jwt_token_verifier_from_bundle",
    "jwt_token_verifier_from_metadata",
    "tls_extension_certificate",
    "trusted_header_certificate",
]
