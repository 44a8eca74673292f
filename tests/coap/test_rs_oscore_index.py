"""The RS's OSCORE contexts found by (kid, kid context) in an index (RFC 8613 §8.2 step 2).

Over real CoAP/UDP on 127.0.0.1: each of many contexts answers its own requests, a
removed context is gone and its kid gets 4.01 "Security context not found", the same
kid under two kid contexts reaches two contexts, an EDHOC-derived context is found.
Without the wire: the index against aiocoap's own ``CredentialsMap`` on random maps
and requests (the same context found, or none for both).
"""

from __future__ import annotations

import os
import random
from typing import Any

import aiocoap
import aiocoap.resource
import pytest
from aiocoap import credentials, oscore

from keybound.coap.oscore_contexts import (
    DurableSecurityContext,
    IndexedCredentialsMap,
    oscore_lookup,
)
from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.oscore_derivation import DerivedContext, derive_context_parameters
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.oscore_sequence import SequenceNumberReservation
from tests.helpers.edhoc import (
    Party,
    edhoc_credentials,
    mint_edhoc,
    post_token,
    serving_edhoc,
    use_edhoc,
)
from tests.helpers.rs import (
    ClientContext,
    FakeClock,
    Keys,
    client_ctx,
    establish,
    material,
    mint,
    request,
    run,
    serving,
)

#: The diagnostic payload of RFC 8613 §8.2 step 2 for a request no context takes.
NOT_FOUND = b"Security context not found"


def code(message: aiocoap.Message) -> str:
    return f"{int(message.code) >> 5}.{int(message.code) & 0x1F:02d}"


class Who(aiocoap.resource.Resource):  # type: ignore[misc]
    """``GET``: the Recipient ID and ID Context (hex, ``-`` for none) of the context
    the RS unprotected the request with."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        context = request.remote.security_context
        id_context = "-" if context.id_context is None else context.id_context.hex()
        return aiocoap.Message(payload=f"{context.recipient_id.hex()}:{id_context}".encode())


def serve_who(site: ResourceServerSite) -> None:
    site.add_protected("/who", Who(), scopes={"GET": ["temp.read"]})


async def unprotected_answer(client: aiocoap.Context, port: int, path: str) -> aiocoap.Message:
    """The unprotected answer the RS gives a protected request it has no context for."""
    with pytest.raises(oscore.NotAProtectedMessage) as caught:
        await request(client, port, aiocoap.GET, path)
    plain: aiocoap.Message = caught.value.plain_message
    return plain


def use(client: aiocoap.Context, port: int, context: Any) -> None:
    client.client_credentials[f"coap://127.0.0.1:{port}/*"] = context


def lookup_of(context: ClientContext) -> tuple[bytes, bytes | None]:
    """The RS's (Recipient ID, ID Context) of the context a client holds."""
    return context.sender_id, context.id_context


# ---- over the wire ---------------------------------------------------------------------------

MANY = 120


def test_each_of_many_contexts_finds_its_own() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys, capacity=MANY) as (site, port), client_ctx() as client:
            serve_who(site)
            contexts = []
            for _ in range(MANY):
                mat = material()
                contexts.append(await establish(client, port, mint(keys, mat), mat))
            assert len(site.contexts) == MANY
            order = list(contexts)
            random.shuffle(order)
            for context in order:
                use(client, port, context)
                response = await request(client, port, aiocoap.GET, "/who")
                assert code(response) == "2.05"
                assert response.payload == f"{context.sender_id.hex()}:-".encode()
                (installed,) = site.server_credentials.indexed(*lookup_of(context))
                assert installed.recipient_id == context.sender_id

    run(body())


def test_a_dropped_context_is_gone_and_its_kid_is_not_found() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            mats = [material(), material()]
            kept, dropped = [await establish(client, port, mint(keys, m), m) for m in mats]
            use(client, port, dropped)
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            entry = site.rs.store.find(*lookup_of(dropped))
            assert entry is not None
            site.drop(entry.key_id, reason="revoked")
            assert site.server_credentials.indexed(*lookup_of(dropped)) == []
            answer = await unprotected_answer(client, port, "/temp")
            assert code(answer) == "4.01"
            assert answer.payload == NOT_FOUND
            use(client, port, kept)
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"

    run(body())


def test_an_expired_context_is_gone_and_its_kid_is_not_found() -> None:
    keys, clock = Keys(), FakeClock()

    async def body() -> None:
        async with serving(keys, clock=clock) as (site, port), client_ctx() as client:
            mat = material()
            context = await establish(client, port, mint(keys, mat, now=clock.now), mat)
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            clock.now += 301
            assert site.expire_now() == 1
            assert site.server_credentials.indexed(*lookup_of(context)) == []
            answer = await unprotected_answer(client, port, "/temp")
            assert (code(answer), answer.payload) == ("4.01", NOT_FOUND)

    run(body())


