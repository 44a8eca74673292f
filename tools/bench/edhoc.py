"""``keybound bench`` group ``edhoc``: the EDHOC and OSCORE profile's sizes and costs.

* ``edhoc.token_bytes``: the EDHOC profile's token as keybound's AS issues it (a
  COSE_Sign1 with ``cnf`` ``kccs``, the client's CCS, and ``edhoc_info``), against
  the OSCORE profile's token of the same claims (COSE_Sign1 nested in COSE_Encrypt0,
  ``cnf`` ``osc``): the credential costs bytes, no encryption layer is needed.
* ``edhoc.message_bytes``: message_1 + message_2 + message_3 of method 3 (credentials
  by kid, no EAD) as they crossed the wire to and from keybound's RS, against the
  same exchange between lakers Initiator and Responder alone (lakers publishes 101
  bytes for it).
* ``edhoc.handshake_us``: one EDHOC handshake with keybound's RS over loopback CoAP
  (lakers as Initiator), against lakers Initiator and Responder in one process;
  measured in alternating rounds so that both see the same machine state.
* ``edhoc.own_handshake_us``: one method 3 handshake between keybound's own EDHOC
  Initiator and Responder (:mod:`keybound.core.edhoc`) in one process, against lakers
  Initiator and Responder alone, in the same alternating rounds.
* ``edhoc.method_0_message_bytes``: message_1 + message_2 + message_3 of method 0
  (ES256 signatures, credentials by kid) by keybound's EDHOC, against method 3.
* ``edhoc.rs_protected_get_rps``: GETs per second over an EDHOC-derived OSCORE
  context at keybound's RS (the session bound to its token, scope checked; the
  client's context is the one lakers exported), against a bare aiocoap OSCORE
  server with one static context; the same client context class for both.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiocoap
import lakers
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from keybound.coap.resource_server_site import EdhocIdentity, ResourceServerSite
from keybound.core import cbor, cwt
from keybound.core.edhoc import AuthKey, Initiator, Responder
from keybound.core.edhoc_credentials import Ccs, private_key_map
from keybound.core.edhoc_suites import SUITE_2
from keybound.core.keys import Key
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.numbers.edhoc_profile import CLAIM_EDHOC_INFO
from keybound.core.oscore_derivation import DerivedContext, derive_context_parameters
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.resource_server import ResourceServer, RsPolicy, scope_tokens
from keybound.core.token import CnfKccs, CnfOsc
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    HOST,
    SCOPE,
    client_oscore_context,
    free_udp_port,
    sample_token,
)
from keybound.tools.bench.measure import (
    BYTES,
    MICROSECONDS,
    REQUESTS_PER_SECOND,
    Figure,
    Group,
    Measurement,
    Runner,
)
from keybound.tools.bench.oscore import (
    CONCURRENCY,
    Temperature,
    _get,
    bare_server_context,
    temperature_site,
)

FIGURES = (
    "edhoc.token_bytes",
    "edhoc.message_bytes",
    "edhoc.handshake_us",
    "edhoc.own_handshake_us",
    "edhoc.method_0_message_bytes",
    "edhoc.rs_protected_get_rps",
)
#: Alternating rounds of the handshake timing (each round times both sides).
ROUNDS = 3
EDHOC = int(AceProfile.COAP_EDHOC_OSCORE)


class _Party:
    def __init__(self, kid: bytes, subject: str, *, signing: bool = False) -> None:
        key = Key.generate_ec2(kid=kid)
        self.ccs = Ccs.make(key, subject=subject, signing=signing)
        d = private_key_map(key)[-4]
        assert isinstance(d, bytes)
        self.d = d
        self.auth = AuthKey(SUITE_2, self.ccs.edhoc(), d)


def own_alone(client: _Party, rs: _Party, method: int = 3) -> int:
    """One handshake between keybound's own Initiator and Responder; its message bytes."""
    initiator = Initiator(client.auth, method=method, c_i=b"\x0e")
    responder = Responder(rs.auth)
    message_1 = initiator.message_1()
    responder.process_message_1(message_1)
    message_2 = responder.message_2(b"\x05")
    initiator.parse_message_2(message_2)
    initiator.verify_message_2(rs.auth.credential)
    message_3 = initiator.message_3()
    responder.parse_message_3(message_3)
    responder.verify_message_3(client.auth.credential)
    initiator.process_message_4(responder.message_4())
    return len(message_1) + len(message_2) + len(message_3)


