"""``keybound bench`` group ``dpop``: µs per DPoP proof (RFC 9449) against bare ES256.

``dpop.verify`` is what a protected resource does per request (RFC 9449 §4.3,
§7.1): every check of the proof, including ``ath`` against the presented access
token and the key's thumbprint against the token's ``cnf.jkt``; its baseline is
the ES256 verification of the same signing input with ``cryptography``.
``dpop.create`` is the client's side, against the ES256 signature alone.
"""

from __future__ import annotations

import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from keybound.core import dpop
from keybound.tools.bench.measure import MICROSECONDS, Figure, Group, Runner

FIGURES = ("dpop.verify", "dpop.create")
HTM = "GET"
HTU = "https://rs.example/temp"
ACCESS_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkZXZpY2UifQ.c2lnbmF0dXJl"  # noqa: S105 - a sample for ath, no secret
_ECDSA = ec.ECDSA(hashes.SHA256())


def run(runner: Runner) -> list[Figure]:
    key = ECKey.generate_key("P-256")
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    public = private.public_key()
    now = int(time.time())
    proof = dpop.create_proof(key, HTM, HTU, now=now, access_token=ACCESS_TOKEN)
    jkt = dpop.verify_proof(proof, htm=HTM, htu=HTU, now=now).jkt
    signing_input = proof.rpartition(".")[0].encode("ascii")
    der = private.sign(signing_input, _ECDSA)

    raw_verify = runner.time("es256.verify", lambda: public.verify(der, signing_input, _ECDSA))
    raw_sign = runner.time("es256.sign", lambda: private.sign(signing_input, _ECDSA))
    verify = runner.time(
        "dpop.verify",
        lambda: dpop.verify_proof(
            proof, htm=HTM, htu=HTU, now=now, access_token=ACCESS_TOKEN, expected_jkt=jkt
        ),
    )
    create = runner.time(
        "dpop.create",
        lambda: dpop.create_proof(key, HTM, HTU, now=now, access_token=ACCESS_TOKEN),
    )
    return [
        Figure.of("dpop.verify", verify, MICROSECONDS, raw_verify, "es256.verify"),
        Figure.of("dpop.create", create, MICROSECONDS, raw_sign, "es256.sign"),
    ]


GROUP = Group(
    name="dpop",
    title="µs per DPoP proof, against bare ES256",
    figures=FIGURES,
    run=run,
    steps=4,
)

__all__ = ["FIGURES", "GROUP"]
