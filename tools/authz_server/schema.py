"""The tables of the Authorization Server's database, their version, and their rows as records.

The tables hold what :class:`keybound.core.authz_store.AuthzStore` stores: the
issuer, resource servers with their token keys and sequence counters, clients with
their grants, and issued tokens. The functions at the end turn rows into the
records of :mod:`keybound.core.authz_store` and back.

A ``keybound_meta`` table records the schema version. :func:`check_schema`
refuses a database written by a newer keybound, and one holding other tables but
no ``keybound_meta``, rather than guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

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
    delete,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from keybound.core.authz_server import sequence_record_cti
from keybound.core.authz_store import (
    TOKEN_FORMATS,
    Client,
    IssuedToken,
    OscoreContext,
    RsRecord,
    TokenFormat,
    TokenKey,
)
from keybound.tools.authz_server.database import StorageError

__all__ = [
    "ALL_TABLES",
    "SCHEMA_VERSION",
    "TRL_LEFT",
    "TRL_LISTED",
    "TRL_NONE",
    "check_schema",
    "client_from_rows",
    "clients_table",
    "config_version_table",
    "grants_table",
    "issuer_table",
    "meta_table",
    "metadata",
    "oscore_columns",
    "oscore_from_row",
    "oscore_sequences_table",
    "resource_server_from_rows",
    "resource_servers_table",
    "sequences_table",
    "token_from_row",
    "token_keys_table",
    "tokens_table",
    "trl_series_table",
    "trl_updates_table",
]

SCHEMA_VERSION: Final = 5
"""Bumped whenever a table or a stored format changes. An older database is migrated
in place by :func:`check_schema` (:data:`_MIGRATIONS`); a newer or unknown one is refused.

- 1 -> 2: tokens with a sequence-number ``cti`` (RFC 9200 §5.10.3) are recorded under
  ``AUDIENCE#SEQ`` with the decimal sequence number; version 1 used the integer value
  of the number's CBOR encoding, which differs from 24 on. Resource servers get an
  ``introspection_secret_hash`` column (empty: such an RS must be given an introspection
  secret before it can introspect over HTTP; its token key no longer serves as one).
- 2 -> 3: tokens get their RFC 9770 token hash (``token_hash``; empty for tokens issued
  before, which therefore never reach the token revocation list) and their place on it
  (``trl_state``); the TRL's updates and each requester's update collection get tables.
- 3 -> 4: clients and resource servers get a ``credential`` column: an EDHOC
  authentication credential (an encoded CCS, RFC 9528 §3.5.2), empty for the existing ones.
- 4 -> 5: the OSCORE Sender Sequence Numbers the AS's CoAP site reserved for each of its
  contexts (RFC 8613 Appendix B.1.1) get a table, ``keybound_oscore_sequences``; they were
  kept in a state directory with a file and a lock per context, which the site still reads
  once for a context the table does not have yet. A one-row ``keybound_config_version``
  counts the changes of clients, resource servers, grants and keys, so the records an
  AS process caches for issuing are dropped when another process changes them.
