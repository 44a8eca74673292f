"""The Authorization Server's storage on SQLAlchemy 2 Core: SQLite or PostgreSQL.

:class:`SqlAuthzStore` implements :class:`keybound.core.authz_store.AuthzStore`.
By default it keeps an SQLite file, ``keybound-as.db`` in the user's data
directory, created 0600 because it holds keys. Give a URL
(``sqlite:///path/to/as.db`` or ``postgresql+psycopg://user@host/db``) to put
it elsewhere; several AS processes may share one PostgreSQL database, or one
SQLite file on one machine.

Concurrency: every method is one short transaction. SQLite runs in WAL mode
with a busy timeout, and write transactions start with ``BEGIN IMMEDIATE`` so
two writers queue instead of failing on a lock upgrade. Sequence numbers for
resource servers without a clock (RFC 9200 §5.10.3) are incremented in the
database with ``UPDATE ... RETURNING`` and committed before they are handed
out, so no number is given twice, whichever process asks.

A ``keybound_meta`` table records the schema version. :meth:`SqlAuthzStore.open`
refuses a database written by a newer keybound, and one holding other tables
but no ``keybound_meta``, rather than guess.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, cast

import platformdirs
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    exists,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.pool import StaticPool

from keybound.core.authz_store import (
    DEFAULT_PROFILES,
    TOKEN_FORMATS,
    AuthzStore,
    AuthzStoreError,
    Client,
    ClientRegistration,
    DuplicateRecord,
    InvalidRecord,
    IssuedToken,
    IssuerSettings,
    OscoreContext,
    ResourceServer,
    TokenFormat,
    TokenKey,
    UnknownRecord,
    validated_scopes,
)
from keybound.core.errors import InvalidClient

__all__ = [
    "DEFAULT_DATABASE_NAME",
    "SCHEMA_VERSION",
    "SqlAuthzStore",
    "StorageError",
    "default_database_path",
    "hash_client_secret",
    "resolve_database_url",
]

SCHEMA_VERSION: Final = 1
"""Bumped whenever a table changes; a database with another version is refused."""

DEFAULT_DATABASE_NAME: Final = "keybound-as.db"

_SQLITE_BUSY_TIMEOUT_S: Final = 30.0
_READ_ONLY: Final = "keybound_read_only"


class StorageError(AuthzStoreError):
    """The database cannot be used: wrong schema, not a keybound database, unreachable."""


# ---- schema ----------------------------------------------------------------------------------

_metadata = MetaData()

_meta = Table(
    "keybound_meta",
    _metadata,
    Column("schema_version", Integer, nullable=False),
    Column("created", BigInteger, nullable=False),
)

_issuer = Table(
    "keybound_issuer",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one issuer
    Column("issuer", String, nullable=False),
    Column("signing_key", LargeBinary, nullable=False),
    Column("created", BigInteger, nullable=False),
)

_resource_servers = Table(
    "keybound_resource_servers",
    _metadata,
    Column("name", String, primary_key=True),
    Column("audience", String, nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("has_clock", Boolean, nullable=False),
    Column("profiles", JSON, nullable=False),
    Column("default_lifetime", Integer, nullable=False),
    Column("osc_master_secret", LargeBinary),
    Column("osc_master_salt", LargeBinary),
    Column("osc_sender_id", LargeBinary),
    Column("osc_recipient_id", LargeBinary),
    Column("osc_id_context", LargeBinary),
    Column("created", BigInteger, nullable=False),
)

_token_keys = Table(
    "keybound_rs_token_keys",
    _metadata,
    Column(
        "rs_name",
        String,
        ForeignKey("keybound_resource_servers.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("kid", LargeBinary, nullable=False),
    Column("key", LargeBinary, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("retired", BigInteger),
    UniqueConstraint("rs_name", "kid"),
)

# Not tied to keybound_resource_servers: the counter outlives a removed RS (RFC 9200 §5.10.3).
_sequences = Table(
    "keybound_rs_sequences",
    _metadata,
    Column("audience", String, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

_clients = Table(
    "keybound_clients",
    _metadata,
    Column("client_id", String, primary_key=True),
    Column("secret_hash", String),
    Column("osc_master_secret", LargeBinary),
    Column("osc_master_salt", LargeBinary),
    Column("osc_sender_id", LargeBinary),
    Column("osc_recipient_id", LargeBinary),
    Column("osc_id_context", LargeBinary),
    Column("public_key", LargeBinary),
    Column("created", BigInteger, nullable=False),
)

_grants = Table(
    "keybound_client_grants",
    _metadata,
    Column(
        "client_id",
        String,
        ForeignKey("keybound_clients.client_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "audience",
        String,
        ForeignKey("keybound_resource_servers.audience", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("scopes", JSON, nullable=False),
)

# Tokens stay on record after their client or RS is removed, until they expire.
_tokens = Table(
    "keybound_tokens",
    _metadata,
    Column("cti", LargeBinary, primary_key=True),
    Column("client_id", String, nullable=False, index=True),
    Column("audience", String, nullable=False),
    Column("scope", String, nullable=False),
    Column("format", String(8), nullable=False),
    Column("iat", BigInteger, nullable=False),
    Column("exp", BigInteger, index=True),
    Column("exi", BigInteger),
    Column("sequence", BigInteger),
    Column("cnf_id", LargeBinary),
    Column("revoked", Boolean, nullable=False),
    Column("revoked_at", BigInteger),
)

_ALL_TABLES: Final = frozenset(_metadata.tables)


# ---- client secrets (RFC 6749 §2.3.1) --------------------------------------------------------

# scrypt (RFC 7914) with the interactive-login parameters: 16 MiB and some tens of
# milliseconds per check.
_SCRYPT_N: Final = 2**14
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_LEN: Final = 32
_SCRYPT_MAX_N: Final = 2**20  # refuse stored parameters that would exhaust memory


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_SCRYPT_LEN, maxmem=2**31 - 1
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_client_secret(secret: str) -> str:
    """A salted scrypt hash of a client secret: ``scrypt$N$r$p$salt$hash`` (base64url)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(secret, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _secret_matches(secret: str, stored: str) -> bool:
    try:
        scheme, n_text, r_text, p_text, salt_text, digest_text = stored.split("$")
        n, r, p = int(n_text), int(r_text), int(p_text)
        salt, expected = _unb64(salt_text), _unb64(digest_text)
    except ValueError:
        return False
    if scheme != "scrypt" or not 1 < n <= _SCRYPT_MAX_N or not 0 < r <= 32 or not 0 < p <= 16:
        return False
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p), expected)


