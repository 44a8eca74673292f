"""``keybound bench`` group ``rs``: the Resource Server's work, in process.

``rs.authz_info_inprocess`` is one ``/authz-info`` POST as the CoAP site handles
it (RFC 9203 §4.1-§4.3), without the network: keybound's
:class:`~keybound.coap.resource_server_site.ResourceServerSite` decodes the
request, decrypts the COSE_Encrypt0 token, validates its claims, stores it,
picks ID2, derives the OSCORE context and installs it in aiocoap's credentials,
and encodes the 2.01 payload, with INFO logging off (as in production at
WARNING). Every POST carries a different token (its own ``cti`` and OSCORE
input material), so none is a re-post or a supersession; the tokens a batch
stored are removed again after it, untimed. Its baseline,
``rs.authz_info_primitives``, is the sum of the primitives the same work cannot
avoid: cbor2 ``loads`` of the request, the token and its claims, AES-CCM-16-64-128
decryption, the Master Salt and the three HKDF-SHA-256 derivations of RFC 8613
§3.2.1 (one HKDF-Extract, since the three share salt and secret, and three
HKDF-Expands), a dict insert for the installed context, cbor2 ``dumps`` of the
response.

The store figures grow the site to 1,000 and then 10,000 tokens, each POSTed as
above: memory per token (tracemalloc over the last 200, or 1,000 in a full run,
tokens before each size: everything the token store, the context table and
aiocoap's credentials keep alive, token and OSCORE context together)
against the raw token as a Python ``bytes`` object, and the lookup an OSCORE
request makes (by Recipient ID and ID Context) against a plain ``dict.get``.
``rs.authz_info_inprocess_10000_stored`` is the POST to the site holding 10,000
tokens, timed in the same rounds as the POST to an empty site.

``rs.expiry_1000_longest_silence`` (:mod:`keybound.tools.bench.rs_expiry`) is the
longest time the RS site's event loop cannot answer while 1,000 tokens expire at
once, against the time until their deletion is durable.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import sys
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import aiocoap
import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core import cwt
from keybound.core.authz_info import NONCE_BYTES, AuthzInfoRequest
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.resource_server import ResourceServer, RsPolicy, scope_tokens
from keybound.core.token import CnfOsc
from keybound.core.token_store import pop_key_id
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    CLIENT_ID,
    NONCE1,
    SCOPE,
    SIZE_EPOCH,
    Keys,
    sample_token,
)
from keybound.tools.bench.measure import (
    MICROSECONDS,
    Figure,
    Group,
    Measurement,
    Paired,
    Runner,
)
from keybound.tools.bench.rs_expiry import NAME as EXPIRY_FIGURE
from keybound.tools.bench.rs_expiry import expiry_figure

STORE_SIZES = (1000, 10_000)
FIGURES = (
    "rs.authz_info_inprocess",
    "rs.authz_info_inprocess_10000_stored",
    "rs.store_memory_1000",
    "rs.store_memory_10000",
    "rs.store_lookup_1000",
    "rs.store_lookup_10000",
    EXPIRY_FIGURE,
)
MEMORY_UNIT = "bytes/token"
#: Lookups per timed call, so that one lookup is not drowned by the call around it.
LOOKUPS_PER_CALL = 1000
#: The time the RS is posted at: the site's clocks are fixed.
NOW = SIZE_EPOCH + 60
MONOTONIC = 1000.0
#: Distinct tokens prepared per timed site, quick and full (more than the POSTs of a figure).
QUICK_POOL = 1_500
FULL_POOL = 8_000
#: Tokens whose memory is traced at each store size, quick and full.
QUICK_TRACED = 200
FULL_TRACED = 1_000


def drive(coroutine: Coroutine[Any, Any, aiocoap.Message]) -> aiocoap.Message:
    """Run a coroutine that never waits (a site without a state store) to its result."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: aiocoap.Message = done.value
        return result
    coroutine.close()
    raise RuntimeError("the /authz-info POST waited for something")


