"""``keybound bench`` group ``httpsig``: µs per HTTP message signature (RFC 9421) against bare HMAC.

``httpsig.verify`` is what :class:`~keybound.tools.http.middleware.PoPMiddleware`
does per signed request once it holds the PoP key: the ``Content-Digest`` of
the content checked (RFC 9530), ``Signature-Input`` and ``Signature`` parsed,
the signature selected by ``keyid``, ``created`` and the covered components
checked, the signature base rebuilt and its ``hmac-sha256`` compared in
constant time, and the ``nonce`` stored in an
:class:`~keybound.tools.http.replay_cache.InMemoryReplayCache`. Every call checks
a different request (its own nonce) from a pool signed beforehand; when the
pool has been used up, the next pass starts with an empty cache. The request
covers ``@method``, ``@target-uri``, ``authorization`` and ``content-digest``
of a small JSON body. The baseline is the HMAC-SHA256 of one request's signature
base and its constant-time comparison, alone. ``httpsig.sign`` is the client's
side (digest, base, MAC, fields) against the same bare HMAC. Both are timed in
paired rounds on the thread's CPU clock.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable

from keybound.core import http_signatures
from keybound.core.content_digest import content_digest, verify_content_digest
from keybound.core.http_signatures import RequestParts, SignatureParameters
from keybound.tools.bench.measure import MICROSECONDS, Figure, Group, Runner
from keybound.tools.http.replay_cache import InMemoryReplayCache

FIGURES = ("httpsig.verify", "httpsig.sign")
URI = "https://api.example/temp?unit=c"
BODY = b'{"setpoint": 21.5, "mode": "heat"}'
COMPONENTS = ("@method", "@target-uri", "authorization", "content-digest")
AUTHORIZATION = "PoP eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ3ZWItMSJ9.c2lnbmF0dXJl"
KEYID = "5f1c2a9e"
#: Distinct signed requests made before timing: about the verifications of one run.
QUICK_POOL = 4_000
FULL_POOL = 40_000


def _signed(key: bytes, now: int, nonce: str) -> RequestParts:
    pairs = [("Authorization", AUTHORIZATION), ("Content-Digest", content_digest(BODY))]
    unsigned = RequestParts.from_pairs("POST", URI, pairs)
    parameters = SignatureParameters(created=now, keyid=KEYID, nonce=nonce)
    signature_input, signature = http_signatures.sign_request(unsigned, key, COMPONENTS, parameters)
    pairs += [("Signature-Input", signature_input), ("Signature", signature)]
    return RequestParts.from_pairs("POST", URI, pairs)


def _verifier(
    requests: list[RequestParts], key: bytes, now: int
) -> Callable[[], http_signatures.VerifiedSignature]:
    """Verify the next request of ``requests`` as the middleware does, digest and cache included."""
    state = {"next": 0, "cache": InMemoryReplayCache(len(requests))}

    def verify() -> http_signatures.VerifiedSignature:
        index = state["next"]
        assert isinstance(index, int)
        if index == len(requests):
            index = 0
            state["cache"] = InMemoryReplayCache(len(requests))
        state["next"] = index + 1
        cache = state["cache"]
        assert isinstance(cache, InMemoryReplayCache)
        request = requests[index]
        verify_content_digest(request.field_value("content-digest"), BODY)
        return http_signatures.verify_request(
            request, key, keyid=KEYID, now=now, required=COMPONENTS, replay_cache=cache
        )

    return verify


def run(runner: Runner) -> list[Figure]:
    key = os.urandom(16)
    now = int(time.time())
    runner.on_step("httpsig.requests")
    pool = QUICK_POOL if runner.quick else FULL_POOL
    requests = [_signed(key, now, f"n{index}") for index in range(pool)]
    base = http_signatures.signature_base(
        requests[0], COMPONENTS, SignatureParameters(created=now, keyid=KEYID, nonce="n0")
    )
    mac = hmac.new(key, base, hashlib.sha256).digest()

    def bare_hmac() -> bool:
        return hmac.compare_digest(hmac.new(key, base, hashlib.sha256).digest(), mac)

    verify = runner.compare("httpsig.verify", _verifier(requests, key, now), bare_hmac)
    signed = runner.compare("httpsig.sign", lambda: _signed(key, now, "n"), bare_hmac)
    return [
        Figure.paired("httpsig.verify", verify, MICROSECONDS, "hmac_sha256"),
        Figure.paired("httpsig.sign", signed, MICROSECONDS, "hmac_sha256"),
    ]


GROUP = Group(
    name="httpsig",
    title="µs per HTTP message signature (RFC 9421, hmac-sha256), against bare HMAC",
    figures=FIGURES,
    run=run,
    steps=3,
)

__all__ = ["FIGURES", "GROUP"]