_DUMMY_SALT: Final = bytes(16)


def _burn_scrypt_time(secret: str) -> None:
    """As much work as a real check, so timing does not tell which client IDs exist."""
    _scrypt(secret, _DUMMY_SALT, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)


# ---- locations -------------------------------------------------------------------------------


def default_database_path() -> Path:
    """``keybound-as.db`` in the per-user data directory (``platformdirs``)."""
    return Path(platformdirs.user_data_dir("keybound")) / DEFAULT_DATABASE_NAME


def resolve_database_url(url: str | URL | None = None) -> URL:
    """The database URL to use: the default SQLite file, a URL, or a plain file path.

    ``postgresql://`` is read as ``postgresql+psycopg://`` (psycopg 3).
    A string without ``://`` is a path of an SQLite file.
    Other database kinds are refused.
    """
    if url is None:
        return URL.create("sqlite", database=str(default_database_path()))
    if isinstance(url, str) and "://" not in url:
        return URL.create("sqlite", database=url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StorageError(f"not a database URL: {exc}") from None
    backend = parsed.get_backend_name()
    if parsed.drivername == "postgresql":  # no driver named: psycopg 3, whatever the default
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend not in {"sqlite", "postgresql"}:
        raise StorageError(
            f"unsupported database {backend!r}: use sqlite:///path or postgresql+psycopg://..."
        )
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        return None
    if database.startswith("file:"):
        return None  # an SQLite URI filename: the caller manages it
    return Path(database).expanduser()


def _create_private_file(path: Path) -> None:
    """Create ``path`` 0600 (and missing parents 0700) unless it exists."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)  # in case the umask took more than it should


def _build_engine(url: URL, *, echo: bool) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(
            url,
            echo=echo,
            hide_parameters=True,  # parameters include keys: keep them out of errors and logs
            pool_pre_ping=True,
        )
    path = _sqlite_file(url)
    if path is not None:
        _create_private_file(path)
        engine = create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"timeout": _SQLITE_BUSY_TIMEOUT_S},
        )
    else:
        engine = create_engine(
            url,
            echo=echo,
            hide_parameters=True,
            connect_args={"check_same_thread": False},
            poolclass=StaticPool,  # one in-memory database, for tests
        )
    wal = path is not None

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN, not the sqlite3 module.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(_SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if wal:
            cursor.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed sequence number survives a power cut, never reissued.
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.close()

    def on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(_READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            # Take the write lock up front: a deferred transaction that reads, then
            # writes, fails at once with "database is locked" when another writer won.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine


# ---- row conversion --------------------------------------------------------------------------


def _oscore_columns(context: OscoreContext | None) -> dict[str, bytes | None]:
    if context is None:
        return {
            "osc_master_secret": None,
            "osc_master_salt": None,
            "osc_sender_id": None,
            "osc_recipient_id": None,
            "osc_id_context": None,
        }
    return {
        "osc_master_secret": context.master_secret,
        "osc_master_salt": context.master_salt,
        "osc_sender_id": context.sender_id,
        "osc_recipient_id": context.recipient_id,
        "osc_id_context": context.id_context,
    }


def _oscore_from_row(row: Row[Any]) -> OscoreContext | None:
    if row.osc_master_secret is None:
        return None
    return OscoreContext(
        master_secret=bytes(row.osc_master_secret),
        sender_id=bytes(row.osc_sender_id),
        recipient_id=bytes(row.osc_recipient_id),
        master_salt=bytes(row.osc_master_salt or b""),
        id_context=None if row.osc_id_context is None else bytes(row.osc_id_context),
    )


def _resource_server(row: Row[Any], keys: Sequence[Row[Any]]) -> ResourceServer:
    return ResourceServer(
        name=row.name,
        audience=row.audience,
        scopes=tuple(row.scopes),
        token_keys=tuple(
            TokenKey(
                version=k.version,
                kid=bytes(k.kid),
                key=bytes(k.key),
                created=k.created,
                retired=k.retired,
            )
            for k in sorted(keys, key=lambda k: -int(k.version))
        ),
        has_clock=bool(row.has_clock),
        profiles=tuple(int(p) for p in row.profiles),
        default_lifetime=row.default_lifetime,
        introspection_context=_oscore_from_row(row),
        created=row.created,
    )


def _client(row: Row[Any], grants: Sequence[Row[Any]]) -> Client:
    return Client(
        client_id=row.client_id,
        has_secret=row.secret_hash is not None,
        oscore=_oscore_from_row(row),
        public_key=None if row.public_key is None else bytes(row.public_key),
        grants={g.audience: tuple(g.scopes) for g in sorted(grants, key=lambda g: g.audience)},
        created=row.created,
    )


def _token(row: Row[Any]) -> IssuedToken:
    token_format = row.format
    if token_format not in TOKEN_FORMATS:
        raise StorageError(f"stored token has an unknown format {token_format!r}")
    return IssuedToken(
        cti=bytes(row.cti),
        client_id=row.client_id,
        audience=row.audience,
        scope=row.scope,
        format=cast(TokenFormat, token_format),
        iat=row.iat,
        exp=row.exp,
        exi=row.exi,
        sequence=row.sequence,
        cnf_id=None if row.cnf_id is None else bytes(row.cnf_id),
        revoked=bool(row.revoked),
        revoked_at=row.revoked_at,
    )


def _now(now: int | None) -> int:
    return int(time.time()) if now is None else now


# ---- the store -------------------------------------------------------------------------------


class SqlAuthzStore:
    """The AS storage (:class:`keybound.core.authz_store.AuthzStore`) on SQLAlchemy Core.

    Create with :meth:`init` (a new or existing database) or :meth:`open`
    (an existing one); close with :meth:`close` or a ``with`` block.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose schema was checked; use :meth:`open` or :meth:`init`."""
        self._engine = engine

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
        engine = _build_engine(resolved, echo=echo)
        try:
            cls._check_schema(engine, resolved, create=create)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @staticmethod
    def _check_schema(engine: Engine, url: URL, *, create: bool) -> None:
        where = url.render_as_string(hide_password=True)
        try:
            with engine.begin() as conn:
                tables = set(inspect(conn).get_table_names())
                if not tables:
                    if not create:
                        raise StorageError(
                            f"{where} is empty: initialise it first (keybound as init)"
                        )
                    _metadata.create_all(conn)
                    conn.execute(
                        insert(_meta).values(schema_version=SCHEMA_VERSION, created=_now(None))
                    )
                    return
                if _meta.name not in tables:
                    shown = ", ".join(sorted(tables)[:5])
                    raise StorageError(
                        f"{where} holds tables ({shown}) but no keybound_meta: it is not a "
                        "keybound AS database, refusing to use it"
                    )
                versions = conn.execute(select(_meta.c.schema_version)).scalars().all()
        except DBAPIError as exc:
            raise StorageError(f"cannot use {where}: {exc.orig}") from None
        if len(versions) != 1:
            raise StorageError(f"{where}: keybound_meta holds {len(versions)} rows, expected 1")
        version = versions[0]
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{where} has schema version {version}, written by a newer keybound; this "
                f"one knows version {SCHEMA_VERSION}: upgrade keybound"
            )
        if version != SCHEMA_VERSION:
            raise StorageError(
                f"{where} has unknown schema version {version}; this keybound knows "
                f"version {SCHEMA_VERSION}"
            )
        missing = _ALL_TABLES - tables
        if missing:
            raise StorageError(f"{where} lacks tables {sorted(missing)}: the database is damaged")

    def close(self) -> None:
        """Close all pooled connections."""
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
        try:
            with self._engine.begin() as conn:
                yield conn
        except IntegrityError as exc:
            raise DuplicateRecord(
                f"conflicts with an existing record or a concurrent change: {exc.orig}"
            ) from None
        except DBAPIError as exc:
            raise StorageError(f"database error: {exc.orig}") from None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self._engine.connect() as conn:
                conn.execution_options(**{_READ_ONLY: True})
                with conn.begin():
                    yield conn
        except DBAPIError as exc:
            raise StorageError(f"database error: {exc.orig}") from None

    # -- issuer

    def get_issuer(self) -> IssuerSettings | None:
        """The issuer URI and AS signing key, or ``None`` before :meth:`set_issuer`."""
        with self._read() as conn:
            row = conn.execute(select(_issuer).where(_issuer.c.id == 1)).one_or_none()
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
        with self._write() as conn:
            changed = conn.execute(update(_issuer).where(_issuer.c.id == 1).values(**values))
            if changed.rowcount == 0:
                conn.execute(insert(_issuer).values(id=1, **values))
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
    ) -> ResourceServer:
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
        with self._write() as conn:
            clash = conn.execute(
                select(_resource_servers.c.name).where(
                    (_resource_servers.c.name == name) | (_resource_servers.c.audience == audience)
                )
            ).first()
            if clash is not None:
                raise DuplicateRecord(
                    f"{what}: a resource server with this name or audience {audience!r} exists"
                )
            conn.execute(
                insert(_resource_servers).values(
                    name=name,
                    audience=audience,
                    scopes=list(checked_scopes),
                    has_clock=has_clock,
                    profiles=list(checked_profiles),
                    default_lifetime=default_lifetime,
                    created=created,
                    **_oscore_columns(introspection_context),
                )
            )
            conn.execute(
                insert(_token_keys).values(
                    rs_name=name, version=1, kid=token_kid, key=token_key, created=created
                )
            )
            counter = conn.execute(
                select(_sequences.c.value).where(_sequences.c.audience == audience)
            ).first()
            if counter is None:
                conn.execute(insert(_sequences).values(audience=audience, value=0))
            stored = self._load_resource_server(conn, name)
        assert stored is not None
        return stored

    def _load_resource_server(self, conn: Connection, name: str) -> ResourceServer | None:
        row = conn.execute(
            select(_resource_servers).where(_resource_servers.c.name == name)
        ).one_or_none()
        if row is None:
            return None
        keys = conn.execute(select(_token_keys).where(_token_keys.c.rs_name == name)).all()
        return _resource_server(row, keys)

    def get_resource_server(self, name: str) -> ResourceServer | None:
        """A resource server by its local name."""
        with self._read() as conn:
            return self._load_resource_server(conn, name)

    def get_resource_server_by_audience(self, audience: str) -> ResourceServer | None:
        """A resource server by ``audience`` (RFC 9200 §5.8.1)."""
        with self._read() as conn:
            name = conn.execute(
                select(_resource_servers.c.name).where(_resource_servers.c.audience == audience)
            ).scalar_one_or_none()
            return None if name is None else self._load_resource_server(conn, name)

    def list_resource_servers(self) -> list[ResourceServer]:
        """All resource servers, by name."""
        with self._read() as conn:
            rows = conn.execute(select(_resource_servers).order_by(_resource_servers.c.name)).all()
            keys: dict[str, list[Row[Any]]] = defaultdict(list)
            for key_row in conn.execute(select(_token_keys)):
                keys[key_row.rs_name].append(key_row)
        return [_resource_server(row, keys[row.name]) for row in rows]

    def remove_resource_server(self, name: str) -> None:
        """Forget a resource server, its token keys and all grants for its audience.

        The sequence counter of its audience is kept (RFC 9200 §5.10.3).
        """
        with self._write() as conn:
            audience = conn.execute(
                select(_resource_servers.c.audience).where(_resource_servers.c.name == name)
            ).scalar_one_or_none()
            if audience is None:
                raise UnknownRecord(f"no resource server named {name!r}")
            # Explicit, not only ON DELETE CASCADE: the result must not depend on a pragma.
            conn.execute(delete(_grants).where(_grants.c.audience == audience))
            conn.execute(delete(_token_keys).where(_token_keys.c.rs_name == name))
            conn.execute(delete(_resource_servers).where(_resource_servers.c.name == name))

    def rotate_token_key(
        self,
        name: str,
        token_key: bytes,
        token_kid: bytes,
        *,
        keep_previous: int = 1,
        now: int | None = None,
    ) -> ResourceServer:
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
        with self._write() as conn:
            versions = conn.execute(
                select(_token_keys.c.version, _token_keys.c.kid)
                .where(_token_keys.c.rs_name == name)
                .order_by(_token_keys.c.version.desc())
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
                delete(_token_keys).where(
                    _token_keys.c.rs_name == name,
                    _token_keys.c.version.not_in([row.version for row in kept]),
                )
            )
            conn.execute(
                update(_token_keys)
                .where(_token_keys.c.rs_name == name, _token_keys.c.retired.is_(None))
                .values(retired=when)
            )
            conn.execute(
                insert(_token_keys).values(
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
                "created": created,
                **_oscore_columns(r.oscore),
            }
            for r in registrations
        ]
        with self._write() as conn:
            existing = self._existing_client_ids(conn, ids)
            if existing:
                raise DuplicateRecord(f"clients exist already: {sorted(existing)[:10]}")
            grants = {
                r.client_id: self._grant_rows(conn, r.client_id, r.grants) for r in registrations
            }
            conn.execute(insert(_clients), client_rows)
            grant_rows = [row for rows in grants.values() for row in rows]
            if grant_rows:
                conn.execute(insert(_grants), grant_rows)
        return [
            Client(
                client_id=r.client_id,
                has_secret=r.secret is not None,
                oscore=r.oscore,
                public_key=r.public_key,
                grants={g["audience"]: tuple(g["scopes"]) for g in grants[r.client_id]},
                created=created,
            )
            for r in registrations
        ]

    @staticmethod
    def _existing_client_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):  # stay under bound-parameter limits
            chunk = ids[start : start + 500]
            found.update(
                conn.execute(select(_clients.c.client_id).where(_clients.c.client_id.in_(chunk)))
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
                select(_resource_servers.c.audience, _resource_servers.c.scopes).where(
                    _resource_servers.c.audience.in_(list(grants))
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
        row = conn.execute(select(_clients).where(_clients.c.client_id == client_id)).one_or_none()
        if row is None:
            return None
        grants = conn.execute(select(_grants).where(_grants.c.client_id == client_id)).all()
        return _client(row, grants)

    def get_client(self, client_id: str) -> Client | None:
        """A client by ``client_id``."""
        with self._read() as conn:
            return self._load_client(conn, client_id)

    def list_clients(self) -> list[Client]:
        """All clients, by ``client_id``."""
        with self._read() as conn:
            rows = conn.execute(select(_clients).order_by(_clients.c.client_id)).all()
            grants: dict[str, list[Row[Any]]] = defaultdict(list)
            for grant_row in conn.execute(select(_grants)):
                grants[grant_row.client_id].append(grant_row)
        return [_client(row, grants[row.client_id]) for row in rows]

    def remove_client(self, client_id: str) -> None:
        """Forget a client and its grants; tokens issued to it stay on record."""
        with self._write() as conn:
            conn.execute(delete(_grants).where(_grants.c.client_id == client_id))
            gone = conn.execute(delete(_clients).where(_clients.c.client_id == client_id))
            if gone.rowcount == 0:
                raise UnknownRecord(f"no client {client_id!r}")

    def set_grants(self, client_id: str, grants: Mapping[str, Sequence[str]]) -> Client:
        """Replace a client's grants (RFC 9200 §5.8.2: what the AS may issue to it)."""
        with self._write() as conn:
            found = conn.execute(
                select(_clients.c.client_id).where(_clients.c.client_id == client_id)
            ).first()
            if found is None:
                raise UnknownRecord(f"no client {client_id!r}")
            rows = self._grant_rows(conn, client_id, grants)
            conn.execute(delete(_grants).where(_grants.c.client_id == client_id))
            if rows:
                conn.execute(insert(_grants), rows)
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
                select(_clients.c.secret_hash).where(_clients.c.client_id == client_id)
            ).scalar_one_or_none()
            client = None if stored is None else self._load_client(conn, client_id)
        # scrypt runs after the connection went back to the pool.
        if stored is None or client is None:
            _burn_scrypt_time(secret)
            raise InvalidClient("client authentication failed")
        if not _secret_matches(secret, stored):
            raise InvalidClient("client authentication failed")
        return client

    # -- tokens

    def record_token(self, token: IssuedToken) -> None:
        """Remember an issued token (RFC 9200 §5.9: what introspection answers from)."""
        with self._write() as conn:
            taken = conn.execute(select(_tokens.c.cti).where(_tokens.c.cti == token.cti)).first()
            if taken is not None:
                raise DuplicateRecord(f"a token with cti {token.cti.hex()} is on record")
            conn.execute(
                insert(_tokens).values(
                    cti=token.cti,
                    client_id=token.client_id,
                    audience=token.audience,
                    scope=token.scope,
                    format=token.format,
                    iat=token.iat,
                    exp=token.exp,
                    exi=token.exi,
                    sequence=token.sequence,
                    cnf_id=token.cnf_id,
                    revoked=token.revoked,
                    revoked_at=token.revoked_at,
                )
            )

    def get_token(self, cti: bytes) -> IssuedToken | None:
        """An issued token by ``cti`` (RFC 8392 §3.1.7), or ``None``."""
        with self._read() as conn:
            row = conn.execute(select(_tokens).where(_tokens.c.cti == cti)).one_or_none()
        return None if row is None else _token(row)

    def revoke(self, cti: bytes, *, now: int | None = None) -> IssuedToken:
        """Mark a token revoked; a second revocation keeps the first time."""
        when = _now(now)
        with self._write() as conn:
            conn.execute(
                update(_tokens)
                .where(_tokens.c.cti == cti, _tokens.c.revoked.is_(False))
                .values(revoked=True, revoked_at=when)
            )
            row = conn.execute(select(_tokens).where(_tokens.c.cti == cti)).one_or_none()
            if row is None:
                raise UnknownRecord(f"no token with cti {cti.hex()}")
        return _token(row)

    def list_tokens(
        self, client_id: str, *, include_revoked: bool = True, limit: int = 1000
    ) -> list[IssuedToken]:
        """The newest ``limit`` tokens issued to a client, newest first."""
        query = select(_tokens).where(_tokens.c.client_id == client_id)
        if not include_revoked:
            query = query.where(_tokens.c.revoked.is_(False))
        query = query.order_by(_tokens.c.iat.desc(), _tokens.c.cti).limit(max(limit, 0))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_token(row) for row in rows]

    def purge_expired_tokens(self, before: int) -> int:
        """Forget tokens whose ``exp`` is before ``before``; returns how many.

        Tokens without ``exp`` (``exi`` tokens, RFC 9200 §5.10.3) are kept: the
        AS cannot know when their RS started counting.
        """
        with self._write() as conn:
            result = conn.execute(delete(_tokens).where(_tokens.c.exp < before))
        return int(result.rowcount)

    def next_sequence(self, audience: str) -> int:
        """The next sequence number for ``audience`` (RFC 9200 §5.10.3).

        One ``UPDATE ... RETURNING`` in its own transaction, committed before
        the number is returned: strictly increasing and never handed out twice,
        whichever process of those sharing the database asks. The first is 1.
        """
        registered = exists().where(_resource_servers.c.audience == audience)
        with self._write() as conn:
            value = conn.execute(
                update(_sequences)
                .where(_sequences.c.audience == audience, registered)
                .values(value=_sequences.c.value + 1)
                .returning(_sequences.c.value)
            ).scalar_one_or_none()
        if value is None:
            raise UnknownRecord(f"no resource server with audience {audience!r}")
        return int(value)


if TYPE_CHECKING:

    def _implements_the_protocol(store: SqlAuthzStore) -> AuthzStore:
        return store  # mypy checks SqlAuthzStore against the AuthzStore protocol here
