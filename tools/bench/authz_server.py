"""``keybound bench`` group ``as``: token requests per second at the Authorization Server.

In process, :meth:`keybound.coap.authz_service.AuthzService.issue_token` answers a token
request against the AS's own storage (:class:`~keybound.tools.authz_server.storage.SqlAuthzStore`
on an SQLite file in a temporary directory, as ``keybound as serve`` runs by
default), recording every token it issues:

* ``as.issue_es256_req_cnf``: the client sends its P-256 public key in
  ``req_cnf``; the token is a COSE_Sign1 (ES256) with ``cnf`` COSE_Key.
* ``as.issue_osc``: no key from the client; the AS draws OSCORE input material
  and the token is a COSE_Encrypt0 (AES-CCM-16-64-128) around the AS's Sign1
  (RFC 9203 §3.2, RFC 8392 Appendix A.6).

Both are read against ``as.floor``: the raw primitives that no AS can avoid
for the nested token, as one function: cbor2 ``dumps`` of the claims, an
ECDSA P-256 signature, AES-CCM encryption of claims and signature. The floor
itself is read against the bare ECDSA signature.

Over CoAP, ``as.coap_token_rps`` is POST ``/token`` through the AS's real
site (``keybound.coap.authz_server_site``, OSCORE-protected with the client's
provisioned context, the token as in ``as.issue_osc``), against
``as.coap_plain_rps``: aiocoap's request rate to a trivial resource that
answers a POST of the same payload. Server and client share one event loop
in this process, on loopback, with :data:`CONCURRENCY` requests in flight.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import aiocoap.resource
import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESCCM

from keybound.coap.authz_server_site import build_site
from keybound.coap.authz_service import AuthzService
from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.core.authz_server import AuthzServerConfig, TokenRequest
from keybound.core.authz_store import OscoreContext, RsRecord
from keybound.core.keys import Key
from keybound.core.numbers.ace_parameters import AceParameter
from keybound.core.oscore_derivation import DerivedContext
from keybound.tools.authz_server.provision import (
    add_clients,
    add_resource_server,
    as_config,
    init_issuer,
)
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bench.fixtures import (
    AUDIENCE,
    HOST,
    ISSUER,
    Keys,
    client_oscore_context,
    free_udp_port,
)
from keybound.tools.bench.measure import (
    REQUESTS_PER_SECOND,
    TOKENS_PER_SECOND,
    Figure,
    Group,
    Measurement,
    Runner,
)

FIGURES = (
    "as.issue_es256_req_cnf",
    "as.issue_osc",
    "as.floor",
    "as.coap_token_rps",
)
#: The scope the benchmark's client is granted and asks for.
AS_SCOPE = "read"
CLIENT = "bench-client"
#: CoAP requests in flight at once, for the token and the plain rates alike.
CONCURRENCY = 8
ACE_CBOR = 19
_ECDSA = ec.ECDSA(hashes.SHA256())


@dataclass
class ProvisionedAs:
    """An AS store with one resource server (audience ``AUDIENCE``) and one OSCORE client."""

    store: SqlAuthzStore
    config: AuthzServerConfig
    rs: RsRecord
    client: OscoreContext
    state_dir: Path

    def token_key(self) -> Key:
        """The AS-RS token key, as the RS bundle carries it."""
        current = self.rs.token_key
        return Key.from_cose_key(current.key).with_kid(current.kid)


@contextmanager
def provisioned_as() -> Iterator[ProvisionedAs]:
    """A fresh AS in a temporary directory, closed and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp:
        store = SqlAuthzStore.init(f"sqlite:///{Path(tmp) / 'as.db'}")
        try:
            init_issuer(store, ISSUER)
            rs = add_resource_server(store, "bench-rs", AUDIENCE, [AS_SCOPE], has_clock=True)
            client = add_clients(store, [CLIENT], {AUDIENCE: [AS_SCOPE]})[0]
            assert client.oscore is not None
            yield ProvisionedAs(store, as_config(store), rs, client.oscore, Path(tmp) / "state")
        finally:
            store.close()


def client_security_context(ctx: OscoreContext) -> DurableSecurityContext:
    """The client's side of its provisioned client-AS context, in memory."""
    return client_oscore_context(
        DerivedContext(
            master_secret=ctx.master_secret,
            master_salt=ctx.master_salt,
            id_context=ctx.id_context,
            sender_id=ctx.sender_id,
            recipient_id=ctx.recipient_id,
        )
    )


class _Answer(aiocoap.resource.Resource):  # type: ignore[misc]
    """A trivial resource: 2.01 with a short payload to any POST."""

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(code=aiocoap.CREATED, payload=b"ok")


