"""keybound's EDHOC on random and mutated input: only EdhocError, never another exception.

Each message parser (message_1 at the Responder, message_2 at the Initiator, message_3
at the Responder) gets random byte strings and single-byte mutations of a valid
message; every refusal must be an :class:`EdhocError` (an EDHOC error message to send).
"""

from __future__ import annotations

import contextlib
import os
import random

import pytest

from keybound.core.edhoc import AuthKey, EdhocError, Initiator, Responder
from keybound.core.edhoc_credentials import Ccs, key_from_private_d
from keybound.core.edhoc_suites import SUITE_2

CASES = 300


def _key(kid: bytes) -> AuthKey:
    d = os.urandom(32)
    return AuthKey(SUITE_2, Ccs.make(key_from_private_d(d, kid=kid)).edhoc(), d)


I_KEY, R_KEY = _key(b"\x2b"), _key(b"\x32")


def _valid() -> tuple[bytes, bytes, bytes]:
    initiator = Initiator(I_KEY, method=3, c_i=b"\x0e")
    responder = Responder(R_KEY)
    message_1 = initiator.message_1()
    responder.process_message_1(message_1)
    message_2 = responder.message_2(b"\x05")
    initiator.parse_message_2(message_2)
    initiator.verify_message_2(R_KEY.credential)
    return message_1, message_2, initiator.message_3()


def _inputs(valid: bytes, rng: random.Random) -> list[bytes]:
    out = [os.urandom(rng.randrange(0, 200)) for _ in range(CASES)]
    for _ in range(CASES):
        mutated = bytearray(valid)
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        out.append(bytes(mutated[: rng.randrange(1, len(mutated) + 1)]))
    return out


def _only_edhoc_errors(call: object, data: bytes) -> None:
    assert callable(call)
    with contextlib.suppress(EdhocError):
        call(data)


@pytest.mark.parametrize("which", ["message_1", "message_2", "message_3"])
def test_parsers_raise_only_edhoc_errors(which: str) -> None:
    rng = random.Random(which)
    message_1, message_2, message_3 = _valid()
    valid = {"message_1": message_1, "message_2": message_2, "message_3": message_3}[which]
    for data in _inputs(valid, rng):
        if which == "message_1":
            _only_edhoc_errors(Responder(R_KEY).process_message_1, data)
        elif which == "message_2":
            initiator = Initiator(I_KEY, method=3, c_i=b"\x0e")
            initiator.message_1()
            _only_edhoc_errors(initiator.parse_message_2, data)
        else:
            initiator = Initiator(I_KEY, method=3, c_i=b"\x0e")
            responder = Responder(R_KEY)
            responder.process_message_1(initiator.message_1())
            responder.message_2(b"\x05")
            _only_edhoc_errors(responder.parse_message_3, data)
