"""What the ``keybound as`` commands do, as functions: set up, provision, list and run
the desktop Authorization Server.

Every function takes the database URL ``db`` as the commands do (None: the per-user
SQLite file, or ``KEYBOUND_AS_DB``), and raises :class:`ValueError` (or a keybound or
store error) with a sentence for a person when the request cannot be done.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from keybound.core.authz_store import (
    DEFAULT_PROFILES,
    Client,
    IssuedToken,
    IssuerSettings,
    RsRecord,
)
from keybound.core.edhoc_credentials import Ccs
from keybound.core.errors import KeyboundError
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.tools.authz_server.database import resolve_database_url
from keybound.tools.authz_server.provision import (
    NewClient,
    add_clients,
    add_resource_server,
    init_issuer,
    new_client_context,
    new_introspection_secret,
    rotate_token_key,
)
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import BundleError, RsBundle, device_bundle, rs_bundle, write_bundle

__all__ = [
    "DEFAULT_AS_BASE",
    "PROFILE_NAMES",
    "AddedClients",
    "Initialised",
    "Revocation",
    "add_clients_with_bundles",
    "add_rs",
    "as_base_uri",
    "bundle_introspection_secret",
    "check_public_url",
    "client_ids",
    "client_row",
    "initialise",
    "iso",
    "listing",
    "open_store",
    "parse_address",
    "parse_cti",
    "profile_numbers",
    "read_credential",
    "record",
    "rekey_client",
    "remove",
    "require_issuer",
    "revoke",
    "rotate",
    "rs_row",
    "serve",
    "trl_entries",
    "write_rs_bundle",
]

#: Where clients find the AS when neither ``--as-base`` nor a CoAP issuer says.
DEFAULT_AS_BASE = "coap://127.0.0.1:5683"


@contextmanager
def open_store(db: str | None, *, create: bool = False) -> Iterator[SqlAuthzStore]:
    """The AS store at ``db``, closed on leaving; ``create`` makes the database first."""
    store = SqlAuthzStore.init(db) if create else SqlAuthzStore.open(db)
    try:
        yield store
    finally:
        store.close()


def as_base_uri(store: SqlAuthzStore, given: str | None) -> str:
    """The AS's CoAP address for bundles: ``given``, else that of a CoAP issuer."""
    if given:
        return given.rstrip("/")
    issuer = store.get_issuer()
    if issuer is not None and issuer.issuer.startswith("coap://"):
        parts = urlsplit(issuer.issuer)
        port = parts.port or 5683
        return f"coap://{parts.hostname}:{port}"
    return DEFAULT_AS_BASE