def _floor(keys: Keys) -> tuple[Callable[[], object], Callable[[], object]]:
    """(the floor of a nested token, the bare ECDSA signature) as functions."""
    private = keys.as_signing.private
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    secret = keys.as_rs.secret
    assert secret is not None
    ccm = AESCCM(secret, tag_length=8)
    claims = keys.osc_token(now=int(time.time())).to_cwt_claims()
    nonce = bytes(13)
    to_sign = cbor2.dumps(claims)

    def floor() -> object:
        payload = cbor2.dumps(claims)
        signature = private.sign(payload, _ECDSA)
        return ccm.encrypt(nonce, payload + signature, b"")

    def sign() -> object:
        return private.sign(to_sign, _ECDSA)

    return floor, sign


def _issue(setup: ProvisionedAs, request: TokenRequest) -> Callable[[], object]:
    service = AuthzService(setup.store, setup.config)

    def run() -> object:
        return service.issue_token(
            request,
            now=int(time.time()),
            random_bytes=os.urandom,
        )

    return run


async def _coap_rates(setup: ProvisionedAs, runner: Runner) -> tuple[Measurement, Measurement]:
    """(POST /token over OSCORE, POST to a trivial resource) per second, same loop."""
    as_port, plain_port = free_udp_port(), free_udp_port()
    site, credentials = build_site(setup.store, setup.config, setup.state_dir)
    plain_site = aiocoap.resource.Site()
    plain_site.add_resource(["plain"], _Answer())
    bind = HOST
    as_server = await aiocoap.Context.create_server_context(site, bind=(bind, as_port))
    plain_server = await aiocoap.Context.create_server_context(plain_site, bind=(bind, plain_port))
    client = await aiocoap.Context.create_client_context()
    try:
        base = f"coap://{bind}:{as_port}"
        client.client_credentials[f"{base}/*"] = client_security_context(setup.client)
        body = cbor2.dumps(
            {AceParameter.AUDIENCE.value: AUDIENCE, AceParameter.SCOPE.value: AS_SCOPE}
        )

        def post(uri: str, expected: aiocoap.numbers.codes.Code) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                message = aiocoap.Message(
                    code=aiocoap.POST, uri=uri, payload=body, content_format=ACE_CBOR
                )
                response = await client.request(message).response
                if response.code != expected:
                    raise RuntimeError(f"{uri}: {response.code} {response.payload!r}")

            return send

        token = post(f"{base}/token", aiocoap.CREATED)
        plain = post(f"coap://{bind}:{plain_port}/plain", aiocoap.CREATED)
        await token()  # the request must succeed before it is timed
        plain_rate = await runner.rate("as.coap_plain_rps", plain, concurrency=CONCURRENCY)
        token_rate = await runner.rate("as.coap_token_rps", token, concurrency=CONCURRENCY)
        return token_rate, plain_rate
    finally:
        await client.shutdown()
        await plain_server.shutdown()
        await as_server.shutdown()
        credentials.close()


def run(runner: Runner) -> list[Figure]:
    keys = Keys.generate()
    floor_fn, sign_fn = _floor(keys)
    with provisioned_as() as setup:
        key_request = TokenRequest(
            client_id=CLIENT,
            audience=AUDIENCE,
            scope=AS_SCOPE,
            req_cnf=keys.client_pop.public_key(),
        )
        osc_request = TokenRequest(client_id=CLIENT, audience=AUDIENCE, scope=AS_SCOPE)
        es256, osc = _issue(setup, key_request), _issue(setup, osc_request)
        es256()
        osc()  # both must succeed before they are timed
        sign = runner.time("ecdsa_p256.sign", sign_fn).per_second()
        floor = runner.time("as.floor", floor_fn).per_second()
        issued_es256 = runner.time("as.issue_es256_req_cnf", es256).per_second()
        issued_osc = runner.time("as.issue_osc", osc).per_second()
        token_rate, plain_rate = asyncio.run(_coap_rates(setup, runner))
    return [
        Figure.of("as.issue_es256_req_cnf", issued_es256, TOKENS_PER_SECOND, floor, "as.floor"),
        Figure.of("as.issue_osc", issued_osc, TOKENS_PER_SECOND, floor, "as.floor"),
        Figure.of("as.floor", floor, TOKENS_PER_SECOND, sign, "ecdsa_p256.sign"),
        Figure.of(
            "as.coap_token_rps", token_rate, REQUESTS_PER_SECOND, plain_rate, "as.coap_plain_rps"
        ),
    ]


GROUP = Group(
    name="as",
    title="the Authorization Server: tokens per second in process and over CoAP+OSCORE",
    figures=FIGURES,
    run=run,
    steps=6,
)

__all__ = [
    "AS_SCOPE",
    "CLIENT",
    "CONCURRENCY",
    "FIGURES",
    "GROUP",
    "ProvisionedAs",
    "client_security_context",
    "provisioned_as",
]