@contextmanager
def quiet_rs() -> Iterator[None]:
    """The RS's INFO logging off, as it runs at WARNING in production."""
    logger = logging.getLogger("keybound.rs")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class _Site:
    """An RS site with room for the largest store, and distinct tokens to POST to it."""

    def __init__(self, keys: Keys, capacity: int) -> None:
        self.keys = keys
        policy = RsPolicy(
            audience=AUDIENCE,
            as_uri="coap://as.example/token",
            token_keys=(keys.as_rs,),
            resources=scope_tokens({"/temp": {"GET": [SCOPE]}}),
            capacity=capacity,
        )
        self.site = ResourceServerSite(
            ResourceServer(policy), wall_clock=lambda: NOW, monotonic=lambda: MONOTONIC
        )
        self.posted: list[bytes] = []
        self._pool: list[tuple[bytes, bytes]] = []

    def payload(self) -> tuple[bytes, bytes]:
        """(PoP key id, ``/authz-info`` payload) of a token never posted before: the id
        the token store keys it by (:func:`~keybound.core.token_store.pop_key_id`)."""
        material = OscoreInputMaterial(id=os.urandom(6), ms=os.urandom(16))
        token = dataclasses.replace(sample_token(CnfOsc(material), now=NOW), cti=os.urandom(16))
        raw = cwt.encode(token, cwt.Encrypt0(self.keys.as_rs), random_bytes=os.urandom)
        request = AuthzInfoRequest(raw, os.urandom(NONCE_BYTES), CLIENT_ID).encode()
        return pop_key_id(material), request

    def prepare(self, count: int) -> None:
        self._pool = [self.payload() for _ in range(count)]
        self._pool.reverse()

    def post(self, item: tuple[bytes, bytes] | None = None) -> None:
        """POST a fresh token (the next prepared one), as the CoAP site does."""
        key_id, payload = item if item is not None else self._pool.pop()
        response = drive(self.site.post_token(payload, "bench"))
        if response.code != aiocoap.CREATED:
            raise RuntimeError(f"/authz-info: {response.code} {response.payload!r}")
        self.posted.append(key_id)

    def take_back(self) -> None:
        """Remove the tokens POSTed since the last call, with their contexts, so that the
        site holds what it held before them; a token not found is an error (the figure
        would otherwise time a site that grows round by round)."""
        store = self.site.rs.store
        for key_id in self.posted:
            if store.get(key_id) is None:
                raise RuntimeError("a token POSTed in the benchmark is not in the RS's store")
            self.site.drop(key_id, reason="bench")
        self.posted.clear()

    def fill(self, count: int) -> None:
        """POST fresh tokens until the site holds ``count``; they stay."""
        while len(self.site.rs.store) < count:
            self.post(self.payload())
        self.posted.clear()


def _primitives(keys: Keys) -> Callable[[], object]:
    """The sum of the primitives of one ``/authz-info`` POST, as one function."""
    material = OscoreInputMaterial(id=os.urandom(6), ms=os.urandom(16))
    raw = cwt.encode(
        sample_token(CnfOsc(material), now=NOW), cwt.Encrypt0(keys.as_rs), random_bytes=os.urandom
    )
    payload = AuthzInfoRequest(raw, NONCE1, CLIENT_ID).encode()
    key = keys.as_rs.secret
    assert key is not None
    ccm = AESCCM(key, tag_length=8)
    installed: dict[bytes, object] = {}

    def run() -> object:
        request = cbor2.loads(payload)
        protected, unprotected, ciphertext = cbor2.loads(request[1]).value
        aad = cbor2.dumps(["Encrypt0", protected, b""])
        claims = cbor2.loads(ccm.decrypt(unprotected[5], ciphertext, aad))
        osc = claims[8][4]
        nonce2 = os.urandom(NONCE_BYTES)
        salt = b"".join(cbor2.dumps(part) for part in (b"", request[40], nonce2))
        extract = HMAC(salt, hashes.SHA256())  # the one HKDF-Extract the three share
        extract.update(osc[2])
        prk = extract.finalize()
        derived = tuple(
            HKDFExpand(hashes.SHA256(), length, cbor2.dumps(info)).derive(prk)
            for info, length in (
                ([request[43], None, 10, "Key", 16], 16),
                ([b"\x00", None, 10, "Key", 16], 16),
                ([b"", None, 10, "IV", 13], 13),
            )
        )
        installed[osc[0]] = derived
        return cbor2.dumps({42: nonce2, 44: b"\x00"})

    return run