def token_sizes() -> tuple[int, int]:
    """(EDHOC profile token, OSCORE profile token) bytes for the benchmark's claims."""
    as_key = Key.generate_ec2(kid=b"as1")
    token_key = Key.generate_symmetric(16, kid=b"rs1", random_bytes=os.urandom)
    client = _Party(b"\x2b", "dev-1")
    edhoc_claims = sample_token(CnfKccs(client.ccs.encoded))
    edhoc_claims = type(edhoc_claims)(
        **{
            **edhoc_claims.__dict__,
            "ace_profile": EDHOC,
            "extra": {CLAIM_EDHOC_INFO: {0: os.urandom(8)}},
        }
    )
    edhoc_token = cwt.encode(edhoc_claims, cwt.Sign1(as_key))
    material = OscoreInputMaterial(id=os.urandom(3), ms=os.urandom(16), salt=os.urandom(8))
    oscore_claims = sample_token(CnfOsc(material))
    oscore_claims = type(oscore_claims)(
        **{**oscore_claims.__dict__, "ace_profile": int(AceProfile.COAP_OSCORE)}
    )
    oscore_token = cwt.encode(
        oscore_claims,
        cwt.Nested(cwt.Sign1(as_key), cwt.Encrypt0(token_key)),
        random_bytes=os.urandom,
    )
    return len(edhoc_token), len(oscore_token)


def lakers_alone(client: _Party, rs: _Party) -> int:
    """One method 3 handshake between lakers Initiator and Responder; its message bytes."""
    initiator = lakers.EdhocInitiator()
    responder = lakers.EdhocResponder(r=rs.d, cred_r=rs.ccs.encoded)
    message_1 = initiator.prepare_message_1(b"\x0e", [])
    responder.process_message_1(message_1)
    message_2 = responder.prepare_message_2(lakers.CredentialTransfer.ByReference, b"\x05", None)
    initiator.parse_message_2(message_2)
    initiator.verify_message_2(client.d, client.ccs.encoded, rs.ccs.encoded)
    message_3, _ = initiator.prepare_message_3(lakers.CredentialTransfer.ByReference, [])
    responder.parse_message_3(message_3)
    responder.verify_message_3(client.ccs.encoded)
    return len(message_1) + len(message_2) + len(message_3)


def _rs(as_key: Key, token_key: Key, rs: _Party) -> ResourceServerSite:
    policy = RsPolicy(
        audience=AUDIENCE,
        as_uri=f"coap://{HOST}/token",
        token_keys=(token_key,),
        as_public_keys=(as_key.public_key(),),
        resources=scope_tokens({}),
        profiles=frozenset({EDHOC}),
    )
    site = ResourceServerSite(ResourceServer(policy), edhoc=EdhocIdentity(rs.d, rs.ccs))
    site.add_protected("/temp", Temperature(), scopes={"GET": [SCOPE]})
    return site


async def _post(client: aiocoap.Context, uri: str, payload: bytes) -> aiocoap.Message:
    message = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload)
    response: aiocoap.Message = await client.request(message).response
    return response


def _exported(party: object, *, sender_id: bytes, recipient_id: bytes) -> DerivedContext:
    """The OSCORE context parameters EDHOC exports (RFC 9528 Appendix A.1, suite 2)."""
    exporter = party.edhoc_exporter  # type: ignore[attr-defined]
    return DerivedContext(
        master_secret=bytes(exporter(0, [], 16)),
        master_salt=bytes(exporter(1, [], 8)),
        id_context=None,
        sender_id=sender_id,
        recipient_id=recipient_id,
    )


def _handshake(
    client: aiocoap.Context,
    port: int,
    dev: _Party,
    rs: _Party,
    sizes: list[int],
    exported: list[DerivedContext],
) -> Callable[[], Awaitable[None]]:
    uri = f"coap://{HOST}:{port}/.well-known/edhoc"

    async def once() -> None:
        initiator = lakers.EdhocInitiator()
        message_1 = initiator.prepare_message_1(b"\x0e", [])
        answer = await _post(client, uri, b"\xf5" + message_1)
        c_r, _id_cred_r, _ead = initiator.parse_message_2(answer.payload)
        initiator.verify_message_2(dev.d, dev.ccs.encoded, rs.ccs.encoded)
        message_3, _ = initiator.prepare_message_3(lakers.CredentialTransfer.ByReference, [])
        done = await _post(client, uri, bytes(c_r) + message_3)
        if done.code != aiocoap.CHANGED:
            raise RuntimeError(f"EDHOC message_3: {done.code} {done.payload!r}")
        initiator.process_message_4(done.payload)
        sizes[:] = [len(message_1), len(answer.payload), len(message_3)]
        exported[:] = [_exported(initiator, sender_id=bytes(c_r), recipient_id=b"\x0e")]

    return once


def _as_microseconds(rate: Measurement) -> Measurement:
    return Measurement(1e6 / rate.median, 1e6 / rate.high, 1e6 / rate.low)


