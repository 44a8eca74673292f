"""DPoP proofs for tests: :func:`keybound.core.dpop.create_proof`, ``jti`` from os.urandom."""

from __future__ import annotations

import functools
import os

from keybound.core import dpop

#: ``create_proof`` as the tests call it: the randomness of a ``jti`` from ``os.urandom``.
create_proof = functools.partial(dpop.create_proof, random_bytes=os.urandom)

__all__ = ["create_proof"]
