"""``keybound bench`` group ``oscore``: protected GETs per second against plain CoAP.

Three aiocoap servers on 127.0.0.1 serve the same ``GET /temp`` (a short
payload); one aiocoap client sends to each, :data:`CONCURRENCY` requests in
flight, all in one event loop in this process:

* keybound's Resource Server (:class:`~keybound.coap.resource_server_site.ResourceServerSite`,
  contexts in memory): the client POSTs an access token (COSE_Encrypt0 with
  ``cnf.osc``) to ``/authz-info`` and derives its context (RFC 9203 §4.3);
  every GET is then OSCORE-protected and passes the RS's scope check.
* a bare aiocoap OSCORE server: :class:`aiocoap.oscore_sitewrapper.OscoreSiteWrapper`
  with one static context, aiocoap's own file-backed context, derived from the
  same input material, nonces and IDs.
* a plain aiocoap server, no OSCORE.

The client's OSCORE context is the same class for both protected servers
(keybound's in-memory context), so the two protected rates differ by the
server side only. ``oscore.rs_protected_get_rps`` is read against the bare
aiocoap OSCORE server (a ratio below 1: keybound's RS is slower), and
``oscore.bare_aiocoap_oscore_rps`` against the plain server.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiocoap
import aiocoap.resource
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper

from keybound.coap.resource_server_site import ResourceServerSite
from keybound.core import cwt
from keybound.core.authz_info import NONCE_BYTES, AuthzInfoRequest, AuthzInfoResponse
from keybound.core.keys import Key
from keybound.core.oscore_derivation import DerivedContext, derive_context_parameters
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.resource_server import ResourceServer, RsPolicy, scope_tokens
from keybound.core.token import CnfOsc
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    CLIENT_ID,
    HOST,
    SCOPE,
    client_oscore_context,
    free_udp_port,
    sample_token,
)
from keybound.tools.bench.measure import REQUESTS_PER_SECOND, Figure, Group, Measurement, Runner

FIGURES = ("oscore.rs_protected_get_rps", "oscore.bare_aiocoap_oscore_rps")
CONCURRENCY = 8
PAYLOAD = b"21.50"
#: The RS's Recipient ID for the bare server (the RS picks its own).
BARE_SERVER_ID = b"\x00"


class Temperature(aiocoap.resource.Resource):  # type: ignore[misc]
    """``GET /temp``: a short reading."""

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=PAYLOAD)


def temperature_site() -> aiocoap.resource.Site:
    site = aiocoap.resource.Site()
    site.add_resource(["temp"], Temperature())
    return site


def resource_server(
    token_keys: tuple[Key, ...],
    *,
    as_public_keys: tuple[Key, ...] = (),
    audience: str = AUDIENCE,
    scope: str = SCOPE,
) -> ResourceServerSite:
    """keybound's RS site, contexts in memory, serving ``GET /temp`` to ``scope``."""
    policy = RsPolicy(
        audience=audience,
        as_uri=f"coap://{HOST}/token",
        token_keys=token_keys,
        as_public_keys=as_public_keys,
        resources=scope_tokens({}),
    )
    site = ResourceServerSite(ResourceServer(policy))
    site.add_protected("/temp", Temperature(), scopes={"GET": [scope]})
    return site


def bare_server_context(derived: DerivedContext, where: Path) -> FilesystemSecurityContext:
    """aiocoap's own server context for ``derived`` (the RS's side), in ``where``."""
    where.mkdir(parents=True)
    settings = {
        "secret_hex": derived.master_secret.hex(),
        "salt_hex": derived.master_salt.hex(),
        "sender-id_hex": derived.sender_id.hex(),
        "recipient-id_hex": derived.recipient_id.hex(),
    }
    if derived.id_context is not None:
        settings["id-context_hex"] = derived.id_context.hex()
    (where / "settings.json").write_text(json.dumps(settings))
    return FilesystemSecurityContext(str(where))


async def establish(
    client: aiocoap.Context, port: int, token: bytes, material: OscoreInputMaterial
) -> DerivedContext:
    """POST the token to ``/authz-info``; the client's derived parameters (RFC 9203 §4.3)."""
    nonce1 = os.urandom(NONCE_BYTES)
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"coap://{HOST}:{port}/authz-info",
        payload=AuthzInfoRequest(token, nonce1, CLIENT_ID).encode(),
        content_format=19,
    )
    response = await client.request(request).response
    if response.code != aiocoap.CREATED:
        raise RuntimeError(f"/authz-info: {response.code} {response.payload!r}")
    answer = AuthzInfoResponse.decode(response.payload)
    return derive_context_parameters(
        material,
        nonce1,
        answer.nonce2,
        CLIENT_ID,
        answer.server_recipient_id,
        role="client",
    )


