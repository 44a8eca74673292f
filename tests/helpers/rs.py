"""Helpers for the Resource Server tests: minting tokens, OSCORE client contexts, an RS to serve."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiocoap
import aiocoap.resource

from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.coap.resource_server_site import EdhocIdentity, ResourceServerSite
from keybound.core import cbor, cose, cwt
from keybound.core.authz_info import AuthzInfoRequest, AuthzInfoResponse
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.oscore_derivation import derive_context_parameters
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.oscore_sequence import SequenceNumberReservation
from keybound.core.resource_server import ResourceServer, RsPolicy
from keybound.core.scope import Scope, TextScope
from keybound.core.token import AccessToken, CnfOsc
from tests.helpers.ports import free_udp_port

T = TypeVar("T")

AUDIENCE = "rs1"
ISSUER = "as.example"
AS_URI = "coap://127.0.0.1:5683/token"
RESOURCES = {"/temp": {"GET": ["temp.read"]}, "/led": {"GET": ["led.read"], "PUT": ["led.write"]}}


def run(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run ``coro`` with a hard time limit."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


@dataclass
class Keys:
    token_key: Key = field(
        default_factory=lambda: Key.generate_symmetric(16, random_bytes=os.urandom, kid=b"rs1-key")
    )
    as_key: Key = field(default_factory=lambda: Key.generate_ec2(kid=b"as-sign"))


def material(id_: bytes = b"\x01") -> OscoreInputMaterial:
    return OscoreInputMaterial(id=id_, ms=os.urandom(16))


def mint(
    keys: Keys,
    mat: OscoreInputMaterial,
    *,
    scope: Scope | str = "temp.read",
    aud: str = AUDIENCE,
    iss: str = ISSUER,
    lifetime: int | None = 300,
    exi: int | None = None,
    cti: bytes | None = None,
    ace_profile: int | None = 2,
    nested: bool = False,
    now: float | None = None,
) -> bytes:
    """An access token for the RS: Encrypt0 under the token key, optionally a nested Sign1."""
    issued = int(time.time() if now is None else now)
    token = AccessToken(
        iss=iss,
        aud=(aud,),
        exp=issued + lifetime if lifetime is not None else None,
        iat=issued,
        cti=cti,
        exi=exi,
        scope=TextScope.parse(scope) if isinstance(scope, str) else scope,
        ace_profile=ace_profile,
        cnf=CnfOsc(mat),
    )
    protection: cwt.Protection = cwt.Encrypt0(keys.token_key)
    if nested:
        protection = cwt.Nested(cwt.Sign1(keys.as_key), cwt.Encrypt0(keys.token_key))
    return cwt.encode(token, protection, random_bytes=os.urandom)


def mint_claims(keys: Keys, mat: OscoreInputMaterial, changes: dict[int, Any]) -> bytes:
    """An authentic token (Encrypt0 under the token key) whose claims map is edited raw.

    ``changes`` maps CWT claim keys to new values (``None`` removes the claim), so a
    test can send claims the model would never produce: the wrapper is valid, the
    claims are not.
    """
    claims = cbor.loads(cwt.decode(mint(keys, mat), keys.token_key).token.to_cwt_payload())
    for key, value in changes.items():
        if value is None:
            claims.pop(key, None)
        else:
            claims[key] = value
    return cose.encrypt0(
        cbor.dumps(claims),
        keys.token_key,
        alg=Algorithm.AES_CCM_16_64_128,
        random_bytes=os.urandom,
    )


class ClientContext(DurableSecurityContext):
    """A client-side OSCORE context (in memory) that records the responses' Partial IVs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_pivs: list[bytes] = []

    def unprotect(self, protected_message: Any, request_id: Any = None) -> Any:
        if request_id is not None:
            option = protected_message.opt.oscore or b""
            if option and option[0] & 0x07:
                length = option[0] & 0x07
                self.response_pivs.append(bytes(option[1 : 1 + length]))
        return super().unprotect(protected_message, request_id)


def client_context(
    mat: OscoreInputMaterial, nonce1: bytes, id1: bytes, response: AuthzInfoResponse
) -> ClientContext:
    """The client's OSCORE context of RFC 9203 §4.3 (Sender ID = ID2, Recipient ID = ID1)."""
    derived = derive_context_parameters(
        mat, nonce1, response.nonce2, id1, response.server_recipient_id, role="client"
    )
    return ClientContext(
        derived,
        key_id=b"client",
        reservation=SequenceNumberReservation(0, chunk=1 << 20),
        persist_mark=lambda mark: None,
        replay_window_known=True,
    )


async def post_authz_info(
    client: aiocoap.Context,
    port: int,
    payload: bytes,
    *,
    content_format: int | None = 19,
) -> aiocoap.Message:
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"coap://127.0.0.1:{port}/authz-info",
        payload=payload,
    )
    if content_format is not None:
        request.opt.content_format = content_format
    response: aiocoap.Message = await client.request(request).response
    return response