def test_a_superseded_context_is_gone_and_its_successor_found() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            serve_who(site)
            mat = material()
            old = await establish(client, port, mint(keys, mat), mat)
            new = await establish(client, port, mint(keys, mat), mat)  # same PoP key
            assert lookup_of(old) != lookup_of(new)
            assert site.server_credentials.indexed(*lookup_of(old)) == []
            assert len(site.server_credentials.indexed(*lookup_of(new))) == 1
            use(client, port, old)
            answer = await unprotected_answer(client, port, "/who")
            assert (code(answer), answer.payload) == ("4.01", NOT_FOUND)
            use(client, port, new)
            response = await request(client, port, aiocoap.GET, "/who")
            assert response.payload == f"{new.sender_id.hex()}:-".encode()

    run(body())


def test_an_unknown_kid_is_not_found_among_many() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys, capacity=20) as (_site, port), client_ctx() as client:
            for _ in range(20):
                mat = material()
                await establish(client, port, mint(keys, mat), mat)
            stranger = _client_side(_pair(b"\x77\x77\x77", None))
            use(client, port, stranger)
            answer = await unprotected_answer(client, port, "/temp")
            assert (code(answer), answer.payload) == ("4.01", NOT_FOUND)

    run(body())


def _pair(server_id: bytes, id_context: bytes | None) -> tuple[DerivedContext, DerivedContext]:
    """(RS side, client side) of a context with Recipient ID ``server_id`` at the RS."""
    mat = OscoreInputMaterial(id=os.urandom(4), ms=os.urandom(16), context_id=id_context)
    n1, n2 = os.urandom(8), os.urandom(8)
    rs = derive_context_parameters(mat, n1, n2, b"\x42", server_id, role="rs")
    client = derive_context_parameters(mat, n1, n2, b"\x42", server_id, role="client")
    return rs, client


def _context(derived: DerivedContext, key_id: bytes) -> DurableSecurityContext:
    return DurableSecurityContext(
        derived,
        key_id=key_id,
        reservation=SequenceNumberReservation(0, chunk=1 << 20),
        persist_mark=lambda mark: None,
        replay_window_known=True,
    )


def _client_side(pair: tuple[DerivedContext, DerivedContext]) -> ClientContext:
    return ClientContext(
        pair[1],
        key_id=b"client",
        reservation=SequenceNumberReservation(0, chunk=1 << 20),
        persist_mark=lambda mark: None,
        replay_window_known=True,
    )


def test_the_same_kid_under_two_kid_contexts_reaches_two_contexts() -> None:
    keys = Keys()
    kid = b"\x5a\x5a"

    async def body() -> None:
        async with serving(keys) as (site, port), client_ctx() as client:
            site.root.add_bounded(["raw-who"], Who(), 0)  # behind OSCORE, no token check
            pairs = {ctx: _pair(kid, ctx) for ctx in (b"\xc1", b"\xc2", None)}
            for id_context, pair in pairs.items():
                site.server_credentials[f":test:{id_context!r}"] = _context(pair[0], b"t")
            assert len(site.server_credentials.indexed(kid, b"\xc1")) == 1
            for id_context, pair in pairs.items():
                use(client, port, _client_side(pair))
                response = await request(client, port, aiocoap.GET, "/raw-who")
                assert code(response) == "2.05"
                shown = "-" if id_context is None else id_context.hex()
                assert response.payload == f"{kid.hex()}:{shown}".encode()
            other = _client_side(_pair(kid, b"\xc3"))  # the kid known, this kid context not
            use(client, port, other)
            answer = await unprotected_answer(client, port, "/raw-who")
            assert (code(answer), answer.payload) == ("4.01", NOT_FOUND)

    run(body())


def test_an_edhoc_derived_context_is_found_among_many_and_gone_with_its_token() -> None:
    keys = Keys()
    rs_party, dev = Party.make(b"\x32", "rs.example"), Party.make(b"\x2b", "dev-1")

    async def body() -> None:
        served = serving_edhoc(keys, rs_party, capacity=40)
        async with served as (site, port), client_ctx() as client:
            assert code(await post_token(client, port, mint_edhoc(keys, dev.ccs))) == "2.01"
            for _ in range(30):
                mat = material()
                await establish(client, port, mint(keys, mat), mat)
            use_edhoc(client, port, edhoc_credentials(dev, rs_party))
            assert code(await request(client, port, aiocoap.GET, "/temp")) == "2.05"
            assert site.edhoc is not None
            session = site.edhoc.session(dev.ccs.fingerprint)
            assert session is not None
            assert site.server_credentials.indexed(session.recipient_id, None) == [session]
            assert session.recipient_id in (
                site.server_credentials.find_all_used_contextless_oscore_kid()
            )
            site.drop(dev.ccs.fingerprint, reason="revoked")
            assert site.server_credentials.indexed(session.recipient_id, None) == []

    run(body())


# ---- the index against aiocoap's map -------------------------------------------------------


class Asked:
    """An item with a matcher of its own (not indexable): taken when ``kid`` matches."""

    def __init__(self, kid: bytes) -> None:
        self.kid = kid

    def get_oscore_context_for(self, unprotected: dict[int, Any]) -> Asked | None:
        return self if unprotected.get(oscore.COSE_KID) == self.kid else None

    def find_all_used_contextless_oscore_kid(self) -> set[bytes]:
        return {self.kid}


