"""The AS's issuing writes on one dedicated driver connection, with fixed SQL.

Every token the AS issues is recorded before it is answered, and a resource server
without a clock also costs one ``exi`` sequence number, committed before it is used
(RFC 9200 §5.10.3). Through SQLAlchemy each such transaction took about as much CPU
again as the commit itself (events, execution contexts, result objects). These two
writes therefore skip it: :class:`HotPath` keeps one DBAPI connection from the
store's engine (so it has the engine's SQLite pragmas: WAL, ``synchronous=FULL``,
foreign keys, the busy timeout) and runs two statements fixed at start-up, written
out in this module, on the driver itself: the stdlib ``sqlite3`` module, whose
statement cache keeps them prepared, or psycopg 3, which prepares them on the server
(``prepare=True``).

The rows of a group commit, or an ``exi`` number, are one statement run in the
driver's autocommit mode (SQLite's implicit transaction, psycopg's ``autocommit``):
one ``INSERT`` with a ``VALUES`` list of every row (:func:`insert_sql`, kept per row
count), no ``BEGIN`` and ``COMMIT`` round trips. A statement is atomic: when one row
fails (a ``cti`` on record already) none of them is written. A lone write statement
takes SQLite's write lock at once, so it cannot fail on a lock upgrade. Where the
statement would bind more values than the driver takes
(:data:`MAX_BOUND_VALUES`, SQLite's own limit when lower), the rows are one
transaction of single-row ``INSERT`` statements instead, ``BEGIN IMMEDIATE`` on SQLite
as the store's other writes.

Durability is the store's as before: a write returns only once its transaction is
committed; a failed one is rolled back and raises, having written nothing; a
PostgreSQL connection found broken is dropped, and the next write takes a new one. One
write at a time (a lock): SQLite takes one writer at a time anyway, and queueing here
costs no busy-timeout sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from keybound.core.authz_store import DuplicateRecord, IssuedToken
from keybound.tools.authz_server.database import StorageError

if TYPE_CHECKING:
    from sqlalchemy.pool import PoolProxiedConnection

__all__ = [
    "MAX_BOUND_VALUES",
    "NEXT_SEQUENCE_SQL",
    "RECORD_INSERT_SQL",
    "TOKEN_COLUMNS",
    "HotPath",
    "insert_sql",
    "token_row",
]

#: The columns a token record is inserted with, in order (``trl_state`` takes its default).
TOKEN_COLUMNS: Final = (
    "cti",
    "client_id",
    "audience",
    "scope",
    "format",
    "iat",
    "exp",
    "exi",
    "sequence",
    "cnf_id",
    "revoked",
    "revoked_at",
    "token_hash",
)


def token_row(token: IssuedToken) -> tuple[object, ...]:
    """The values of ``token``'s record, in :data:`TOKEN_COLUMNS` order."""
    return (
        token.cti,
        token.client_id,
        token.audience,
        token.scope,
        token.format,
        token.iat,
        token.exp,
        token.exi,
        token.sequence,
        token.cnf_id,
        token.revoked,
        token.revoked_at,
        token.token_hash,
    )


