"""The Authorization Server's storage on SQLAlchemy 2 Core: SQLite or PostgreSQL.

:class:`SqlAuthzStore` implements :class:`keybound.core.authz_store.AuthzStore`.
Where the database lives and how it is opened is in
:mod:`keybound.tools.authz_server.database`, the tables and their schema version in
:mod:`keybound.tools.authz_server.schema`, client secret hashing in
:mod:`keybound.tools.authz_server.client_secrets`.

Concurrency: every method is one short transaction. SQLite runs in WAL mode
with a busy timeout, and write transactions start with ``BEGIN IMMEDIATE`` so
two writers queue instead of failing on a lock upgrade. Sequence numbers for
resource servers without a clock (RFC 9200 §5.10.3) are incremented in the
database with ``UPDATE ... RETURNING`` and committed before they are handed
out, so no number is given twice, whichever process asks.

:meth:`SqlAuthzStore.open` refuses a database written by a newer keybound, and
one holding other tables but no ``keybound_meta``, rather than guess.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError

from keybound.core.authz_store import (
    DEFAULT_PROFILES,
    AuthzStore,
    Client,
    ClientRegistration,
    DuplicateRecord,
    InvalidRecord,
    IssuedToken,
    IssuerSettings,
    OscoreContext,
    OscoreStateStore,
    RsRecord,
    UnknownRecord,
    trl_requester,
    validated_scopes,
)
from keybound.core.errors import InvalidClient
from keybound.core.oscore_sequence import MAX_CHUNK
from keybound.core.trl import SeriesItem, TrlLimits, UpdateCollection
from keybound.tools.authz_server.client_secrets import (
    burn_scrypt_time,
    hash_client_secret,
    secret_matches,
)
from keybound.tools.authz_server.database import (
    READ_ONLY,
    StorageError,
    build_engine,
    resolve_database_url,
)
from keybound.tools.authz_server.hot_path import HotPath
from keybound.tools.authz_server.schema import (
    TRL_LEFT,
    TRL_LISTED,
    check_schema,
    client_from_rows,
    clients_table,
    config_version_table,
    grants_table,
    issuer_table,
    oscore_columns,
    oscore_sequences_table,
    resource_server_from_rows,
    resource_servers_table,
    sequences_table,
    token_from_row,
    token_keys_table,
    tokens_table,
    trl_series_table,
    trl_updates_table,
)

__all__ = ["SqlAuthzStore"]


def _trl_expiry(token: IssuedToken) -> int:
    """When a revoked token leaves the TRL: its ``exp``, or ``exi`` after revocation."""
    if token.exp is not None:
        return token.exp
    if token.exi is not None and token.revoked_at is not None:
        return token.revoked_at + token.exi
    return 2**63 - 1  # neither: it stays listed


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


@contextmanager
def _store_errors() -> Iterator[None]:
    """The store's errors for the driver's: a constraint is :class:`DuplicateRecord`."""
    try:
        yield
    except IntegrityError as exc:
        raise DuplicateRecord(
            f"conflicts with an existing record or a concurrent change: {exc.orig}"
        ) from None
    except DBAPIError as exc:
        raise StorageError(f"database error: {exc.orig}") from None


# ---- the store -------------------------------------------------------------------------------


class SqlAuthzStore:
    """The AS storage (:class:`keybound.core.authz_store.AuthzStore`) on SQLAlchemy Core.

    Create with :meth:`init` (a new or existing database) or :meth:`open`
    (an existing one); close with :meth:`close` or a ``with`` block.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose schema was checked; use :meth:`open` or :meth:`init`."""
        self._engine = engine
        #: token records and sequence numbers, on a connection of their own
        self._hot = HotPath(engine)
        #: RFC 9770 §6.2 constants of the TRL endpoint (MAX_N series items are kept)
        self.trl_limits = TrlLimits()

    # -- life cycle

    @classmethod
    def init(cls, url: str | URL | None = None, *, echo: bool = False) -> Self:
        """Open the database, creating the schema if the database is empty."""
        return cls.open(url, create=True, echo=echo)

    @classmethod
    def open(
        cls, url: str | URL | None = None, *, create: bool = False, echo: bool = False
    ) -> Self:
        """Open a keybound AS database and check its schema version.

        ``url`` is ``None`` for the default SQLite file, a database URL, or a
        file path. With ``create``, an empty database gets the schema; without
        it an empty database is refused. Raises :class:`StorageError` for a
        database of a newer or unknown schema, or one that holds tables but no
        ``keybound_meta``.
        """
        resolved = resolve_database_url(url)
        # Only creating opens may make a file; the default location's directory too.
        engine = build_engine(resolved, echo=echo, create=create, make_parents=url is None)
        try:
            check_schema(engine, resolved, create=create)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for state kept next to the AS's records (the DPoP
        replay cache of :mod:`keybound.tools.http.replay_cache`)."""
        return self._engine

    def close(self) -> None:
        """Close all pooled connections."""
        self._hot.close()
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._engine.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        return f"SqlAuthzStore({self.url!r})"

    # -- transactions

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _store_errors(), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _admin(self) -> Iterator[Connection]:
        """A write transaction that changes the configuration: clients, resource servers,
        grants, keys or the issuer. It bumps the configuration version, so every AS
        process sharing the database drops the records it cached
        (:meth:`config_version`)."""
        with self._write() as conn:
            yield conn
            conn.execute(
                update(config_version_table).values(version=config_version_table.c.version + 1)
            )

    def config_version(self) -> int:
        """A number that changes with every change of the configuration (any process)."""
        with self._read() as conn:
            version = conn.execute(select(config_version_table.c.version)).scalar_one()
        return int(version)

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{READ_ONLY: True})
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise StorageError(f"database error: {exc.orig}") from None

    # -- issuer

    def get_issuer(self) -> IssuerSettings | None:
        """The issuer URI and AS signing key, or ``None`` before :meth:`set_issuer`."""
        with self._read() as conn:
            row = conn.execute(select(issuer_table).where(issuer_table.c.id == 1)).one_or_none()
        if row is None:
            return None
        return IssuerSettings(
            issuer=row.issuer, signing_key=bytes(row.signing_key), created=row.created
        )

    def set_issuer(
        self, issuer: str, signing_key: bytes, *, now: int | None = None
    ) -> IssuerSettings:
        """Set or replace the issuer URI (RFC 8392 §3.1.1) and the signing key."""
        if not issuer:
            raise InvalidRecord("the issuer must not be empty")
        if not signing_key:
            raise InvalidRecord("the signing key must not be empty")
        created = _now(now)
        values = {"issuer": issuer, "signing_key": signing_key, "created": created}
        with self._admin() as conn:
            changed = conn.execute(
                update(issuer_table).where(issuer_table.c.id == 1).values(**values)
            )
            if changed.rowcount == 0:
                conn.execute(insert(issuer_table).values(id=1, **values))
        return IssuerSettings(issuer=issuer, signing_key=signing_key, created=created)

    # -- resource servers

    def add_resource_server(
        self,
        name: str,
        audience: str,
        *,
        scopes: Sequence[str],
        token_key: bytes,
        token_kid: bytes,
        has_clock: bool = True,
        profiles: Sequence[int] = DEFAULT_PROFILES,
        default_lifetime: int = 3600,
        introspection_context: OscoreContext | None = None,
        now: int | None = None,
        credential: bytes | None = None,
    ) -> RsRecord:
        """Register a resource server; ``name`` and ``audience`` must be new.

        Its sequence counter (RFC 9200 §5.10.3) starts at 0, or continues where
        an earlier RS with the same audience left it.
        """
        what = f"resource server {name!r}"
        if not name or not audience:
            raise InvalidRecord(f"{what}: name and audience must not be empty")
        checked_scopes = validated_scopes(scopes, what=what)
        checked_profiles = tuple(int(p) for p in profiles)
        if not checked_profiles:
            raise InvalidRecord(f"{what}: at least one ACE profile is needed")
        if default_lifetime <= 0:
            raise InvalidRecord(f"{what}: the default lifetime must be positive")
        if not token_key or not token_kid:
            raise InvalidRecord(f"{what}: the token key and its kid must not be empty")
        created = _now(now)
        with self._admin() as conn:
            clash = conn.execute(
                select(resource_servers_table.c.name).where(
                    (resource_servers_table.c.name == name)
                    | (resource_servers_table.c.audience == audience)
                )
            ).first()
            if clash is not None:
                raise DuplicateRecord(
                    f"{what}: a resource server with this name or audience {audience!r} exists"
                )
            conn.execute(
                insert(resource_servers_table).values(
                    name=name,
                    audience=audience,
                    scopes=list(checked_scopes),
                    has_clock=has_clock,
                    profiles=list(checked_profiles),
                    default_lifetime=default_lifetime,
                    created=created,
                    credential=credential,
                    **oscore_columns(introspection_context),
                )
            )
            conn.execute(
                insert(token_keys_table).values(
                    rs_name=name, version=1, kid=token_kid, key=token_key, created=created
                )
            )
            counter = conn.execute(
                select(sequences_table.c.value).where(sequences_table.c.audience == audience)
            ).first()
            if counter is None:
                conn.execute(insert(sequences_table).values(audience=audience, value=0))
            stored = self._load_resource_server(conn, name)
        assert stored is not None
        return stored

    def _load_resource_server(self, conn: Connection, name: str) -> RsRecord | None:
        row = conn.execute(
            select(resource_servers_table).where(resource_servers_table.c.name == name)
        ).one_or_none()
        if row is None:
            return None
        keys = conn.execute(
            select(token_keys_table).where(token_keys_table.c.rs_name == name)
        ).all()
        return resource_server_from_rows(row, keys)

    def get_resource_server(self, name: str) -> RsRecord | None:
        """A resource server by its local name."""
        with self._read() as conn:
            return self._load_resource_server(conn, name)

    def get_resource_server_by_audience(self, audience: str) -> RsRecord | None:
        """A resource server by ``audience`` (RFC 9200 §5.8.1)."""
        with self._read() as conn:
            name = conn.execute(
                select(resource_servers_table.c.name).where(
                    resource_servers_table.c.audience == audience
                )
            ).scalar_one_or_none()
            return None if name is None else self._load_resource_server(conn, name)

    def list_resource_servers(self) -> list[RsRecord]:
        """All resource servers, by name."""
        with self._read() as conn:
            rows = conn.execute(
                select(resource_servers_table).order_by(resource_servers_table.c.name)
            ).all()
            keys: dict[str, list[Row[Any]]] = defaultdict(list)
            for key_row in conn.execute(select(token_keys_table)):
                keys[key_row.rs_name].append(key_row)
        return [resource_server_from_rows(row, keys[row.name]) for row in rows]

    def remove_resource_server(self, name: str) -> None:
        """Forget a resource server, its token keys and all grants for its audience.

        The sequence counter of its audience is kept (RFC 9200 §5.10.3).
        """
        with self._admin() as conn:
            audience = conn.execute(
                select(resource_servers_table.c.audience).where(
                    resource_servers_table.c.name == name
                )
            ).scalar_one_or_none()
            if audience is None:
                raise UnknownRecord(f"no resource server named {name!r}")
            # Explicit, not only ON DELETE CASCADE: the result must not depend on a pragma.
            conn.execute(delete(grants_table).where(grants_table.c.audience == audience))
            conn.execute(delete(token_keys_table).where(token_keys_table.c.rs_name == name))
            conn.execute(
                delete(resource_servers_table).where(resource_servers_table.c.name == name)
            )

    def rotate_token_key(
        self,
        name: str,
        token_key: bytes,
        token_kid: bytes,
        *,
        keep_previous: int = 1,
        now: int | None = None,
    ) -> RsRecord:
        """Make a new token key current (RFC 9200 §6.1).

        The replaced key is marked retired and kept, with up to
        ``keep_previous`` older versions, so tokens encrypted before the
        rotation can still be introspected; older ones are deleted. The new
        ``kid`` must differ from every stored one.
        """
        if keep_previous < 0:
            raise InvalidRecord("keep_previous must not be negative")
        if not token_key or not token_kid:
            raise InvalidRecord("the token key and its kid must not be empty")
        when = _now(now)
        with self._admin() as conn:
            versions = conn.execute(
                select(token_keys_table.c.version, token_keys_table.c.kid)
                .where(token_keys_table.c.rs_name == name)
                .order_by(token_keys_table.c.version.desc())
            ).all()
            if not versions:
                raise UnknownRecord(f"no resource server named {name!r}")
            if any(bytes(row.kid) == token_kid for row in versions):
                raise DuplicateRecord(
                    f"resource server {name!r}: kid {token_kid.hex()} is in use by a stored key"
                )
            kept = versions[:keep_previous]
            newest = int(versions[0].version)
            conn.execute(
                delete(token_keys_table).where(
                    token_keys_table.c.rs_name == name,
                    token_keys_table.c.version.not_in([row.version for row in kept]),
                )
            )
            conn.execute(
                update(token_keys_table)
                .where(token_keys_table.c.rs_name == name, token_keys_table.c.retired.is_(None))
                .values(retired=when)
            )
            conn.execute(
                insert(token_keys_table).values(
                    rs_name=name, version=newest + 1, kid=token_kid, key=token_key, created=when
                )
            )
            stored = self._load_resource_server(conn, name)
        assert stored is not None
        return stored

    # -- clients

    def add_client(self, registration: ClientRegistration, *, now: int | None = None) -> Client:
        """Register one client; see :meth:`add_clients`."""
        return self.add_clients([registration], now=now)[0]

    def add_clients(
        self, registrations: Sequence[ClientRegistration], *, now: int | None = None
    ) -> list[Client]:
        """Register clients in one transaction: all of them, or none.

        Secrets are hashed (scrypt) before the transaction starts, so the
        database is not held while they are. Every granted audience must be a
        registered resource server and every scope one it understands.
        """
        if not registrations:
            return []
        ids = [r.client_id for r in registrations]
        if len(set(ids)) != len(ids):
            doubled = sorted({i for i in ids if ids.count(i) > 1})
            raise DuplicateRecord(f"client IDs given more than once: {doubled}")
        created = _now(now)
        client_rows = [
            {
                "client_id": r.client_id,
                "secret_hash": None if r.secret is None else hash_client_secret(r.secret),
                "public_key": r.public_key,
                "credential": r.credential,
                "created": created,
                **oscore_columns(r.oscore),
            }
            for r in registrations
        ]
        with self._admin() as conn:
            existing = self._existing_client_ids(conn, ids)
            if existing:
                names = ", ".join(sorted(existing)[:10]) + (", ..." if len(existing) > 10 else "")
                raise DuplicateRecord(f"clients exist already: {names}")
            grants = {
                r.client_id: self._grant_rows(conn, r.client_id, r.grants) for r in registrations
            }
            conn.execute(insert(clients_table), client_rows)
            grant_rows = [row for rows in grants.values() for row in rows]
            if grant_rows:
                conn.execute(insert(grants_table), grant_rows)
        return [
            Client(
                client_id=r.client_id,
                has_secret=r.secret is not None,
                oscore=r.oscore,
                public_key=r.public_key,
                grants={g["audience"]: tuple(g["scopes"]) for g in grants[r.client_id]},
                created=created,
                credential=r.credential,
            )
            for r in registrations
        ]

    @staticmethod
    def _existing_client_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):  # stay under bound-parameter limits
            chunk = ids[start : start + 500]
            found.update(
                conn.execute(
                    select(clients_table.c.client_id).where(clients_table.c.client_id.in_(chunk))
                )
                .scalars()
                .all()
            )
        return found

    @staticmethod
    def _grant_rows(
        conn: Connection, client_id: str, grants: Mapping[str, Sequence[str]]
    ) -> list[dict[str, Any]]:
        """Check grants against the registered resource servers; rows to insert."""
        if not grants:
            return []
        known = {
            row.audience: set(row.scopes)
            for row in conn.execute(
                select(resource_servers_table.c.audience, resource_servers_table.c.scopes).where(
                    resource_servers_table.c.audience.in_(list(grants))
                )
            )
        }
        rows: list[dict[str, Any]] = []
        for audience in sorted(grants):
            what = f"client {client_id!r}, grant for {audience!r}"
            scopes = validated_scopes(grants[audience], what=what)
            if audience not in known:
                raise UnknownRecord(f"{what}: no resource server has this audience")
            unknown = [s for s in scopes if s not in known[audience]]
            if unknown:
                raise InvalidRecord(f"{what}: the resource server has no scopes {unknown}")
            rows.append({"client_id": client_id, "audience": audience, "scopes": list(scopes)})
        return rows

    def _load_client(self, conn: Connection, client_id: str) -> Client | None:
        row = conn.execute(
            select(clients_table).where(clients_table.c.client_id == client_id)
        ).one_or_none()
        if row is None:
            return None
        grants = conn.execute(
            select(grants_table).where(grants_table.c.client_id == client_id)
        ).all()
        return client_from_rows(row, grants)

    def get_client(self, client_id: str) -> Client | None:
        """A client by ``client_id``."""
        with self._read() as conn:
            return self._load_client(conn, client_id)

    def list_clients(self) -> list[Client]:
        """All clients, by ``client_id``."""
        with self._read() as conn:
            rows = conn.execute(select(clients_table).order_by(clients_table.c.client_id)).all()
            grants: dict[str, list[Row[Any]]] = defaultdict(list)
            for grant_row in conn.execute(select(grants_table)):
                grants[grant_row.client_id].append(grant_row)
        return [client_from_rows(row, grants[row.client_id]) for row in rows]

    def remove_client(self, client_id: str) -> None:
        """Forget a client and its grants; tokens issued to it stay on record."""
        with self._admin() as conn:
            conn.execute(delete(grants_table).where(grants_table.c.client_id == client_id))
            gone = conn.execute(delete(clients_table).where(clients_table.c.client_id == client_id))
            if gone.rowcount == 0:
                raise UnknownRecord(f"no client {client_id!r}")

    def set_grants(self, client_id: str, grants: Mapping[str, Sequence[str]]) -> Client:
        """Replace a client's grants (RFC 9200 §5.8.2: what the AS may issue to it)."""
        with self._admin() as conn:
            found = conn.execute(
                select(clients_table.c.client_id).where(clients_table.c.client_id == client_id)
            ).first()
            if found is None:
                raise UnknownRecord(f"no client {client_id!r}")
            rows = self._grant_rows(conn, client_id, grants)
            conn.execute(delete(grants_table).where(grants_table.c.client_id == client_id))
            if rows:
                conn.execute(insert(grants_table), rows)
            stored = self._load_client(conn, client_id)
        assert stored is not None
        return stored

    def set_client_oscore(self, client_id: str, context: OscoreContext) -> Client:
        """Replace a client's OSCORE context with ``context`` (new keys: ``as client rekey``).

        The AS finds a context by its ``kid``, so ``context.sender_id`` must not be one
        another peer receives with (``provision.new_client_context`` makes such a one).
        """
        with self._admin() as conn:
            changed = conn.execute(
                update(clients_table)
                .where(clients_table.c.client_id == client_id)
                .values(**oscore_columns(context))
            )
            if changed.rowcount == 0:
                raise UnknownRecord(f"no client {client_id!r}")
            stored = self._load_client(conn, client_id)
        assert stored is not None
        return stored

    def verify_client_secret(self, client_id: str, secret: str) -> Client:
        """Authenticate a client by its HTTP secret (RFC 6749 §2.3.1).

        Raises :class:`~keybound.core.errors.InvalidClient`, with the same
        message and about the same time, for an unknown client, a client
        without a secret and a wrong secret. The comparison is constant-time.
        """
        with self._read() as conn:
            stored = conn.execute(
                select(clients_table.c.secret_hash).where(clients_table.c.client_id == client_id)
            ).scalar_one_or_none()
            client = None if stored is None else self._load_client(conn, client_id)
        # scrypt runs after the connection went back to the pool.
        if stored is None or client is None:
            burn_scrypt_time(secret)
            raise InvalidClient("client authentication failed")
        if not secret_matches(secret, stored):
            raise InvalidClient("client authentication failed")
        return client

    def set_rs_credential(self, name: str, credential: bytes | None) -> RsRecord:
        """Record RS ``name``'s EDHOC authentication credential (an encoded CCS, public)."""
        self._update_rs(name, credential=credential)
        stored = self.get_resource_server(name)
        assert stored is not None  # just updated
        return stored

    def _update_rs(self, name: str, **values: object) -> None:
        with self._admin() as conn:
            changed = conn.execute(
                update(resource_servers_table)
                .where(resource_servers_table.c.name == name)
                .values(**values)
            ).rowcount
        if changed == 0:
            raise UnknownRecord(f"no resource server named {name!r}")

    def set_introspection_secret(self, name: str, secret: str) -> None:
        """Store the scrypt hash of RS ``name``'s introspection secret (RFC 7662 §2.1).

        The secret authenticates the RS at HTTP ``/introspect`` only; it is
        independent of the token key, and each can be replaced without the other.
        """
        if not secret:
            raise InvalidRecord("the introspection secret must not be empty")
        hashed = hash_client_secret(secret)  # scrypt outside the transaction
        self._update_rs(name, introspection_secret_hash=hashed)

    def verify_introspection_secret(self, name: str, secret: str) -> RsRecord:
        """Authenticate RS ``name`` by its introspection secret (constant-time, scrypt).

        Raises :class:`~keybound.core.errors.InvalidClient` for an unknown RS or a
        wrong secret, and names the fix for an RS that has no introspection secret
        (a database from before they existed).
        """
        with self._read() as conn:
            stored = conn.execute(
                select(resource_servers_table.c.introspection_secret_hash).where(
                    resource_servers_table.c.name == name
                )
            ).one_or_none()
            rs = None if stored is None else self._load_resource_server(conn, name)
        if stored is None or rs is None:
            burn_scrypt_time(secret)
            raise InvalidClient("resource server authentication failed")
        if stored[0] is None:
            burn_scrypt_time(secret)
            raise InvalidClient(
                f"resource server {name!r} has no introspection secret: run "
                f"`keybound as rotate-key {name} --introspection-secret` and give the RS "
                "the bundle it writes"
            )
        if not secret_matches(secret, stored[0]):
            raise InvalidClient("resource server authentication failed")
        return rs

    # -- tokens

    def record_token(self, token: IssuedToken) -> None:
        """Remember an issued token (RFC 9200 §5.9: what introspection answers from).

        One ``INSERT``: a ``cti`` on record already fails on the primary key
        (:class:`DuplicateRecord`), without a look first.
        """
        self.record_tokens([token])

    def record_tokens(self, tokens: Sequence[IssuedToken]) -> None:
        """Remember issued tokens in one transaction: every row is committed, or none.

        What the AS's group commit (:class:`keybound.coap.token_writer.TokenWriter`)
        calls: one fixed ``INSERT`` on the driver's connection kept for issuing
        (:class:`~keybound.tools.authz_server.hot_path.HotPath`), not through SQLAlchemy.
        """
        if tokens:
            self._hot.insert_tokens(tokens)

    def get_token(self, cti: bytes) -> IssuedToken | None:
        """An issued token by ``cti`` (RFC 8392 §3.1.7), or ``None``."""
        with self._read() as conn:
            row = conn.execute(select(tokens_table).where(tokens_table.c.cti == cti)).one_or_none()
        return None if row is None else token_from_row(row)

    def revoke(self, cti: bytes, *, now: int | None = None) -> IssuedToken:
        """Mark a token revoked; a second revocation keeps the first time.

        A token with a token hash that has not expired goes on the token revocation
        list in the same transaction (RFC 9770 §5.1): one update, a series item for
        the client and for the RS the token pertains to (§6.2).
        """
        when = _now(now)
        with self._write() as conn:
            changed = conn.execute(
                update(tokens_table)
                .where(tokens_table.c.cti == cti, tokens_table.c.revoked.is_(False))
                .values(revoked=True, revoked_at=when)
            ).rowcount
            row = conn.execute(select(tokens_table).where(tokens_table.c.cti == cti)).one_or_none()
            if row is None:
                raise UnknownRecord(f"no token with cti {cti.hex()}")
            token = token_from_row(row)
            if changed and token.token_hash is not None and _trl_expiry(token) > when:
                conn.execute(
                    update(tokens_table)
                    .where(tokens_table.c.cti == cti)
                    .values(trl_state=TRL_LISTED)
                )
                self._trl_update(conn, when, added=[token], removed=[])
        return token

    # -- the token revocation list (RFC 9770)

    def _pertaining(
        self, conn: Connection, tokens: Sequence[IssuedToken]
    ) -> dict[str, list[bytes]]:
        """Token hashes of ``tokens`` by the requesters they pertain to (RFC 9770 §5)."""
        audiences = {t.audience for t in tokens}
        rs_names = dict(
            conn.execute(
                select(resource_servers_table.c.audience, resource_servers_table.c.name).where(
                    resource_servers_table.c.audience.in_(audiences)
                )
            ).all()
        )
        by_requester: dict[str, list[bytes]] = defaultdict(list)
        for t in tokens:
            assert t.token_hash is not None  # only hashed tokens reach the TRL
            by_requester[trl_requester("client", t.client_id)].append(t.token_hash)
            if t.audience in rs_names:
                by_requester[trl_requester("rs", rs_names[t.audience])].append(t.token_hash)
        return by_requester

    def _trl_update(
        self,
        conn: Connection,
        when: int,
        *,
        added: Sequence[IssuedToken],
        removed: Sequence[IssuedToken],
    ) -> None:
        """Record one TRL update and each touched requester's series item (§6.2)."""
        update_id = conn.execute(
            insert(trl_updates_table).values(at=when).returning(trl_updates_table.c.id)
        ).scalar_one()
        gone, new = self._pertaining(conn, removed), self._pertaining(conn, added)
        max_n = self.trl_limits.max_n
        for requester in sorted(set(gone) | set(new)):
            last = conn.execute(
                select(func.max(trl_series_table.c.seq)).where(
                    trl_series_table.c.requester == requester
                )
            ).scalar_one()
            seq = 0 if last is None else int(last) + 1
            conn.execute(
                insert(trl_series_table).values(
                    requester=requester,
                    seq=seq,
                    update_id=update_id,
                    removed=sorted(h.hex() for h in set(gone.get(requester, []))),
                    added=sorted(h.hex() for h in set(new.get(requester, []))),
                )
            )
            conn.execute(
                delete(trl_series_table).where(
                    trl_series_table.c.requester == requester,
                    trl_series_table.c.seq <= seq - max_n,
                )
            )

    def get_token_by_hash(self, token_hash: bytes) -> IssuedToken | None:
        """The issued token whose RFC 9770 token hash is ``token_hash``, or ``None``."""
        query = select(tokens_table).where(tokens_table.c.token_hash == token_hash).limit(2)
        with self._read() as conn:
            rows = conn.execute(query).all()
        return token_from_row(rows[0]) if len(rows) == 1 else None

    def is_listed(self, cti: bytes) -> bool:
        """Whether the token ``cti`` is on the TRL now."""
        query = select(tokens_table.c.trl_state).where(tokens_table.c.cti == cti)
        with self._read() as conn:
            return conn.execute(query).scalar_one_or_none() == TRL_LISTED

    def trl_entries(self) -> list[IssuedToken]:
        """Every token on the TRL now (the administrator's view), newest revocation first."""
        query = (
            select(tokens_table)
            .where(tokens_table.c.trl_state == TRL_LISTED)
            .order_by(tokens_table.c.revoked_at.desc(), tokens_table.c.cti)
        )
        with self._read() as conn:
            return [token_from_row(row) for row in conn.execute(query).all()]

    def trl_requesters(self, token: IssuedToken) -> list[str]:
        """The registered devices ``token`` pertains to (RFC 9770 §5), as requesters."""
        with self._read() as conn:
            rs = conn.execute(
                select(resource_servers_table.c.name).where(
                    resource_servers_table.c.audience == token.audience
                )
            ).scalar_one_or_none()
        names = [trl_requester("client", token.client_id)]
        return names if rs is None else [*names, trl_requester("rs", rs)]

    def trl_version(self) -> int:
        """The id of the newest TRL update (0 before the first)."""
        with self._read() as conn:
            value = conn.execute(select(func.max(trl_updates_table.c.id))).scalar_one()
        return 0 if value is None else int(value)

    def trl_view(self, requester: str) -> tuple[frozenset[bytes], UpdateCollection]:
        """The requester's part of the TRL and its update collection, read in one go."""
        kind, _, name = requester.partition(":")
        query = select(tokens_table.c.token_hash).where(tokens_table.c.trl_state == TRL_LISTED)
        if kind == "client":
            query = query.where(tokens_table.c.client_id == name)
        elif kind == "rs":
            audience = select(resource_servers_table.c.audience).where(
                resource_servers_table.c.name == name
            )
            query = query.where(tokens_table.c.audience.in_(audience.scalar_subquery()))
        else:
            raise ValueError(f"no TRL requester {requester!r}")
        series = (
            select(trl_series_table)
            .where(trl_series_table.c.requester == requester)
            .order_by(trl_series_table.c.seq)
        )
        with self._read() as conn:
            hashes = frozenset(bytes(h) for h in conn.execute(query).scalars())
            rows = conn.execute(series).all()
        modulus = self.trl_limits.max_index + 1
        items = tuple(
            SeriesItem(
                int(row.seq) % modulus,
                tuple(bytes.fromhex(h) for h in row.removed),
                tuple(bytes.fromhex(h) for h in row.added),
            )
            for row in rows
        )
        wrapped = bool(rows) and int(rows[-1].seq) >= modulus
        return hashes, UpdateCollection(items, wrapped)

    def trl_marks(self, requesters: Sequence[str]) -> dict[str, int]:
        """Each requester's newest series item number, -1 for none."""
        marks = dict.fromkeys(requesters, -1)
        if not marks:
            return marks
        query = (
            select(trl_series_table.c.requester, func.max(trl_series_table.c.seq))
            .where(trl_series_table.c.requester.in_(list(marks)))
            .group_by(trl_series_table.c.requester)
        )
        with self._read() as conn:
            for requester, seq in conn.execute(query).all():
                marks[requester] = int(seq)
        return marks

    def expire_trl(self, now: int) -> int:
        """Take expired revoked tokens off the TRL, in one update; returns how many.

        A token with ``exp`` leaves when ``exp`` has passed; one with ``exi`` only
        (RFC 9200 §5.10.3: the AS cannot know when its RS started counting) when
        ``exi`` seconds have passed since it was revoked: an RS that held it then has
        let it expire by that time.
        """
        listed = select(tokens_table).where(tokens_table.c.trl_state == TRL_LISTED)
        with self._read() as conn:  # most looks find nothing: no write transaction then
            rows = conn.execute(listed).all()
        if not any(_trl_expiry(t) <= now for t in map(token_from_row, rows)):
            return 0
        with self._write() as conn:
            rows = conn.execute(listed).all()
            leaving = [t for t in map(token_from_row, rows) if _trl_expiry(t) <= now]
            if not leaving:
                return 0
            conn.execute(
                update(tokens_table)
                .where(tokens_table.c.cti.in_([t.cti for t in leaving]))
                .values(trl_state=TRL_LEFT)
            )
            self._trl_update(conn, now, added=[], removed=leaving)
        return len(leaving)

    def list_tokens(
        self, client_id: str, *, include_revoked: bool = True, limit: int = 1000
    ) -> list[IssuedToken]:
        """The newest ``limit`` tokens issued to a client, newest first."""
        query = select(tokens_table).where(tokens_table.c.client_id == client_id)
        if not include_revoked:
            query = query.where(tokens_table.c.revoked.is_(False))
        query = query.order_by(tokens_table.c.iat.desc(), tokens_table.c.cti).limit(max(limit, 0))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [token_from_row(row) for row in rows]

    def purge_expired_tokens(self, before: int) -> int:
        """Forget tokens whose ``exp`` is before ``before``; returns how many.

        Tokens without ``exp`` (``exi`` tokens, RFC 9200 §5.10.3) are kept: the
        AS cannot know when their RS started counting. So are tokens still on the
        token revocation list (they leave it first, :meth:`expire_trl`).
        """
        with self._write() as conn:
            result = conn.execute(
                delete(tokens_table).where(
                    tokens_table.c.exp < before, tokens_table.c.trl_state != TRL_LISTED
                )
            )
        return int(result.rowcount)

    def next_sequence(self, audience: str) -> int:
        """The next sequence number for ``audience`` (RFC 9200 §5.10.3).

        One ``UPDATE ... RETURNING`` in its own transaction (fixed SQL on the
        connection kept for issuing, :mod:`.hot_path`), committed before the number
        is returned: strictly increasing and never handed out twice,
        whichever process of those sharing the database asks. The first is 1.

        Numbers are taken one per commit on purpose, never reserved in blocks: an RS
        without a clock refuses a number not above the highest it has seen, so blocks
        held by two AS processes would interleave and one process's tokens would be
        refused. SQLite commits with ``synchronous=FULL`` (:mod:`.database`), so a
        number that was returned survives a power cut and is never handed out again.
        """
        value = self._hot.next_sequence(audience)
        if value is None:
            raise UnknownRecord(f"no resource server with audience {audience!r}")
        return value

    # -- the OSCORE contexts of the CoAP site (RFC 8613 Appendix B.1.1)

    def list_oscore_peers(self) -> list[tuple[str, str, OscoreContext]]:
        """Every client's and RS's OSCORE context, ``(kind, name, context)``: two plain
        queries, so an AS with 100,000 clients reads them in a fraction of a second."""
        peers: list[tuple[str, str, OscoreContext]] = []
        with self._read() as conn:
            for kind, table, name in (
                ("client", clients_table, clients_table.c.client_id),
                ("rs", resource_servers_table, resource_servers_table.c.name),
            ):
                query = select(
                    name,
                    table.c.osc_master_secret,
                    table.c.osc_sender_id,
                    table.c.osc_recipient_id,
                    table.c.osc_master_salt,
                    table.c.osc_id_context,
                ).where(table.c.osc_master_secret.is_not(None))
                for who, secret, sender, recipient, salt, id_context in conn.execute(query):
                    context = OscoreContext(
                        bytes(secret),
                        bytes(sender),
                        bytes(recipient),
                        bytes(salt or b""),
                        None if id_context is None else bytes(id_context),
                    )
                    peers.append((kind, who, context))
        return peers

    def start_oscore_state(self, key: str, *, mark: int = 0) -> bool:
        """Make context ``key``'s sequence row (every number from ``mark`` on unused) if
        there is none; ``True`` if this call made it. Committed before it returns."""
        table = oscore_sequences_table
        try:
            with self._write() as conn:
                found = conn.execute(select(table.c.context).where(table.c.context == key)).first()
                if found is not None:
                    return False
                conn.execute(insert(table).values(context=key, reserved=mark))
        except DuplicateRecord:  # another process made it between the look and the insert
            return False
        return True

    def reserve_oscore_sequence(self, key: str, count: int) -> int:
        """Reserve ``[end - count, end)`` for context ``key`` and return ``end``.

        One ``UPDATE ... RETURNING``, committed (SQLite ``synchronous=FULL``) before the
        block is returned: whichever process asks, blocks never overlap.
        """
        if not 1 <= count <= MAX_CHUNK:
            raise ValueError(f"count must be between 1 and {MAX_CHUNK}")
        table = oscore_sequences_table
        with self._write() as conn:
            end = conn.execute(
                update(table)
                .where(table.c.context == key)
                .values(reserved=table.c.reserved + count)
                .returning(table.c.reserved)
            ).scalar_one_or_none()
        if end is None:
            raise UnknownRecord(f"no OSCORE sequence state {key!r}: start it first")
        return int(end)


if TYPE_CHECKING:

    def _implements_the_protocol(store: SqlAuthzStore) -> AuthzStore:
        return store  # mypy checks SqlAuthzStore against the AuthzStore protocol here

    def _keeps_oscore_state(store: SqlAuthzStore) -> OscoreStateStore:
        return store