def iso(epoch: int | None) -> str | None:
    """An epoch time as ISO 8601 UTC (``2026-12-01T22:00:00Z``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def require_issuer(store: SqlAuthzStore) -> IssuerSettings:
    """The issuer settings; ValueError when ``as init`` has not been run."""
    issuer = store.get_issuer()
    if issuer is None:
        raise ValueError("the AS is not initialised: run `keybound as init` first")
    return issuer


# ---- init ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Initialised:
    """What ``as init`` did."""

    settings: IssuerSettings
    database: str  # the URL, its password hidden
    created: bool  # a new signing key (else the existing one was kept)


def initialise(db: str | None, issuer: str | None) -> Initialised:
    """Create the AS database and its ES256 signing key (keeps an existing key).

    Without ``issuer`` the current one stays (a new database gets the CoAP default).
    """
    with open_store(db, create=True) as store:
        current = store.get_issuer()
        if issuer is None:
            issuer = current.issuer if current is not None else DEFAULT_AS_BASE
        settings = init_issuer(store, issuer)
        where = resolve_database_url(db).render_as_string(hide_password=True)
    return Initialised(settings, where, current is None)


# ---- resource servers ---------------------------------------------------------------------------


def rs_row(rs: RsRecord) -> dict[str, Any]:
    """A resource server as ``--json`` shows it (no secrets)."""
    return {
        "name": rs.name,
        "audience": rs.audience,
        "scopes": list(rs.scopes),
        "has_clock": rs.has_clock,
        "profiles": list(rs.profiles),
        "credential": rs.credential is not None,
        "lifetime": rs.default_lifetime,
        "token_key_kid": rs.token_key.kid.decode("ascii", "replace"),
        "token_key_versions": len(rs.token_keys),
    }


def write_rs_bundle(
    store: SqlAuthzStore,
    issuer: IssuerSettings,
    rs: RsRecord,
    out: Path | None,
    as_base: str | None,
    introspection_secret: str | None = None,
) -> Path:
    """Write the RS bundle (0600) to ``out``, by default ``NAME-rs-bundle.json``.

    Without ``introspection_secret`` the one in the bundle file being replaced is
    kept: the AS holds only its hash (rotating the token key leaves it valid).
    """
    path = out or Path(f"{rs.name}-rs-bundle.json")
    if introspection_secret is None:
        introspection_secret = bundle_introspection_secret(path, rs.name)
    return write_bundle(
        path,
        rs_bundle(
            rs,
            issuer,
            as_base=as_base_uri(store, as_base),
            introspection_secret=introspection_secret,
        ),
    )


def bundle_introspection_secret(path: Path, name: str) -> str | None:
    """The ``introspection.http_secret`` of the RS bundle of ``name`` at ``path``, if any.

    None when there is no file at ``path`` or it is the bundle of another RS. A file
    that cannot be read as an RS bundle is an error: writing over it would drop the
    secret the RS uses at ``/introspect`` (the AS keeps only its hash).
    """
    if not path.exists():
        return None
    try:
        old = RsBundle.read(path)
    except BundleError as exc:
        raise BundleError(
            f"{exc.description}; the introspection secret in it cannot be kept: move the "
            f"file away, or give the RS a new one with "
            f"'keybound as rotate-key {name} --introspection-secret'"
        ) from None
    return old.introspection_secret if old.name == name else None


def add_rs(
    db: str | None,
    name: str,
    audience: str,
    scopes: Sequence[str],
    *,
    has_clock: bool,
    lifetime: int,
    out: Path | None,
    as_base: str | None,
    profiles: Sequence[int] = DEFAULT_PROFILES,
    credential: bytes | None = None,
) -> tuple[RsRecord, Path]:
    """Register a resource server (token key, introspection secret); write its bundle."""
    with open_store(db) as store:
        issuer = require_issuer(store)
        rs = add_resource_server(
            store,
            name,
            audience,
            list(scopes),
            has_clock=has_clock,
            lifetime=lifetime,
            profiles=profiles,
            credential=credential,
        )
        secret = new_introspection_secret(store, name)
        return rs, write_rs_bundle(store, issuer, rs, out, as_base, secret)


def rotate(
    db: str | None,
    name: str,
    *,
    introspection_secret: bool,
    out: Path | None,
    as_base: str | None,
) -> tuple[RsRecord, Path]:
    """A new token key for RS ``name`` (or a new introspection secret); write its bundle."""
    with open_store(db) as store:
        issuer = require_issuer(store)
        if introspection_secret:
            rs = store.get_resource_server(name)
            if rs is None:
                raise ValueError(f"no resource server named {name!r}")
            secret: str | None = new_introspection_secret(store, name)
        else:
            rs, secret = rotate_token_key(store, name), None
        return rs, write_rs_bundle(store, issuer, rs, out, as_base, secret)


#: The names ``--profile`` takes, and their ACE profile numbers (RFC 9200 §8.8).
PROFILE_NAMES: dict[str, int] = {
    "oscore": int(AceProfile.COAP_OSCORE),
    "edhoc": int(AceProfile.COAP_EDHOC_OSCORE),
}


def profile_numbers(names: Sequence[str]) -> tuple[int, ...]:
    """The profile numbers of ``--profile`` names, in the order given, without repeats."""
    numbers: list[int] = []
    for name in names:
        if name not in PROFILE_NAMES:
            raise ValueError(f"unknown profile {name!r}; choose from {', '.join(PROFILE_NAMES)}")
        if PROFILE_NAMES[name] not in numbers:
            numbers.append(PROFILE_NAMES[name])
    return tuple(numbers)


def read_credential(path: Path) -> bytes:
    """An EDHOC credential file (a CCS, CBOR) as its bytes, checked."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return Ccs.decode(data).encoded
    except KeyboundError as exc:
        raise ValueError(f"{path}: {exc.description}") from None


# ---- clients ------------------------------------------------------------------------------------


def client_row(client: Client) -> dict[str, Any]:
    """A client as ``--json`` shows it (no secrets)."""
    return {
        "client_id": client.client_id,
        "oscore": client.oscore is not None,
        "oscore_sender_id": None if client.oscore is None else client.oscore.sender_id.hex(),
        "http_secret": client.has_secret,
        "credential": client.credential is not None,
        "grants": {aud: list(scopes) for aud, scopes in client.grants.items()},
    }


def client_ids(name: str, count: int | None, prefix: str | None) -> list[str]:
    """``[name]``, or with ``count`` the ids ``PREFIX1`` to ``PREFIXcount`` (prefix ``NAME-``)."""
    if count is None:
        return [name]
    if count < 1:
        raise ValueError("--count must be at least 1")
    stem = prefix if prefix is not None else f"{name}-"
    return [f"{stem}{i}" for i in range(1, count + 1)]