#: The token record's INSERT (``?`` the stdlib ``sqlite3`` placeholder; ``%s`` for psycopg).
RECORD_INSERT_SQL: Final = (
    "INSERT INTO keybound_tokens (cti, client_id, audience, scope, format, iat, exp, exi,"
    " sequence, cnf_id, revoked, revoked_at, token_hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Values one multi-row ``INSERT`` binds at most (PostgreSQL's protocol takes 65,535;
#: SQLite's limit is read from the connection, 32,766 by default since 3.32).
MAX_BOUND_VALUES: Final = 32_766


def insert_sql(rows: int, placeholder: str = "?") -> str:
    """The token records' ``INSERT`` for ``rows`` rows: one ``VALUES`` list of them all."""
    if rows < 1:
        raise ValueError("at least one row")
    head, _, values = RECORD_INSERT_SQL.partition(" VALUES ")
    return f"{head} VALUES {', '.join([values] * rows)}".replace("?", placeholder)


#: The next sequence number of an audience that has a resource server (RFC 9200 §5.10.3).
NEXT_SEQUENCE_SQL: Final = (
    "UPDATE keybound_rs_sequences SET value = value + 1 WHERE audience = ?"
    " AND EXISTS (SELECT 1 FROM keybound_resource_servers WHERE audience = ?)"
    " RETURNING value"
)


def _flat(tokens: Sequence[IssuedToken]) -> tuple[object, ...]:
    """The values of every record of ``tokens``, row after row, for :func:`insert_sql`."""
    values: list[object] = []
    for token in tokens:
        values += token_row(token)
    return tuple(values)


class HotPath:
    """Token rows and sequence numbers, each call one committed transaction, on a
    connection of its own taken from ``engine`` when first needed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        #: the driver's module (``sqlite3``, ``psycopg``): its PEP 249 error classes
        self._dbapi: Any = engine.dialect.dbapi
        placeholder = "?" if self._sqlite else "%s"
        self._placeholder = placeholder
        self._insert = RECORD_INSERT_SQL.replace("?", placeholder)
        self._bump = NEXT_SEQUENCE_SQL.replace("?", placeholder)
        self._lock = threading.Lock()
        self._fairy: PoolProxiedConnection | None = None
        #: the multi-row ``INSERT`` by row count (at most as many as a batch has rows)
        self._inserts: dict[int, str] = {1: self._insert}
        self._max_values = MAX_BOUND_VALUES

    def insert_tokens(self, tokens: Sequence[IssuedToken]) -> None:
        """Insert the records of ``tokens`` in one transaction: all committed, or none."""
        count = len(tokens)
        if not count:
            return
        if self._fairy is None:  # the first write: the connection tells its limit
            with self._lock:
                self._connection()
        if count * len(TOKEN_COLUMNS) <= self._max_values:
            sql = self._inserts.get(count)
            if sql is None:
                sql = self._inserts.setdefault(count, insert_sql(count, self._placeholder))
            values = token_row(tokens[0]) if count == 1 else _flat(tokens)
            self._statement(sql, values)
            return
        rows = [token_row(token) for token in tokens]
        with self._lock:
            raw = self._connection()
            with self._errors(raw):
                if self._sqlite:
                    # take the write lock up front, as every write transaction of the store
                    raw.execute("BEGIN IMMEDIATE")
                    raw.executemany(self._insert, rows)
                    raw.execute("COMMIT")
                else:
                    with raw.transaction(), raw.cursor() as cursor:
                        cursor.executemany(self._insert, rows)

    def next_sequence(self, audience: str) -> int | None:
        """``audience``'s counter plus one, committed; ``None`` for an unknown audience."""
        found = self._statement(self._bump, (audience, audience))
        return None if found is None else int(found[0])

    def _statement(self, sql: str, params: tuple[object, ...]) -> Any:
        """Run one statement as a transaction of its own (the driver in autocommit mode:
        the statement is committed when it returns) and return its first row, if any."""
        with self._lock:
            raw = self._connection()
            with self._errors(raw):
                if self._sqlite:
                    # every row read: the statement runs to its end, which commits it
                    rows = raw.execute(sql, params).fetchall()
                    return rows[0] if rows else None
                with raw.cursor() as cursor:
                    cursor.execute(sql, params, prepare=True)
                    return cursor.fetchone() if cursor.description else None

    def settings(self) -> dict[str, object]:
        """What the kept connection commits with: on SQLite its ``synchronous``,
        ``journal_mode`` and ``foreign_keys`` pragmas, on PostgreSQL its
        ``synchronous_commit``, whether it is in autocommit mode and its server process
        id (``backend_pid``)."""
        with self._lock:
            raw = self._connection()
            if self._sqlite:
                return {
                    name: raw.execute(f"PRAGMA {name}").fetchone()[0]
                    for name in ("synchronous", "journal_mode", "foreign_keys")
                }
            with raw.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                found = cursor.fetchone()
            return {
                "synchronous_commit": found[0],
                "autocommit": raw.autocommit,
                "backend_pid": raw.info.backend_pid,
            }

    def _connection(self) -> Any:
        """The kept DBAPI connection, in autocommit mode (taken from the engine if there
        is none); under the lock."""
        if self._fairy is None:
            try:
                fairy = self._engine.raw_connection()
            except DBAPIError as exc:
                raise StorageError(f"database error: {exc.orig}") from None
            if self._sqlite:
                driver_sqlite: Any = fairy.driver_connection
                limit = driver_sqlite.getlimit(self._dbapi.SQLITE_LIMIT_VARIABLE_NUMBER)
                self._max_values = min(MAX_BOUND_VALUES, limit)
            else:
                # each statement its own transaction; the engine's SQLite connections are
                # so already (``isolation_level = None``, :mod:`.database`)
                driver: Any = fairy.driver_connection
                driver.autocommit = True
            self._fairy = fairy
        return self._fairy.driver_connection

    @contextmanager
    def _errors(self, raw: Any) -> Iterator[None]:
        """The store's errors for the driver's, after rolling back what is open."""
        try:
            yield
        except self._dbapi.IntegrityError as exc:
            self._roll_back(raw)
            raise DuplicateRecord(
                f"conflicts with an existing record or a concurrent change: {exc}"
            ) from None
        except self._dbapi.Error as exc:
            self._roll_back(raw)
            raise StorageError(f"database error: {exc}") from None
        except BaseException:
            self._roll_back(raw)
            raise

    def _roll_back(self, raw: Any) -> None:
        """End what the failed statements left open; a connection that cannot is dropped.
        (psycopg's ``transaction()`` block has rolled back already.)"""
        try:
            if self._sqlite and raw.in_transaction:
                raw.execute("ROLLBACK")
        except Exception:
            self._drop()
            return
        if not self._sqlite and (raw.closed or raw.broken):
            self._drop()

    def _drop(self) -> None:
        fairy, self._fairy = self._fairy, None
        if fairy is not None:
            fairy.invalidate()

    def close(self) -> None:
        """Give the SQLite connection back to the engine's pool; close the PostgreSQL
        one (it is in autocommit mode, which the engine's other users do not expect)."""
        with self._lock:
            if self._sqlite and self._fairy is not None:
                fairy, self._fairy = self._fairy, None
                fairy.close()
            else:
                self._drop()
