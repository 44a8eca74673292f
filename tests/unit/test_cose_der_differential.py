"""cose._der_signature against ``encode_dss_signature``, which ECDSA verification used before.

A COSE ECDSA signature is ``r || s`` (RFC 9053 §2.1); ``cryptography`` verifies DER.
The DER is now written from the bytes; the reference is the ``cryptography`` encoder
of the two integers. Inputs are random halves of P-256 and P-384 sizes with leading
zero bytes, high bits set after them, all-zero and all-one halves.
``KEYBOUND_DIFF_DER=400000`` runs that many.
"""

from __future__ import annotations

import os
import random

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from keybound.core import cose

INPUTS = int(os.environ.get("KEYBOUND_DIFF_DER", "20000"))


def _half(rng: random.Random, size: int) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return bytes(size)
    if roll < 0.1:
        return b"\xff" * size
    out = bytearray(rng.randbytes(size))
    if rng.random() < 0.4:
        zeros = rng.randrange(1, size + 1)
        out[:zeros] = bytes(zeros)
        if zeros < size and rng.random() < 0.5:
            out[zeros] |= 0x80
    elif rng.random() < 0.5:
        out[0] |= 0x80
    return bytes(out)


def test_der_signature_matches_encode_dss_signature() -> None:
    rng = random.Random(9053)
    for _ in range(INPUTS):
        size = rng.choice((32, 48))
        signature = _half(rng, size) + _half(rng, size)
        r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
        assert cose._der_signature(signature, size) == encode_dss_signature(r, s), signature.hex()