def _store_memory(fixture: _Site, count: int, traced: int) -> float:
    """Bytes the site holds per token (token and context) for the last ``traced`` of ``count``.

    The site grows to ``count - traced`` tokens untraced (tracemalloc slows every
    allocation down several times), then the growth of the last ``traced`` is
    measured.
    """
    fixture.fill(count - traced)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        start = len(fixture.site.rs.store)
        fixture.fill(count)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return grown / (len(fixture.site.rs.store) - start)


def _lookups(fixture: _Site, runner: Runner, count: int) -> Paired:
    store = fixture.site.rs.store
    entries = list(store)
    lookups = [(e.lookup, e) for e in entries if e.lookup is not None]
    keys = [lookup for lookup, _ in lookups[:LOOKUPS_PER_CALL] if lookup is not None]
    keys = (keys * (LOOKUPS_PER_CALL // len(keys) + 1))[:LOOKUPS_PER_CALL]
    plain = dict(lookups)

    def find() -> None:
        for recipient_id, id_context in keys:
            store.find(recipient_id, id_context)

    def get() -> None:
        for key in keys:
            plain.get(key)

    return runner.compare(f"rs.store_lookup_{count}", find, get, per=LOOKUPS_PER_CALL)


def run(runner: Runner) -> list[Figure]:
    keys = Keys.generate()
    pool = QUICK_POOL if runner.quick else FULL_POOL
    traced = QUICK_TRACED if runner.quick else FULL_TRACED
    capacity = max(STORE_SIZES) + pool + 1
    with quiet_rs():
        empty = _Site(keys, capacity)
        runner.on_step("rs.tokens")
        empty.prepare(pool)
        empty.post(empty.payload())  # the request must succeed before it is timed
        empty.take_back()
        floor = runner.compare(
            "rs.authz_info_inprocess",
            empty.post,
            _primitives(keys),
            max_calls=pool,
            reset=(empty.take_back, None),
        )
        figures = [
            Figure.paired(
                "rs.authz_info_inprocess", floor, MICROSECONDS, "rs.authz_info_primitives"
            )
        ]
        stored = _Site(keys, capacity)
        memory: list[Figure] = []
        lookups: list[Figure] = []
        for count in STORE_SIZES:
            runner.on_step(f"rs.store_memory_{count}")
            raw_token = AuthzInfoRequest.decode(stored.payload()[1]).access_token
            token_bytes = sys.getsizeof(raw_token)
            memory.append(
                Figure.of(
                    f"rs.store_memory_{count}",
                    Measurement.exact(_store_memory(stored, count, traced)),
                    MEMORY_UNIT,
                    Measurement.exact(float(token_bytes)),
                    "raw_token.bytes_object",
                    clock="exact",
                )
            )
            found = _lookups(stored, runner, count)
            lookups.append(
                Figure.paired(f"rs.store_lookup_{count}", found, MICROSECONDS, "dict.get")
            )
        runner.on_step("rs.tokens")
        stored.prepare(pool)
        empty.prepare(pool)
        full = runner.compare(
            "rs.authz_info_inprocess_10000_stored",
            stored.post,
            empty.post,
            max_calls=pool,
            reset=(stored.take_back, empty.take_back),
        )
        figures.append(
            Figure.paired(
                "rs.authz_info_inprocess_10000_stored",
                full,
                MICROSECONDS,
                "rs.authz_info_inprocess",
            )
        )
    return [*figures, *memory, *lookups, expiry_figure(runner, keys)]


GROUP = Group(
    name="rs",
    title="the Resource Server in process: /authz-info, token store",
    figures=FIGURES,
    run=run,
    steps=9,
)

__all__ = ["FIGURES", "GROUP", "STORE_SIZES", "drive", "quiet_rs"]
