"""``keybound bench`` group ``rs``: the Resource Server's work, in process.

``rs.authz_info_inprocess`` is one ``/authz-info`` POST as the CoAP site handles
it (RFC 9203 §4.1-§4.3), without the network: decode the request, decrypt the
COSE_Encrypt0 token, validate its claims, store it, pick ID2, derive the OSCORE
context parameters and the keys, encode the 2.01 payload. Its baseline,
``rs.authz_info_primitives``, is the sum of the primitives the same work cannot
avoid: cbor2 ``loads`` of the request, the token and its claims, AES-CCM-16-64-128
decryption, the Master Salt and the three HKDF-SHA-256 derivations of RFC 8613
§3.2.1, cbor2 ``dumps`` of the response.

The store figures fill the RS's :class:`~keybound.core.token_store.TokenStore`
with 1,000 and then 10,000 distinct tokens (one PoP key each, as ``/authz-info``
would): memory per stored token (tracemalloc, everything the store keeps alive)
against the raw token as a Python ``bytes`` object, and the lookup an OSCORE
request makes (by Recipient ID and ID Context) against a plain ``dict.get``.
``rs.authz_info_inprocess_10000_stored`` repeats the POST with the full store.

``rs.expiry_1000_longest_silence`` (:mod:`keybound.tools.bench.rs_expiry`) is the
longest time the RS site's event loop cannot answer while 1,000 tokens expire at
once, against the time until their deletion is durable.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keybound.core import cwt
from keybound.core.authz_info import (
    MAX_RECIPIENT_ID_BYTES,
    NONCE_BYTES,
    AuthzInfoRequest,
    AuthzInfoResponse,
)
from keybound.core.oscore_derivation import derive_keys
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.profiles import derived_context
from keybound.core.resource_server import ResourceServer, RsPolicy, scope_tokens
from keybound.core.token import CnfOsc
from keybound.core.token_store import ContextParameters, StoredToken
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    CLIENT_ID,
    NONCE1,
    SCOPE,
    SIZE_EPOCH,
    Keys,
    sample_token,
)
from keybound.tools.bench.measure import MICROSECONDS, Figure, Group, Measurement, Runner
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
#: The time the RS is posted at (sans-IO: time is a parameter).
NOW = SIZE_EPOCH + 60
MONOTONIC = 1000.0


def _server_ids(client_id: bytes) -> Iterator[bytes]:
    """Recipient IDs in the order the RS hands them out: shortest first, never ID1."""
    for length in range(1, MAX_RECIPIENT_ID_BYTES + 1):
        for number in range(256**length):
            candidate = number.to_bytes(length, "big")
            if candidate != client_id:
                yield candidate


class _Rs:
    """An RS with room for the largest store, and what the benchmark posts to it."""

    def __init__(self) -> None:
        self.keys = Keys.generate()
        policy = RsPolicy(
            audience=AUDIENCE,
            as_uri="coap://as.example/token",
            token_keys=(self.keys.as_rs,),
            resources=scope_tokens({"/temp": {"GET": [SCOPE]}}),
            capacity=max(STORE_SIZES) + 1,
        )
        self.rs = ResourceServer(policy)
        self.token = cwt.encode(self.keys.osc_token(), cwt.Encrypt0(self.keys.as_rs))
        self.payload = AuthzInfoRequest(self.token, NONCE1, CLIENT_ID).encode()
        self._ids = _server_ids(CLIENT_ID)
        # the benchmark's own token holds the first ID2; stored tokens take the next ones
        next(self._ids)

    def authz_info(self) -> bytes:
        """One ``/authz-info`` POST, as the CoAP site handles it."""
        request = AuthzInfoRequest.decode(self.payload)
        assert request.nonce1 is not None
        assert request.client_recipient_id is not None
        result = self.rs.post(
            request.access_token,
            nonce1=request.nonce1,
            client_id=request.client_recipient_id,
            nonce2=os.urandom(NONCE_BYTES),
            now=NOW,
            monotonic=MONOTONIC,
        )
        stored = result.stored
        derive_keys(derived_context(stored))
        assert stored.context is not None  # the OSCORE profile's exchange
        return AuthzInfoResponse(stored.context.nonce2, stored.context.server_id).encode()

    def fill(self, count: int) -> None:
        """Store distinct tokens until the store holds ``count`` besides the benchmark's."""
        store = self.rs.store
        while len(store) < count + 1:
            material = OscoreInputMaterial(id=os.urandom(3), ms=os.urandom(16))
            raw = cwt.encode(sample_token(CnfOsc(material)), cwt.Encrypt0(self.keys.as_rs))
            verified = self.rs.verify(raw, now=NOW, monotonic=MONOTONIC)
            context = ContextParameters(
                os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES), CLIENT_ID, next(self._ids)
            )
            store.put(StoredToken(verified, context, received_at=NOW))


