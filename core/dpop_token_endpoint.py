"""DPoP at the authorization server's token endpoint (RFC 9449 §5, §8, §10), sans-IO.

A token request that carries a ``DPoP`` header asks for an access token bound
to the proof's key. :func:`check_token_request_proof` runs the checks of
RFC 9449 §4.3 for it: exactly one ``DPoP`` header (check 1), ``htm`` ``POST``
and ``htu`` the token endpoint URL the AS is *configured* with (never one
derived from the request's ``Host`` header), a server nonce when the AS
requires one (§8), single use of the ``jti`` (§11.1), and, when the client
also sent a ``dpop_jkt`` parameter (§10), that it names the proof's key. It
returns the :class:`~keybound.core.dpop.VerifiedProof`, whose ``jkt``
becomes the token's ``cnf.jkt`` (§6.1).

At the token endpoint a bad proof is a 400 ``invalid_dpop_proof`` and a
missing or stale nonce a 400 ``use_dpop_nonce`` with a ``DPoP-Nonce`` header
(RFC 9449 §5, §8); :func:`token_endpoint_status` gives the HTTP binding that
status, since the error classes carry the 401 a resource server answers with
(§7.1, §9).

The ``dpop_jkt`` parameter belongs to the authorization request of the code
flow (§10). This AS speaks only the client credentials grant; a ``dpop_jkt``
form parameter on the token request is accepted as the same commitment: it
must match the proof, and without a proof it is refused.

Refresh tokens: RFC 9449 §5 binds refresh tokens issued to public clients.
This AS issues no refresh tokens at all (client credentials, RFC 6749
§4.4.3), so there is nothing to bind.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .dpop import (
    DEFAULT_ALGS,
    DEFAULT_IAT_LEEWAY,
    DEFAULT_IAT_WINDOW,
    MAX_PROOF_LENGTH,
    VerifiedProof,
    verify_proof,
)
from .dpop_state import NonceChecker, ReplayCache
from .errors import InvalidDPoPProof, KeyboundError, UseDPoPNonce

__all__ = [
    "DPOP_JKT_PARAMETER",
    "TOKEN_ENDPOINT_STATUS",
    "DPoPTokenEndpointPolicy",
    "check_token_request_proof",
    "token_endpoint_status",
]

#: The authorization request parameter of RFC 9449 §10.
DPOP_JKT_PARAMETER = "dpop_jkt"
#: HTTP status of ``invalid_dpop_proof`` and ``use_dpop_nonce`` at a token endpoint (§5, §8).
TOKEN_ENDPOINT_STATUS = 400


@dataclass(frozen=True, kw_only=True)
class DPoPTokenEndpointPolicy:
    """How the token endpoint checks DPoP proofs (RFC 9449 §4.3, §8, §11.1).

    :param nonce_issuer: when set, every proof must carry a current nonce from
        it (RFC 9449 §8); use one secret per AS, since a nonce is good only at
        the server that issued it.
    :param replay_cache: where ``jti`` values are kept for the acceptance
        window (required: single use is not optional, RFC 9449 §11.1); share
        one among the processes behind one token endpoint URL. The HTTP front
        (``keybound.tools.authz_server.http``) passes an in-memory one by default.
    :param allowed_algs: the JWS algorithms accepted for proofs, also
        advertised as ``dpop_signing_alg_values_supported`` (RFC 9449 §5.1).
    """

    replay_cache: ReplayCache
    nonce_issuer: NonceChecker | None = None
    allowed_algs: tuple[str, ...] = DEFAULT_ALGS
    iat_window: int = DEFAULT_IAT_WINDOW
    iat_leeway: int = DEFAULT_IAT_LEEWAY
    max_proof_length: int = MAX_PROOF_LENGTH


def check_token_request_proof(
    proofs: Sequence[str],
    form: Mapping[str, str],
    *,
    token_endpoint: str,
    policy: DPoPTokenEndpointPolicy,
    now: int,
) -> VerifiedProof | None:
    """Check the ``DPoP`` header values of a token request (RFC 9449 §5, §4.3).

    ``proofs`` are all values of the request's ``DPoP`` header, ``form`` its
    parameters, ``token_endpoint`` the configured URL of the endpoint. Returns
    ``None`` for a request without DPoP (and without ``dpop_jkt``), else the
    verified proof. Raises :class:`~keybound.core.errors.InvalidDPoPProof`
    (with :class:`~keybound.core.dpop_state.ReplayedProof` for a reused ``jti``),
    :class:`~keybound.core.errors.UseDPoPNonce` or
    :class:`~keybound.core.dpop_state.ReplayCacheFull`.
    """
    committed = form.get(DPOP_JKT_PARAMETER)
    if not proofs:
        if committed is not None:
            raise InvalidDPoPProof(
                "dpop_jkt was sent without a DPoP proof (RFC 9449 §10)", claim=DPOP_JKT_PARAMETER
            )
        return None
    if len(proofs) > 1:
        raise InvalidDPoPProof("more than one DPoP header (RFC 9449 §4.3)")
    verified = verify_proof(
        proofs[0],
        htm="POST",
        htu=token_endpoint,
        now=now,
        nonce_checker=policy.nonce_issuer,
        replay_cache=policy.replay_cache,
        iat_window=policy.iat_window,
        iat_leeway=policy.iat_leeway,
        allowed_algs=policy.allowed_algs,
        max_proof_length=policy.max_proof_length,
    )
    if committed is not None and not hmac.compare_digest(
        committed.encode("utf-8"), verified.jkt.encode("ascii")
    ):
        raise InvalidDPoPProof(
            "dpop_jkt does not match the thumbprint of the DPoP proof's key (RFC 9449 §10)",
            claim=DPOP_JKT_PARAMETER,
        )
    return verified


def token_endpoint_status(err: KeyboundError) -> int:
    """The HTTP status of ``err`` at a token endpoint: 400 for the DPoP errors
    (RFC 9449 §5, §8), the error's own status otherwise."""
    if isinstance(err, InvalidDPoPProof | UseDPoPNonce):
        return TOKEN_ENDPOINT_STATUS
    return err.http_status