def _random_item(rng: random.Random, kids: list[bytes], contexts: list[bytes | None]) -> Any:
    kind = rng.random()
    if kind < 0.1:
        return Asked(rng.choice(kids))
    if kind < 0.15:
        return object()  # no OSCORE item: never found
    derived = _pair(rng.choice(kids), rng.choice(contexts))[0]
    context = _context(derived, os.urandom(4))
    if rng.random() < 0.1:
        context.removed = True  # a removed context takes nothing
    return context


def test_the_index_finds_what_aiocoap_finds() -> None:
    rng = random.Random(20261202)
    kids = [b"", b"\x00", b"\x01", b"\x01\x02", b"\xff" * 7]
    contexts: list[bytes | None] = [None, b"", b"\xc1", b"\xc1\xc2"]
    for _ in range(60):
        plain, indexed = credentials.CredentialsMap(), IndexedCredentialsMap()
        labels = [f":l{i}" for i in range(8)]
        for _ in range(40):
            label, op = rng.choice(labels), rng.random()
            if op < 0.55:
                item = _random_item(rng, kids, contexts)
                plain[label] = item  # a replaced label keeps its place in both
                indexed[label] = item
            elif op < 0.7:
                assert plain.pop(label, None) is indexed.pop(label, None)
            elif op < 0.8 and label in plain:
                del plain[label]
                del indexed[label]
            elif op < 0.85:
                more = {rng.choice(labels): _random_item(rng, kids, contexts)}
                plain.update(more)
                indexed.update(more)
            elif op < 0.87:
                plain.clear()
                indexed.clear()
            assert dict(plain) == dict(indexed)
            assert (
                plain.find_all_used_contextless_oscore_kid()
                == indexed.find_all_used_contextless_oscore_kid()
            )
            for kid in [*kids, b"\x99", None]:
                for kid_context in [*contexts, b"\x99"]:
                    unprotected: dict[int, Any] = {}
                    if kid is not None:
                        unprotected[oscore.COSE_KID] = kid
                    if kid_context is not None:
                        unprotected[oscore.COSE_KID_CONTEXT] = kid_context
                    assert _found(plain, unprotected) is _found(indexed, unprotected), (
                        unprotected,
                        dict(plain),
                    )


def _found(where: credentials.CredentialsMap, unprotected: dict[int, Any]) -> Any:
    """The item ``where`` finds for ``unprotected``, or None when it raises KeyError."""
    try:
        return where.find_oscore(unprotected)
    except KeyError:
        return None


def test_the_index_places_items_by_their_matcher() -> None:
    derived = _pair(b"\x07", b"\xc1")[0]
    assert oscore_lookup(_context(derived, b"k")) == (b"\x07", b"\xc1")
    assert oscore_lookup(Asked(b"\x07")) == "asked"
    assert oscore_lookup(object()) == "not-oscore"


def test_the_index_keeps_a_popitem_and_setdefault_in_step() -> None:
    indexed = IndexedCredentialsMap()
    first = _context(_pair(b"\x01", None)[0], b"a")
    assert indexed.setdefault(":a", first) is first
    assert indexed.setdefault(":a", _context(_pair(b"\x02", None)[0], b"b")) is first
    assert indexed.find_oscore({oscore.COSE_KID: b"\x01"}) is first
    assert indexed.popitem() == (":a", first)
    with pytest.raises(KeyError):
        indexed.find_oscore({oscore.COSE_KID: b"\x01"})
    with pytest.raises(KeyError):
        indexed.pop(":a")
    indexed |= {":b": first}
    assert indexed.indexed(b"\x01", None) == [first]
    assert indexed.find_all_used_contextless_oscore_kid() == {b"\x01"}


def test_a_request_naming_no_kid_finds_nothing() -> None:
    indexed = IndexedCredentialsMap({":a": _context(_pair(b"", None)[0], b"a")})
    with pytest.raises(KeyError):
        indexed.find_oscore({})
    assert indexed.find_oscore({oscore.COSE_KID: b""}) is indexed[":a"]


def test_a_posted_token_over_a_crowded_rs_installs_one_indexed_context() -> None:
    keys = Keys()

    async def body() -> None:
        async with serving(keys, capacity=5) as (site, _port):
            mat = material()
            payload = AuthzInfoRequest(mint(keys, mat), os.urandom(8), b"\x42").encode()
            response = await site.post_token(payload, "test")
            assert code(response) == "2.01"
            (entry,) = list(site.rs.store)
            context = site.contexts.get(entry.key_id)
            assert context is not None
            found = site.server_credentials.find_oscore({oscore.COSE_KID: context.recipient_id})
            assert found is context

    run(body())


def test_the_echo_recovery_value_is_drawn_once_per_context() -> None:
    """Drawn when first asked (RFC 8613 Appendix B.1.2): fixed for the context, not shared."""
    first = _context(_pair(b"\x07", None)[0], b"k1")
    second = _context(_pair(b"\x08", None)[0], b"k2")
    value = first.echo_recovery
    assert isinstance(value, bytes)
    assert len(value) == 8
    assert first.echo_recovery == value
    assert second.echo_recovery != value
