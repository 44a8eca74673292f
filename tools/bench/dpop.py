"""``keybound bench`` group ``dpop``: µs per DPoP proof (RFC 9449) against bare ES256.

``dpop.verify`` is what a protected resource does per request (RFC 9449 §4.3,
§7.1, §8, §11.1): every check of the proof, including ``ath`` against the
presented access token, the key's thumbprint against the token's
``cnf.jkt``, a server nonce (:class:`~keybound.core.dpop_state.NonceIssuer`)
and single use of the ``jti`` in an
:class:`~keybound.tools.http.replay_cache.InMemoryReplayCache`. Every call
checks a different proof (its own ``jti``) from a pool made beforehand; when
the pool has been used up, the next pass starts with an empty cache. The
baseline is the ES256 verification of one proof's signing input with
``cryptography``, alone. ``dpop.create`` is the client's side, against the
ES256 signature alone. Both are timed in paired rounds on the thread's CPU
clock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from keybound.core import dpop
from keybound.core.dpop_state import NonceIssuer
from keybound.tools.bench.measure import MICROSECONDS, Figure, Group, Runner
from keybound.tools.http.replay_cache import InMemoryReplayCache

FIGURES = ("dpop.verify", "dpop.create")
HTM = "GET"
HTU = "https://rs.example/temp"
ACCESS_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkZXZpY2UifQ.c2lnbmF0dXJl"  # noqa: S105 - a sample for ath, no secret
#: Distinct proofs made before timing: about the verifications of one run, quick and full.
QUICK_POOL = 2_000
FULL_POOL = 12_000
_ECDSA = ec.ECDSA(hashes.SHA256())


def _verifier(
    proofs: list[str], nonces: NonceIssuer, now: int, jkt: str
) -> Callable[[], dpop.VerifiedProof]:
    """Verify the next proof of ``proofs`` as a resource server does, cache and nonce included."""
    state = {"next": 0, "cache": InMemoryReplayCache(len(proofs))}

    def verify() -> dpop.VerifiedProof:
        index = state["next"]
        assert isinstance(index, int)
        if index == len(proofs):
            index = 0
            state["cache"] = InMemoryReplayCache(len(proofs))
        state["next"] = index + 1
        cache = state["cache"]
        assert isinstance(cache, InMemoryReplayCache)
        return dpop.verify_proof(
            proofs[index],
            htm=HTM,
            htu=HTU,
            now=now,
            access_token=ACCESS_TOKEN,
            expected_jkt=jkt,
            nonce_checker=nonces,
            replay_cache=cache,
        )

    return verify


def run(runner: Runner) -> list[Figure]:
    key = ECKey.generate_key("P-256")
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    public = private.public_key()
    now = int(time.time())
    nonces = NonceIssuer(os.urandom(32))
    nonce = nonces.issue(now)

    def create() -> str:
        return dpop.create_proof(
            key,
            HTM,
            HTU,
            now=now,
            access_token=ACCESS_TOKEN,
            nonce=nonce,
            random_bytes=os.urandom,
        )

    runner.on_step("dpop.proofs")
    proofs = [create() for _ in range(QUICK_POOL if runner.quick else FULL_POOL)]
    jkt = dpop.verify_proof(proofs[0], htm=HTM, htu=HTU, now=now).jkt
    signing_input = proofs[0].rpartition(".")[0].encode("ascii")
    der = private.sign(signing_input, _ECDSA)

    verify = runner.compare(
        "dpop.verify",
        _verifier(proofs, nonces, now, jkt),
        lambda: public.verify(der, signing_input, _ECDSA),
    )
    created = runner.compare("dpop.create", create, lambda: private.sign(signing_input, _ECDSA))
    return [
        Figure.paired("dpop.verify", verify, MICROSECONDS, "es256.verify"),
        Figure.paired("dpop.create", created, MICROSECONDS, "es256.sign"),
    ]


GROUP = Group(
    name="dpop",
    title="µs per DPoP proof, against bare ES256",
    figures=FIGURES,
    run=run,
    steps=3,
)

__all__ = ["FIGURES", "GROUP"]
