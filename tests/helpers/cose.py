"""Helpers shared by the COSE tests: a key for each algorithm, emitting a message."""

from __future__ import annotations

import os
from typing import Any

from keybound.core import cose
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_keys import Curve

PAYLOAD = b"This is the content."


def key_for(alg: Algorithm, kid: bytes | None = b"kid-1") -> Key:
    """A fresh key that fits ``alg``."""
    if alg == Algorithm.ES256:
        return Key.generate_ec2(Curve.P_256, kid=kid)
    if alg == Algorithm.ES384:
        return Key.generate_ec2(Curve.P_384, kid=kid)
    if alg == Algorithm.EDDSA:
        return Key.generate_okp(Curve.ED25519, kid=kid)
    return Key.generate_symmetric(alg.key_bytes, random_bytes=os.urandom, kid=kid)


def verifier(key: Key) -> Key:
    """The key a recipient holds: the public half for signatures, the secret otherwise."""
    return key if key.is_symmetric else key.public_key()


def emit(alg: Algorithm, key: Key, payload: bytes = PAYLOAD, **kwargs: Any) -> bytes:
    if alg.kind == "sign":
        return cose.sign1(payload, key, alg=alg, **kwargs)
    if alg.kind == "mac":
        return cose.mac0(payload, key, alg=alg, **kwargs)
    kwargs.setdefault("random_bytes", os.urandom)
    return cose.encrypt0(payload, key, alg=alg, **kwargs)