"""


# ---- schema ----------------------------------------------------------------------------------

metadata = MetaData()

#: keybound's own tables that other components may keep in the AS database.
DPOP_REPLAY_TABLE: Final = "keybound_dpop_jti"
COMPANION_TABLES: Final = frozenset({DPOP_REPLAY_TABLE})

meta_table = Table(
    "keybound_meta",
    metadata,
    Column("schema_version", Integer, nullable=False),
    Column("created", BigInteger, nullable=False),
)

issuer_table = Table(
    "keybound_issuer",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one issuer
    Column("issuer", String, nullable=False),
    Column("signing_key", LargeBinary, nullable=False),
    Column("created", BigInteger, nullable=False),
)

resource_servers_table = Table(
    "keybound_resource_servers",
    metadata,
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
    # The RS's password at HTTP /introspect, scrypt-hashed (tools.as_client_secrets);
    # distinct from its token key. NULL until one is made (databases of schema 1).
    Column("introspection_secret_hash", String),
    # The RS's EDHOC authentication credential (a CCS, public); NULL without one.
    Column("credential", LargeBinary),
)

token_keys_table = Table(
    "keybound_rs_token_keys",
    metadata,
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
sequences_table = Table(
    "keybound_rs_sequences",
    metadata,
    Column("audience", String, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

clients_table = Table(
    "keybound_clients",
    metadata,
    Column("client_id", String, primary_key=True),
    Column("secret_hash", String),
    Column("osc_master_secret", LargeBinary),
    Column("osc_master_salt", LargeBinary),
    Column("osc_sender_id", LargeBinary),
    Column("osc_recipient_id", LargeBinary),
    Column("osc_id_context", LargeBinary),
    Column("public_key", LargeBinary),
    Column("created", BigInteger, nullable=False),
    # The client's EDHOC authentication credential (a CCS, public); NULL without one.
    Column("credential", LargeBinary),
)

grants_table = Table(
    "keybound_client_grants",
    metadata,
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
tokens_table = Table(
    "keybound_tokens",
    metadata,
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
    # RFC 9770 §4: the hash of the token as issued, and whether it is on the TRL
    Column("token_hash", LargeBinary, index=True),
    Column("trl_state", Integer, nullable=False, server_default="0"),
)

#: ``trl_state`` of a token: never on the TRL, on it (revoked, not expired), left it
TRL_NONE: Final = 0
TRL_LISTED: Final = 1
TRL_LEFT: Final = 2

#: One row per change of the TRL (RFC 9770 §5.1): its id orders them for every AS process.
trl_updates_table = Table(
    "keybound_trl_updates",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
)

#: Each requester's update collection (RFC 9770 §6.2): ``seq`` counts the requester's
#: series items from 0 (its ``index`` is ``seq`` modulo MAX_INDEX + 1); hashes as hex.
trl_series_table = Table(
    "keybound_trl_series",
    metadata,
    Column("requester", String, primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column(
        "update_id",
        Integer,
        ForeignKey("keybound_trl_updates.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("removed", JSON, nullable=False),
    Column("added", JSON, nullable=False),
)

#: Per OSCORE context of the AS's CoAP site (by a fingerprint of its parameters): every
#: Sender Sequence Number at or above ``reserved`` is unused (RFC 8613 Appendix B.1.1).
#: Rows outlive their client: new keys make a new fingerprint, never an old number again.
oscore_sequences_table = Table(
    "keybound_oscore_sequences",
    metadata,
    Column("context", String(64), primary_key=True),
    Column("reserved", BigInteger, nullable=False),
)

#: One row: bumped in every transaction that changes the configuration (clients, RSs,
#: grants, keys, issuer), read by AS processes to know when their cached records are stale.
config_version_table = Table(
    "keybound_config_version",
    metadata,
    Column("version", BigInteger, nullable=False),
)

ALL_TABLES: Final = frozenset(metadata.tables)


def check_schema(engine: Engine, url: URL, *, create: bool) -> None:
    """Check the schema version of the database behind ``engine``; create the schema if asked.

    With ``create``, an empty database gets the tables and a ``keybound_meta`` row;
    without it an empty database is refused. Raises :class:`StorageError` for a
    database of a newer or unknown schema, one that holds tables but no
    ``keybound_meta``, or one that lacks tables.
    """
    where = url.render_as_string(hide_password=True)
    try:
        with engine.begin() as conn:
            # Tables keybound keeps beside the AS's own (the shared DPoP replay cache may be
            # created first) do not make the database foreign, nor non-empty.
            tables = set(inspect(conn).get_table_names()) - COMPANION_TABLES
            if not tables:
                if not create:
                    raise StorageError(f"{where} is empty: initialise it first (keybound as init)")
                metadata.create_all(conn)
                conn.execute(
                    insert(meta_table).values(
                        schema_version=SCHEMA_VERSION, created=int(time.time())
                    )
                )
                conn.execute(insert(config_version_table).values(version=0))
                return
            if meta_table.name not in tables:
                shown = ", ".join(sorted(tables)[:5])
                raise StorageError(
                    f"{where} holds tables ({shown}) but no keybound_meta: it is not a "
                    "keybound AS database, refusing to use it"
                )
            versions = conn.execute(select(meta_table.c.schema_version)).scalars().all()
    except DBAPIError as exc:
        raise StorageError(f"cannot use {where}: {exc.orig}") from None
    if len(versions) != 1:
        raise StorageError(f"{where}: keybound_meta holds {len(versions)} rows, expected 1")
    version = versions[0]
    if 1 <= version < SCHEMA_VERSION:
        _migrate(engine, where, version)
        version = SCHEMA_VERSION
        tables = set(inspect(engine).get_table_names()) - COMPANION_TABLES  # some are new
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
    missing = ALL_TABLES - tables
    if missing:
        raise StorageError(f"{where} lacks tables {sorted(missing)}: the database is damaged")


_COLUMNS_SINCE_3: Final = frozenset({"token_hash", "trl_state"})


def _rekey_sequenced_tokens(conn: Connection) -> None:
    """Schema 1 -> 2: record sequence-number tokens under their decimal sequence number."""
    # The columns of schema 2: later steps add the others.
    columns = [c for c in tokens_table.c if c.name not in _COLUMNS_SINCE_3]
    rows = conn.execute(select(*columns).where(tokens_table.c.sequence.is_not(None))).all()
    if not rows:
        return
    # Delete first, then insert: an old key may equal the new key of another token.
    conn.execute(delete(tokens_table).where(tokens_table.c.sequence.is_not(None)))
    conn.execute(
        insert(tokens_table),
        [
            {
                **row._asdict(),
                "cti": sequence_record_cti(row.audience, int(row.sequence)),
            }
            for row in rows
        ],
    )


def _migrate_1_to_2(conn: Connection) -> None:
    _rekey_sequenced_tokens(conn)
    conn.execute(
        text(
            f"ALTER TABLE {resource_servers_table.name} "
            "ADD COLUMN introspection_secret_hash VARCHAR"
        )
    )


def _migrate_2_to_3(conn: Connection) -> None:
    blob = LargeBinary().compile(dialect=conn.dialect)
    conn.execute(text(f"ALTER TABLE {tokens_table.name} ADD COLUMN token_hash {blob}"))
    conn.execute(
        text(f"ALTER TABLE {tokens_table.name} ADD COLUMN trl_state INTEGER NOT NULL DEFAULT 0")
    )
    for index in tokens_table.indexes:
        if "token_hash" in index.columns:
            index.create(conn)
    metadata.create_all(conn, tables=[trl_updates_table, trl_series_table])


def _migrate_3_to_4(conn: Connection) -> None:
    blob = LargeBinary().compile(dialect=conn.dialect)
    for table in (clients_table, resource_servers_table):
        conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN credential {blob}"))


def _migrate_4_to_5(conn: Connection) -> None:
    metadata.create_all(conn, tables=[oscore_sequences_table, config_version_table])
    conn.execute(insert(config_version_table).values(version=0))


#: The step from each schema version to the next, run in one transaction.
_MIGRATIONS: Final[dict[int, Callable[[Connection], None]]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
}


def _migrate(engine: Engine, where: str, version: int) -> None:
    """Bring a database of schema ``version`` to :data:`SCHEMA_VERSION`, all steps or none."""
    try:
        with engine.begin() as conn:
            current = conn.execute(
                select(meta_table.c.schema_version).with_for_update()
            ).scalar_one()
            # Another process may have migrated meanwhile.
            for step in range(current, SCHEMA_VERSION):
                _MIGRATIONS[step](conn)
            conn.execute(update(meta_table).values(schema_version=SCHEMA_VERSION))
    except DBAPIError as exc:
        raise StorageError(
            f"cannot migrate {where} from schema version {version}: {exc.orig}"
        ) from None


# ---- row conversion --------------------------------------------------------------------------


def oscore_columns(context: OscoreContext | None) -> dict[str, bytes | None]:
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


def oscore_from_row(row: Row[Any]) -> OscoreContext | None:
    if row.osc_master_secret is None:
        return None
    return OscoreContext(
        master_secret=bytes(row.osc_master_secret),
        sender_id=bytes(row.osc_sender_id),
        recipient_id=bytes(row.osc_recipient_id),
        master_salt=bytes(row.osc_master_salt or b""),
        id_context=None if row.osc_id_context is None else bytes(row.osc_id_context),
    )


def resource_server_from_rows(row: Row[Any], keys: Sequence[Row[Any]]) -> RsRecord:
    return RsRecord(
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
        introspection_context=oscore_from_row(row),
        created=row.created,
        credential=None if row.credential is None else bytes(row.credential),
    )


def client_from_rows(row: Row[Any], grants: Sequence[Row[Any]]) -> Client:
    return Client(
        client_id=row.client_id,
        has_secret=row.secret_hash is not None,
        oscore=oscore_from_row(row),
        public_key=None if row.public_key is None else bytes(row.public_key),
        grants={g.audience: tuple(g.scopes) for g in sorted(grants, key=lambda g: g.audience)},
        created=row.created,
        credential=None if row.credential is None else bytes(row.credential),
    )


def token_from_row(row: Row[Any]) -> IssuedToken:
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
        token_hash=None if row.token_hash is None else bytes(row.token_hash),
    )