async def _measure(runner: Runner, tmp: Path) -> list[Figure]:
    as_key = Key.generate_ec2(kid=b"as1")
    token_key = Key.generate_symmetric(16, kid=b"rs1", random_bytes=os.urandom)
    rs, dev = _Party(b"\x32", "rs.example"), _Party(b"\x2b", "dev-1")
    token = cwt.encode(
        type(sample_token(CnfKccs(dev.ccs.encoded), now=int(time.time())))(
            **{
                **sample_token(CnfKccs(dev.ccs.encoded), now=int(time.time())).__dict__,
                "ace_profile": EDHOC,
            }
        ),
        cwt.Sign1(as_key),
    )
    site = _rs(as_key, token_key, rs)
    rs_port, bare_port = free_udp_port(), free_udp_port()
    await site.serve((HOST, rs_port))
    bare_credentials = CredentialsMap()
    bare = await aiocoap.Context.create_server_context(
        OscoreSiteWrapper(temperature_site(), bare_credentials),
        bind=(HOST, bare_port),
        transports=["udp6"],
    )
    client = await aiocoap.Context.create_client_context()
    try:
        posted = await _post(client, f"coap://{HOST}:{rs_port}/authz-info", cbor.dumps({1: token}))
        if posted.code != aiocoap.CREATED:
            raise RuntimeError(f"/authz-info: {posted.code} {posted.payload!r}")
        sizes: list[int] = []
        exported: list[DerivedContext] = []
        handshake = _handshake(client, rs_port, dev, rs, sizes, exported)
        await handshake()

        async def alone() -> None:
            lakers_alone(dev, rs)

        async def own() -> None:
            own_alone(dev, rs)

        through_rs: list[Measurement] = []
        by_lakers: list[Measurement] = []
        by_own: list[Measurement] = []
        for _round in range(ROUNDS):
            through_rs.append(await runner.rate("edhoc.handshake_us", handshake))
            by_lakers.append(await runner.rate("edhoc.lakers_handshake_us", alone))
            by_own.append(await runner.rate("edhoc.own_handshake_us", own))
        rs_rate, lakers_rate, own_rate = (
            Measurement(
                statistics.median(m.median for m in rounds),
                min(m.low for m in rounds),
                max(m.high for m in rounds),
            )
            for rounds in (through_rs, by_lakers, by_own)
        )
        # The context of the last handshake, as lakers exported it, serves the GETs (aiocoap
        # 0.4.17's EDHOC client would run EDHOC again for every request).
        client.client_credentials[f"coap://{HOST}:{rs_port}/*"] = client_oscore_context(exported[0])
        n1, n2 = os.urandom(8), os.urandom(8)
        bare_derived = derive_context_parameters(
            OscoreInputMaterial(id=b"\x01", ms=os.urandom(16)), n1, n2, b"\x0e", b"\x05"
        )
        client.client_credentials[f"coap://{HOST}:{bare_port}/*"] = client_oscore_context(
            bare_derived
        )
        bare_credentials[":client"] = bare_server_context(
            DerivedContext(
                master_secret=bare_derived.master_secret,
                master_salt=bare_derived.master_salt,
                id_context=None,
                sender_id=bare_derived.recipient_id,
                recipient_id=bare_derived.sender_id,
            ),
            tmp / "bare",
        )
        protected, bare_get = _get([client], rs_port), _get([client], bare_port)
        for op in (protected, bare_get):
            await op()  # every request must succeed before it is timed
        bare_rate = await runner.rate(
            "edhoc.bare_aiocoap_oscore_rps", bare_get, concurrency=CONCURRENCY
        )
        get_rate = await runner.rate(
            "edhoc.rs_protected_get_rps", protected, concurrency=CONCURRENCY
        )
    finally:
        await client.shutdown()
        await site.shutdown()
        await bare.shutdown()
    edhoc_token, oscore_token = token_sizes()
    return [
        Figure.of(
            "edhoc.token_bytes",
            Measurement.exact(edhoc_token),
            BYTES,
            Measurement.exact(oscore_token),
            "oscore_profile_token_bytes",
        ),
        Figure.of(
            "edhoc.message_bytes",
            Measurement.exact(sum(sizes)),
            BYTES,
            Measurement.exact(lakers_alone(dev, rs)),
            "lakers_alone_message_bytes",
        ),
        Figure.of(
            "edhoc.handshake_us",
            _as_microseconds(rs_rate),
            MICROSECONDS,
            _as_microseconds(lakers_rate),
            "lakers_alone_handshake_us",
        ),
        Figure.of(
            "edhoc.own_handshake_us",
            _as_microseconds(own_rate),
            MICROSECONDS,
            _as_microseconds(lakers_rate),
            "lakers_alone_handshake_us",
        ),
        Figure.of(
            "edhoc.method_0_message_bytes",
            Measurement.exact(
                own_alone(
                    _Party(b"\x2b", "dev-1", signing=True),
                    _Party(b"\x32", "rs.example", signing=True),
                    0,
                )
            ),
            BYTES,
            Measurement.exact(own_alone(dev, rs)),
            "method_3_message_bytes",
        ),
        Figure.of(
            "edhoc.rs_protected_get_rps",
            get_rate,
            REQUESTS_PER_SECOND,
            bare_rate,
            "bare_aiocoap_oscore_rps",
        ),
    ]


def run(runner: Runner) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        figures = asyncio.run(_measure(runner, Path(tmp)))
        gc.collect()  # aiocoap's file-backed context writes its sequence file when collected
    return figures


GROUP = Group(
    name="edhoc",
    title="The EDHOC and OSCORE profile: token and message bytes, handshake, GET rate",
    figures=FIGURES,
    run=run,
    steps=3 * ROUNDS + 2,
)

__all__ = ["FIGURES", "GROUP", "lakers_alone", "own_alone", "run", "token_sizes"]