async def establish(
    client: aiocoap.Context, port: int, token: bytes, mat: OscoreInputMaterial, id1: bytes = b"\x42"
) -> ClientContext:
    """POST the token (unprotected) and install the derived client context for the RS's URIs."""
    client.client_credentials.pop(f"coap://127.0.0.1:{port}/*", None)
    nonce1 = os.urandom(8)
    response = await post_authz_info(client, port, AuthzInfoRequest(token, nonce1, id1).encode())
    assert int(response.code) == 65, (response.code, response.payload)
    assert response.opt.content_format == 19
    context = client_context(mat, nonce1, id1, AuthzInfoResponse.decode(response.payload))
    client.client_credentials[f"coap://127.0.0.1:{port}/*"] = context
    return context


async def request(
    client: aiocoap.Context, port: int, method: Any, path: str, payload: bytes = b""
) -> aiocoap.Message:
    message = aiocoap.Message(code=method, uri=f"coap://127.0.0.1:{port}{path}", payload=payload)
    response: aiocoap.Message = await client.request(message).response
    return response


class Temperature(aiocoap.resource.Resource):  # type: ignore[misc]
    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=b"21.50")


class Led(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.state = b"off"

    async def render_get(self, request: aiocoap.Message) -> aiocoap.Message:
        return aiocoap.Message(payload=self.state)

    async def render_put(self, request: aiocoap.Message) -> aiocoap.Message:
        self.state = request.payload
        return aiocoap.Message(code=aiocoap.CHANGED, payload=self.state)


class FakeClock:
    """A wall clock and monotonic clock in one that only moves when a test sets ``now``."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def rs_policy(keys: Keys, **policy: Any) -> RsPolicy:
    """The test RS's policy: audience, AS, token key and AS key of ``keys``, and ``policy``."""
    return RsPolicy(
        audience=AUDIENCE,
        as_uri=AS_URI,
        token_keys=(keys.token_key,),
        as_public_keys=(keys.as_key.public_key(),),
        issuer=ISSUER,
        **policy,
    )


@asynccontextmanager
async def serving(
    keys: Keys,
    *,
    clock: FakeClock | None = None,
    edhoc: EdhocIdentity | None = None,
    **policy: Any,
) -> AsyncIterator[tuple[ResourceServerSite, int]]:
    """An in-process RS site serving ``/temp`` and ``/led`` on a free port of 127.0.0.1
    (``edhoc``: with that EDHOC identity, for the EDHOC and OSCORE profile)."""
    rs = ResourceServer(rs_policy(keys, **policy))
    kwargs: dict[str, Any] = {"edhoc": edhoc}
    if clock is not None:
        kwargs.update(wall_clock=clock, monotonic=clock)
    site = ResourceServerSite(rs, **kwargs)
    site.add_protected("/temp", Temperature(), scopes={"GET": ["temp.read"]})
    site.add_protected("/led", Led(), scopes={"GET": ["led.read"], "PUT": ["led.write"]})
    port = free_udp_port()
    await site.serve(("127.0.0.1", port))
    try:
        yield site, port
    finally:
        await site.shutdown()


@asynccontextmanager
async def client_ctx() -> AsyncIterator[aiocoap.Context]:
    """An aiocoap client context, shut down on exit."""
    client = await aiocoap.Context.create_client_context()
    try:
        yield client
    finally:
        await client.shutdown()


async def with_client(body: Callable[[aiocoap.Context], Awaitable[T]]) -> T:
    async with client_ctx() as client:
        return await body(client)


#: The RS config's ``[oscore] sequence_chunk`` written by :func:`write_setup`.
CHUNK = 8


def write_setup(tmp_path: Path, keys: Keys, port: int) -> Path:
    """An RS bundle and ``rs.toml`` (listening on ``port``) in ``tmp_path``; the config's path."""
    bundle = {
        "kind": "keybound-rs-bundle",
        "version": 1,
        "contains_secrets": True,
        "name": "pi-1",
        "audience": AUDIENCE,
        "issuer": ISSUER,
        "as_uri": AS_URI,
        "token_key": keys.token_key.to_jwk(include_private=True),
        "as_public_key": keys.as_key.public_key().to_jwk(),
        "has_clock": True,
        "scopes": ["temp.read", "led.read", "led.write"],
        "profiles": [2],
    }
    bundle_path = tmp_path / "rs-bundle.json"
    bundle_path.write_text(json.dumps(bundle))
    bundle_path.chmod(0o600)
    config = tmp_path / "rs.toml"
    config.write_text(
        f"""
bundle = "rs-bundle.json"
listen = "127.0.0.1:{port}"
state = "state/rs-state.db"

[capacity]
tokens = 10

[oscore]
sequence_chunk = {CHUNK}
response_partial_iv = true

[resources."/temp"]
GET = ["temp.read"]

[resources."/led"]
kind = "switch"
GET = ["led.read"]
PUT = ["led.write"]
"""
    )
    return config
