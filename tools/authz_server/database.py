"""Where the Authorization Server's database lives, and how it is opened.

By default the AS keeps an SQLite file, ``keybound-as.db`` in the user's data
directory, created 0600 because it holds keys. Give a URL
(``sqlite:///path/to/as.db`` or ``postgresql+psycopg://user@host/db``) to put
it elsewhere; several AS processes may share one PostgreSQL database, or one
SQLite file on one machine.

SQLite runs in WAL mode with a busy timeout and ``synchronous = FULL``, and write
transactions start with ``BEGIN IMMEDIATE`` so two writers queue instead of
failing on a lock upgrade; a connection given the :data:`READ_ONLY` execution
option starts a plain ``BEGIN``. The tables and the records they hold are in
:mod:`keybound.tools.authz_server.schema`,
the store itself in :mod:`keybound.tools.authz_server.storage`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import platformdirs
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from keybound.core.authz_store import AuthzStoreError

__all__ = [
    "DEFAULT_DATABASE_NAME",
    "READ_ONLY",
    "StorageError",
    "build_engine",
    "default_database_path",
    "resolve_database_url",
]

DEFAULT_DATABASE_NAME: Final = "keybound-as.db"

_SQLITE_BUSY_TIMEOUT_S: Final = 30.0
READ_ONLY: Final = "keybound_read_only"
"""Execution option of a connection whose transactions only read (SQLite: ``BEGIN``)."""


class StorageError(AuthzStoreError):
    """The database cannot be used: wrong schema, not a keybound database, unreachable."""


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


def _create_private_file(path: Path, *, make_parents: bool) -> None:
    """Create ``path`` 0600 unless it exists; missing parents 0700 only with ``make_parents``."""
    if not path.parent.is_dir():
        if not make_parents:
            raise StorageError(
                f"cannot create the database {path}: the directory {path.parent} does not exist"
            )
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)  # in case the umask took more than it should


def build_engine(
    url: URL, *, echo: bool, create: bool = True, make_parents: bool = False
) -> Engine:
    """An engine for ``url``; an SQLite file gets the pragmas above.

    With ``create``, a missing SQLite file is created 0600 (in an existing
    directory, or also its missing parents with ``make_parents``); without it a
    missing file is a :class:`StorageError`, and nothing is created.
    """
    if url.get_backend_name() != "sqlite":
        try:
            return create_engine(
                url,
                echo=echo,
                hide_parameters=True,  # parameters include keys: keep them out of errors and logs
                pool_pre_ping=True,
            )
        except ImportError:
            raise StorageError(
                f"{url.get_backend_name()} needs the psycopg driver: install keybound[postgres]"
            ) from None
    path = _sqlite_file(url)
    if path is not None:
        if create:
            _create_private_file(path, make_parents=make_parents)
        elif not path.is_file():
            raise StorageError(f"no AS database at {path}: create it with `keybound as init`")
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
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            # Take the write lock up front: a deferred transaction that reads, then
            # writes, fails at once with "database is locked" when another writer won.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)
    return engine
