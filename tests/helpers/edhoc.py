"""Helpers for the EDHOC and OSCORE profile: keys, credentials, a provisioned AS."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiocoap
from aiocoap.edhoc import EdhocCredentials

from keybound.coap.resource_server_site import EdhocIdentity, ResourceServerSite
from keybound.core import cbor, cwt
from keybound.core.edhoc_credentials import Ccs, private_key_map
from keybound.core.keys import Key
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.core.numbers.edhoc_profile import CLAIM_EDHOC_INFO
from keybound.core.scope import TextScope
from keybound.core.token import AccessToken, CnfKccs
from keybound.tools.authz_server.provision import add_clients, add_resource_server, init_issuer
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import ISSUER
from tests.helpers.rs import AUDIENCE, FakeClock, Keys, post_authz_info, serving
from tests.helpers.rs import ISSUER as RS_ISSUER

EDHOC = int(AceProfile.COAP_EDHOC_OSCORE)
OSCORE = int(AceProfile.COAP_OSCORE)


@dataclass(frozen=True)
class Party:
    """An EDHOC party: its P-256 key and its credential (CCS)."""

    key: Key = field(repr=False)
    ccs: Ccs

    @classmethod
    def make(cls, kid: bytes, subject: str) -> Party:
        key = Key.generate_ec2(kid=kid)
        return cls(key, Ccs.make(key, subject=subject))

    @property
    def d(self) -> bytes:
        d = private_key_map(self.key)[-4]
        assert isinstance(d, bytes)
        return d


def provision_edhoc(url: str = "sqlite://") -> dict[str, Any]:
    """An AS with RS ``temp`` (both profiles, credential ``rs``) and clients ``dev``
    (registered by credential) and ``other`` (no credential)."""
    rs = Party.make(b"\x32", "rs.example")
    dev = Party.make(b"\x2b", "dev-1")
    store = SqlAuthzStore.init(url)
    init_issuer(store, ISSUER)
    temp = add_resource_server(
        store,
        "temp-rs",
        "temp",
        ["read", "write"],
        profiles=[EDHOC, OSCORE],
        credential=rs.ccs.encoded,
    )
    client = add_clients(store, ["dev"], {"temp": ["read"]}, credential=dev.ccs.encoded)[0]
    other = add_clients(store, ["other"], {"temp": ["read"]})[0]
    return {"store": store, "temp": temp, "rs": rs, "dev": dev, "client": client, "other": other}


# ---- the RS side ----------------------------------------------------------------------------


def mint_edhoc(
    keys: Keys,
    credential: Ccs,
    *,
    scope: str = "temp.read",
    aud: str = AUDIENCE,
    lifetime: int = 300,
    now: float | None = None,
    compact: bool = False,
) -> bytes:
    """A token of the EDHOC profile: a COSE_Sign1 by the AS binding ``credential`` (kccs).

    ``compact`` leaves out ``cti`` and ``edhoc_info``, so that the token fits in an
    EAD_3 item within lakers-python's 256-byte message buffer.
    """
    issued = int(time.time() if now is None else now)
    token = AccessToken(
        iss=RS_ISSUER,
        aud=(aud,),
        iat=issued,
        exp=issued + lifetime,
        cti=None if compact else os.urandom(8),
        scope=TextScope.parse(scope),
        ace_profile=EDHOC,
        cnf=CnfKccs(credential.encoded),
        extra={} if compact else {CLAIM_EDHOC_INFO: {0: os.urandom(8)}},
    )
    return cwt.encode(token, cwt.Sign1(keys.as_key))


@asynccontextmanager
async def serving_edhoc(
    keys: Keys, rs_party: Party, *, clock: FakeClock | None = None, **policy: Any
) -> AsyncIterator[tuple[ResourceServerSite, int]]:
    """An in-process RS of both profiles with EDHOC identity ``rs_party``, on a free port."""
    identity = EdhocIdentity(rs_party.d, rs_party.ccs)
    profiles = frozenset({OSCORE, EDHOC})
    async with serving(keys, clock=clock, edhoc=identity, profiles=profiles, **policy) as served:
        yield served


def edhoc_credentials(
    own: Party, rs_party: Party, *, combined: bool = True, key: Party | None = None
) -> EdhocCredentials:
    """aiocoap's EDHOC Initiator credentials: ``own``'s credential (by kid), the RS's.

    ``key`` gives another private key than ``own``'s, for a client that names a
    credential it does not hold.
    """
    return EdhocCredentials(
        suite=2,
        method=3,
        own_cred_style="by-key-id",
        own_cred={14: cbor.loads(own.ccs.encoded)},
        private_key={1: 2, -1: 1, -4: (key or own).d},
        peer_cred={14: cbor.loads(rs_party.ccs.encoded)},
        use_combined_edhoc=combined,
    )


def use_edhoc(client: aiocoap.Context, port: int, credentials: EdhocCredentials) -> None:
    """Make ``client`` run EDHOC with the RS at ``port`` for its requests there."""
    client.client_credentials[f"coap://127.0.0.1:{port}/*"] = credentials


async def post_token(client: aiocoap.Context, port: int, token: bytes) -> aiocoap.Message:
    """An unprotected ``/authz-info`` POST of ``{1: token}``."""
    return await post_authz_info(client, port, cbor.dumps({1: token}))