@dataclass(frozen=True)
class AddedClients:
    """The clients made, with their rows (``bundle``: the file written) for ``--json``."""

    made: list[NewClient]
    rows: list[dict[str, Any]]


def add_clients_with_bundles(
    db: str | None,
    ids: Sequence[str],
    audience: str,
    scopes: Sequence[str],
    *,
    oscore: bool,
    http_secret: bool,
    out: Path,
    rs_uri: str,
    as_base: str | None,
    on_written: Callable[[], None] = lambda: None,
    credential: bytes | None = None,
) -> AddedClients:
    """Register clients and write one device bundle (0600) each into ``out``.

    ``on_written`` is called after each bundle (a progress bar advances).
    """
    with open_store(db) as store:
        if store.get_resource_server_by_audience(audience) is None:
            raise ValueError(f"no resource server with audience {audience!r}: add it with `rs add`")
        made = add_clients(
            store,
            list(ids),
            {audience: list(scopes)},
            oscore=oscore,
            http_secret=http_secret,
            credential=credential,
        )
        base = as_base_uri(store, as_base)
    rows: list[dict[str, Any]] = []
    for new in made:
        bundle = device_bundle(
            new.client.client_id,
            as_base=base,
            rs_uri=rs_uri,
            audience=audience,
            scope=" ".join(scopes),
            oscore=new.oscore,
            http_secret=new.http_secret,
        )
        path = write_bundle(out / f"{new.client.client_id}.json", bundle)
        rows.append({**client_row(new.client), "bundle": str(path)})
        on_written()
    return AddedClients(made, rows)


# ---- list, show, remove, revoke -----------------------------------------------------------------


def listing(db: str | None) -> dict[str, list[dict[str, Any]]]:
    """Every resource server and client, as ``as list --json`` shows them."""
    with open_store(db) as store:
        servers = [rs_row(rs) for rs in store.list_resource_servers()]
        clients = [client_row(c) for c in store.list_clients()]
    return {"resource_servers": servers, "clients": clients}


def record(db: str | None, name: str) -> dict[str, Any]:
    """One client (``kind`` client, with its 20 latest tokens) or resource server."""
    with open_store(db) as store:
        client = store.get_client(name)
        if client is not None:
            tokens = store.list_tokens(name, limit=20)
            return {
                "kind": "client",
                **client_row(client),
                "tokens": [
                    {
                        "cti": t.cti.hex(),
                        "audience": t.audience,
                        "scope": t.scope,
                        "iat": t.iat,
                        "iat_iso": iso(t.iat),
                        "exp": t.exp,
                        "exp_iso": iso(t.exp),
                        "exi": t.exi,
                        "sequence": t.sequence,
                        "revoked": t.revoked,
                    }
                    for t in tokens
                ],
            }
        rs = store.get_resource_server(name)
        if rs is None:
            raise ValueError(f"no client or resource server named {name!r}")
        return {"kind": "resource_server", **rs_row(rs)}


def rekey_client(db: str | None, name: str) -> Client:
    """Give client ``name`` a new OSCORE context with the AS: new Master Secret, Master
    Salt and Sender ID (RFC 8613 §3), so its sequence numbers start again at 0 without
    reusing a nonce (RFC 8613 §7.2.1), e.g. after its state was lost. The old context
    stops working; a running AS picks the new one up at the client's first request."""
    with open_store(db) as store:
        client = store.get_client(name)
        if client is None:
            raise ValueError(f"no client {name!r} at the AS")
        if client.oscore is None:
            raise ValueError(f"client {name!r} has no OSCORE context (an HTTP-only client)")
        return store.set_client_oscore(name, new_client_context(store))


def remove(db: str | None, name: str) -> str:
    """Forget client or resource server ``name``; returns which (``client``,
    ``resource_server``). Issued tokens stay on record."""
    with open_store(db) as store:
        if store.get_client(name) is not None:
            store.remove_client(name)
            return "client"
        if store.get_resource_server(name) is not None:
            store.remove_resource_server(name)
            return "resource_server"
    raise ValueError(f"no client or resource server named {name!r}")


def parse_cti(text: str) -> bytes:
    """A recorded cti: hex, or ``AUDIENCE#SEQ`` for a sequence-number token."""
    if "#" in text:
        audience, _, seq = text.rpartition("#")
        if not seq.isdigit() or not audience:
            raise ValueError("a sequence-number cti looks like AUDIENCE#NUMBER")
        return f"{audience}#{int(seq)}".encode()
    return bytes.fromhex(text)


