"""Helpers for the EDHOC and OSCORE profile: keys, credentials, a provisioned AS."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from keybound.core.edhoc_credentials import Ccs, private_key_map
from keybound.core.keys import Key
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.tools.authz_server.provision import add_clients, add_resource_server, init_issuer
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import ISSUER

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