def _get(client: aiocoap.Context, port: int) -> Callable[[], Awaitable[None]]:
    uri = f"coap://{HOST}:{port}/temp"

    async def send() -> None:
        response = await client.request(aiocoap.Message(code=aiocoap.GET, uri=uri)).response
        if response.code != aiocoap.CONTENT or response.payload != PAYLOAD:
            raise RuntimeError(f"{uri}: {response.code} {response.payload!r}")

    return send


async def _rates(runner: Runner, tmp: Path) -> tuple[Measurement, Measurement, Measurement]:
    token_key = Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"rs1")
    material = OscoreInputMaterial(id=os.urandom(3), ms=os.urandom(16))
    token = cwt.encode(
        sample_token(CnfOsc(material), now=int(time.time())),
        cwt.Encrypt0(token_key),
        random_bytes=os.urandom,
    )
    rs = resource_server((token_key,))
    rs_port, bare_port, plain_port = free_udp_port(), free_udp_port(), free_udp_port()
    # the bare server's context: the same derivation, with nonces of its own
    n1, n2 = os.urandom(NONCE_BYTES), os.urandom(NONCE_BYTES)
    bare_credentials = CredentialsMap()
    bare_credentials[":client"] = bare_server_context(
        derive_context_parameters(material, n1, n2, CLIENT_ID, BARE_SERVER_ID, role="rs"),
        tmp / "bare",
    )
    servers = [
        await rs.serve((HOST, rs_port)),
        await aiocoap.Context.create_server_context(
            OscoreSiteWrapper(temperature_site(), bare_credentials),
            bind=(HOST, bare_port),
            transports=["udp6"],
        ),
        await aiocoap.Context.create_server_context(
            temperature_site(), bind=(HOST, plain_port), transports=["udp6"]
        ),
    ]
    client = await aiocoap.Context.create_client_context()
    try:
        derived = await establish(client, rs_port, token, material)
        client.client_credentials[f"coap://{HOST}:{rs_port}/*"] = client_oscore_context(derived)
        client.client_credentials[f"coap://{HOST}:{bare_port}/*"] = client_oscore_context(
            derive_context_parameters(material, n1, n2, CLIENT_ID, BARE_SERVER_ID)
        )
        protected, bare, plain = (
            _get(client, rs_port),
            _get(client, bare_port),
            _get(client, plain_port),
        )
        for op in (protected, bare, plain):
            await op()  # every request must succeed before it is timed
        plain_rate = await runner.rate("oscore.plain_get_rps", plain, concurrency=CONCURRENCY)
        bare_rate = await runner.rate(
            "oscore.bare_aiocoap_oscore_rps", bare, concurrency=CONCURRENCY
        )
        rs_rate = await runner.rate(
            "oscore.rs_protected_get_rps", protected, concurrency=CONCURRENCY
        )
        return rs_rate, bare_rate, plain_rate
    finally:
        await client.shutdown()
        await rs.shutdown()
        for server in servers[1:]:
            await server.shutdown()


def run(runner: Runner) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        rs_rate, bare_rate, plain_rate = asyncio.run(_rates(runner, Path(tmp)))
        gc.collect()  # aiocoap's file-backed context writes its sequence file when collected
    return [
        Figure.of(
            "oscore.rs_protected_get_rps",
            rs_rate,
            REQUESTS_PER_SECOND,
            bare_rate,
            "oscore.bare_aiocoap_oscore_rps",
        ),
        Figure.of(
            "oscore.bare_aiocoap_oscore_rps",
            bare_rate,
            REQUESTS_PER_SECOND,
            plain_rate,
            "oscore.plain_get_rps",
        ),
    ]


GROUP = Group(
    name="oscore",
    title="OSCORE GETs per second: keybound's RS, bare aiocoap OSCORE, plain CoAP",
    figures=FIGURES,
    run=run,
    steps=3,
)

__all__ = [
    "CONCURRENCY",
    "FIGURES",
    "GROUP",
    "Temperature",
    "establish",
    "resource_server",
    "temperature_site",
]