def _primitives(fixture: _Rs) -> Callable[[], object]:
    """The sum of the primitives of one ``/authz-info`` POST, as one function."""
    payload = fixture.payload
    key = fixture.keys.as_rs.secret
    assert key is not None
    ccm = AESCCM(key, tag_length=8)

    def run() -> object:
        request = cbor2.loads(payload)
        protected, unprotected, ciphertext = cbor2.loads(request[1]).value
        aad = cbor2.dumps(["Encrypt0", protected, b""])
        claims = cbor2.loads(ccm.decrypt(unprotected[5], ciphertext, aad))
        osc = claims[8][4]
        nonce2 = os.urandom(NONCE_BYTES)
        salt = b"".join(cbor2.dumps(part) for part in (b"", request[40], nonce2))
        derived = tuple(
            HKDF(hashes.SHA256(), length, salt, cbor2.dumps(info)).derive(osc[2])
            for info, length in (
                ([request[43], None, 10, "Key", 16], 16),
                ([b"\x00", None, 10, "Key", 16], 16),
                ([b"", None, 10, "IV", 13], 13),
            )
        )
        return cbor2.dumps({42: nonce2, 44: b"\x00"}), derived

    return run


def _store_memory(fixture: _Rs, count: int) -> float:
    """Bytes the store holds per token after growing to ``count`` tokens."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        start = len(fixture.rs.store)
        fixture.fill(count)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return grown / (len(fixture.rs.store) - start)


def _lookups(fixture: _Rs, runner: Runner, count: int) -> tuple[Measurement, Measurement]:
    store = fixture.rs.store
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

    found = runner.time(f"rs.store_lookup_{count}", find, per=LOOKUPS_PER_CALL)
    baseline = runner.time(f"dict.get_{count}", get, per=LOOKUPS_PER_CALL)
    return found, baseline


def run(runner: Runner) -> list[Figure]:
    fixture = _Rs()
    fixture.authz_info()  # the request must succeed before it is timed
    floor = runner.time("rs.authz_info_primitives", _primitives(fixture))
    empty = runner.time("rs.authz_info_inprocess", fixture.authz_info)
    raw_object = Measurement.exact(float(sys.getsizeof(fixture.token)))
    figures = [
        Figure.of("rs.authz_info_inprocess", empty, MICROSECONDS, floor, "rs.authz_info_primitives")
    ]
    memory: list[Figure] = []
    lookups: list[Figure] = []
    for count in STORE_SIZES:
        runner.on_step(f"rs.store_memory_{count}")
        per_token = Measurement.exact(_store_memory(fixture, count))
        memory.append(
            Figure.of(
                f"rs.store_memory_{count}",
                per_token,
                MEMORY_UNIT,
                raw_object,
                "raw_token.bytes_object",
            )
        )
        found, plain = _lookups(fixture, runner, count)
        lookups.append(
            Figure.of(f"rs.store_lookup_{count}", found, MICROSECONDS, plain, "dict.get")
        )
    full = runner.time("rs.authz_info_inprocess_10000_stored", fixture.authz_info)
    figures.append(
        Figure.of(
            "rs.authz_info_inprocess_10000_stored",
            full,
            MICROSECONDS,
            empty,
            "rs.authz_info_inprocess",
        )
    )
    return [*figures, *memory, *lookups, expiry_figure(runner, fixture.keys)]


GROUP = Group(
    name="rs",
    title="the Resource Server in process: /authz-info, token store",
    figures=FIGURES,
    run=run,
    steps=10,
)

__all__ = ["FIGURES", "GROUP", "STORE_SIZES"]