@dataclass(frozen=True)
class Revocation:
    """What ``keybound as revoke`` did: the token, whether it is on the token
    revocation list now (RFC 9770), and the devices its TRL notifications reach."""

    token: IssuedToken
    on_trl: bool
    notified: tuple[str, ...]
    #: why it is not on the TRL, when it is not
    note: str = ""


def _find_token(store: SqlAuthzStore, text: str) -> IssuedToken:
    """The token named by a cti (hex or ``AUDIENCE#SEQ``) or given whole (hex, base64url,
    a compact JWT, ``@file``), found by cti or by its RFC 9770 token hash."""
    from keybound.core import trl  # noqa: PLC0415 - only the revoke command needs it
    from keybound.tools.tokens.inspection import read_token_argument  # noqa: PLC0415

    cti: bytes | None = None
    with suppress(ValueError):
        cti = parse_cti(text)
    if cti is not None:
        found = store.get_token(cti)
        if found is not None:
            return found
    try:
        token = read_token_argument(text)
    except KeyboundError:
        token = None
    if token is not None:
        candidates = [trl.response_token_hash(token)]
        if isinstance(token, str):  # a JWT the AS sent in a CBOR response
            candidates.append(trl.response_token_hash(token.encode("ascii")))
        for candidate in candidates:
            found = store.get_token_by_hash(candidate)
            if found is not None:
                return found
    shown = text if len(text) <= 40 else text[:37] + "..."
    if cti is None:
        raise ValueError(
            f"{shown} is not a cti (not a hexadecimal string, nor AUDIENCE#SEQ), "
            "nor a token this AS issued"
        )
    raise ValueError(f"no token with cti {shown}")


def revoke(db: str | None, cti: str, *, now: int | None = None) -> Revocation:
    """Revoke a token named by its cti (hex or ``AUDIENCE#SEQ``) or given whole:
    introspection answers inactive from now on, and a token that has not expired goes
    on the token revocation list, whose observers are notified (RFC 9770)."""
    when = int(time.time()) if now is None else now
    with open_store(db) as store:
        found = _find_token(store, cti)
        token = store.revoke(found.cti, now=when)
        if store.is_listed(token.cti):
            return Revocation(token, True, tuple(store.trl_requesters(token)))
        if token.token_hash is None:
            note = "issued before keybound kept token hashes: not on the TRL"
        elif found.revoked:
            note = "it was revoked before"
        else:
            note = "it has expired: not on the TRL"
        return Revocation(token, False, (), note)


def trl_entries(db: str | None) -> list[dict[str, Any]]:
    """The token revocation list as ``keybound as trl`` shows it."""
    with open_store(db) as store:
        rows = []
        for token in store.trl_entries():
            assert token.token_hash is not None
            rows.append(
                {
                    "token_hash": token.token_hash.hex(),
                    "cti": token.cti.hex() if token.sequence is None else token.cti.decode(),
                    "client_id": token.client_id,
                    "audience": token.audience,
                    "revoked_at": token.revoked_at,
                    "exp": token.exp,
                    "exi": token.exi,
                    "requesters": store.trl_requesters(token),
                }
            )
        return rows


# ---- serve --------------------------------------------------------------------------------------


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT``), or ``HOST`` with ``default_port``."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    host = host.strip("[]")
    if not port.isdigit() or not host:
        raise ValueError(f"not HOST:PORT: {text!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT (port 1 to 65535): {text!r}")
    return host, int(port)


def check_public_url(url: str) -> str:
    """``url`` without its trailing slash; ValueError unless it is http(s) without a query."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
        raise ValueError(f"--public-url {url!r} is not an http(s) URL without a query")
    return url.rstrip("/")


def serve(
    db: str | None,
    *,
    coap: tuple[str, int] | None,
    http: tuple[str, int] | None,
    state_dir: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    insecure: bool,
    public_url: str | None,
    dpop_nonce: bool,
    mutual_tls: bool = False,
    client_ca: Path | None = None,
) -> None:
    """Run the AS until Ctrl-C or SIGTERM (see :func:`run_authorization_server`)."""
    from keybound.tools.authz_server.server import run_authorization_server  # noqa: PLC0415

    with open_store(db) as store, suppress(KeyboardInterrupt):
        asyncio.run(
            run_authorization_server(
                store,
                coap=coap,
                http=http,
                state_dir=state_dir,
                certfile=None if certfile is None else os.fspath(certfile),
                keyfile=None if keyfile is None else os.fspath(keyfile),
                insecure=insecure,
                public_url=public_url,
                dpop_nonce=dpop_nonce,
                mutual_tls=mutual_tls,
                client_ca=None if client_ca is None else os.fspath(client_ca),
            )
        )
