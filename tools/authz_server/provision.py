"""Provisioning the Authorization Server: its signing key, resource servers, clients.

The key material made here: the AS's ES256 signing key (RFC 9053 §2.1), each
RS's AES-CCM-16-64-128 token key (RFC 9200 §6.1), and OSCORE contexts
(RFC 8613 §3.2) between the AS and each client (RFC 9203 §3.1) or RS (for
introspection, RFC 9200 §5.9). OSCORE IDs the AS receives with are unique
across all peers, since the AS finds a context by the request's ``kid``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from keybound.core.authz_server import AuthzServerConfig
from keybound.core.authz_store import (
    DEFAULT_PROFILES,
    AuthzStore,
    Client,
    ClientRegistration,
    InvalidRecord,
    IssuerSettings,
    OscoreContext,
    RsRecord,
)
from keybound.core.edhoc_credentials import Ccs
from keybound.core.keys import Key
from keybound.core.numbers.cose_algorithms import Algorithm
from keybound.core.numbers.cose_keys import Curve
from keybound.core.numbers.edhoc_profile import ACE_PROFILE_COAP_EDHOC_OSCORE

__all__ = [
    "AS_OSCORE_ID",
    "NewClient",
    "add_clients",
    "add_resource_server",
    "as_config",
    "init_issuer",
    "new_client_context",
    "new_introspection_secret",
    "new_token_key",
    "rotate_token_key",
]

AS_OSCORE_ID = b"\x00"
"""The ID the AS sends with in every context (a peer's Recipient ID, RFC 8613 §3.1)."""

_PEER_ID_BYTES = 3


def init_issuer(store: AuthzStore, issuer: str, *, replace_key: bool = False) -> IssuerSettings:
    """Set the issuer URI; create the AS's ES256 signing key unless one exists."""
    current = store.get_issuer()
    if current is not None and not replace_key:
        return store.set_issuer(issuer, current.signing_key)
    key = Key.generate_ec2(Curve.P_256, kid=secrets.token_hex(4).encode(), alg=Algorithm.ES256)
    return store.set_issuer(issuer, key.to_cose_key_bytes(include_private=True))


def as_config(store: AuthzStore, **policy: bool | int) -> AuthzServerConfig:
    """The :class:`AuthzServerConfig` from the stored issuer settings."""
    settings = store.get_issuer()
    if settings is None:
        raise InvalidRecord("the AS is not initialised: run `keybound as init` first")
    key = Key.from_cose_key(settings.signing_key)
    return AuthzServerConfig(issuer=settings.issuer, signing_key=key, **policy)  # type: ignore[arg-type]


def new_token_key() -> tuple[bytes, bytes]:
    """A fresh AES-CCM-16-64-128 token key: (COSE_Key bytes, kid)."""
    kid = secrets.token_hex(4).encode()  # ASCII, so the JWK form round-trips
    key = Key.generate_symmetric(
        16, random_bytes=os.urandom, kid=kid, alg=Algorithm.AES_CCM_16_64_128
    )
    return key.to_cose_key_bytes(include_private=True), kid


def _used_ids(store: AuthzStore) -> set[bytes]:
    used = {AS_OSCORE_ID}
    for client in store.list_clients():
        if client.oscore is not None:
            used.add(client.oscore.sender_id)
    for rs in store.list_resource_servers():
        if rs.introspection_context is not None:
            used.add(rs.introspection_context.sender_id)
    return used


def _new_context(used: set[bytes]) -> OscoreContext:
    while True:
        peer_id = secrets.token_bytes(_PEER_ID_BYTES)
        if peer_id not in used:
            used.add(peer_id)
            break
    return OscoreContext(
        master_secret=secrets.token_bytes(16),
        master_salt=secrets.token_bytes(8),
        sender_id=peer_id,
        recipient_id=AS_OSCORE_ID,
    )


def new_client_context(store: AuthzStore) -> OscoreContext:
    """A new client-AS OSCORE context (new secret, salt and Sender ID) for a client
    that needs new keys, its ID unused by every other peer."""
    return _new_context(_used_ids(store))


def add_resource_server(
    store: AuthzStore,
    name: str,
    audience: str,
    scopes: Sequence[str],
    *,
    has_clock: bool = True,
    lifetime: int = 3600,
    profiles: Sequence[int] = DEFAULT_PROFILES,
    credential: bytes | None = None,
) -> RsRecord:
    """Register an RS with a new token key and a new OSCORE context for introspection.

    ``credential`` is its EDHOC authentication credential (an encoded CCS), needed when
    ``profiles`` has the EDHOC and OSCORE profile.
    """
    if ACE_PROFILE_COAP_EDHOC_OSCORE in profiles and credential is None:
        raise ValueError("an RS of the EDHOC profile needs its credential (--credential FILE)")
    if credential is not None:
        Ccs.decode(credential)
    token_key, kid = new_token_key()
    return store.add_resource_server(
        name,
        audience,
        scopes=scopes,
        token_key=token_key,
        token_kid=kid,
        has_clock=has_clock,
        profiles=profiles,
        default_lifetime=lifetime,
        introspection_context=_new_context(_used_ids(store)),
        credential=credential,
    )


def new_introspection_secret(store: AuthzStore, name: str) -> str:
    """A new HTTP introspection secret for RS ``name`` (replacing any previous one);
    only its hash stays at the AS, so the returned value goes into the RS bundle."""
    secret = secrets.token_urlsafe(32)
    store.set_introspection_secret(name, secret)
    return secret


def rotate_token_key(store: AuthzStore, name: str) -> RsRecord:
    """Make a new token key current for RS ``name``, keeping the previous one."""
    token_key, kid = new_token_key()
    return store.rotate_token_key(name, token_key, kid)


@dataclass(frozen=True)
class NewClient:
    """A client just registered, with its secrets for the bundle (never logged)."""

    client: Client
    oscore: OscoreContext | None = field(default=None, repr=False)
    http_secret: str | None = field(default=None, repr=False)


def add_clients(
    store: AuthzStore,
    client_ids: Sequence[str],
    grants: Mapping[str, Sequence[str]],
    *,
    oscore: bool = True,
    http_secret: bool = False,
    credential: bytes | None = None,
) -> list[NewClient]:
    """Register clients (all or none) with an OSCORE context and/or an HTTP secret.

    ``credential`` (one client only) is its EDHOC authentication credential, an encoded
    CCS: public, the AS learns no secret of the client's from it.
    """
    if credential is not None:
        if len(client_ids) != 1:
            raise ValueError("a credential names one client; --count cannot be used with it")
        Ccs.decode(credential)
    used = _used_ids(store)
    registrations: list[ClientRegistration] = []
    for client_id in client_ids:
        registrations.append(
            ClientRegistration(
                client_id=client_id,
                secret=secrets.token_urlsafe(24) if http_secret else None,
                oscore=_new_context(used) if oscore else None,
                grants={aud: tuple(s) for aud, s in grants.items()},
                credential=credential,
            )
        )
    clients = store.add_clients(registrations)
    return [
        NewClient(client, reg.oscore, reg.secret)
        for client, reg in zip(clients, registrations, strict=True)
    ]
