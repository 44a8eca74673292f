"""The issuing writes on the driver's own connection (:mod:`keybound.tools.authz_server.hot_path`).

Every test that takes ``db_url`` runs on an SQLite file and on a PostgreSQL schema
(when ``KEYBOUND_TEST_PG_URL`` is set). The reference for the rows is the SQLAlchemy
``INSERT`` of the token table that the store ran before: the same records must give the
same rows, value for value and, on SQLite, storage class for storage class.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import exists, insert, select, text, update

from keybound.core.authz_store import DuplicateRecord, IssuedToken
from keybound.tools.authz_server.database import StorageError
from keybound.tools.authz_server.hot_path import (
    NEXT_SEQUENCE_SQL,
    RECORD_INSERT_SQL,
    TOKEN_COLUMNS,
    HotPath,
    insert_sql,
    token_row,
)
from keybound.tools.authz_server.schema import (
    resource_servers_table,
    sequences_table,
    tokens_table,
)
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import provision

NOW = 1_700_000_000
AUDIENCE = "coap://gw.example"
NO_CLOCK = "coap://sensor.example"
TOKEN_KEY = bytes.fromhex("a3010404410120") + b"\x50" + bytes(range(16))


@pytest.fixture
def store(db_url: str) -> Iterator[SqlAuthzStore]:
    with SqlAuthzStore.init(db_url) as opened:
        for name, audience, clock in (("gw", AUDIENCE, True), ("door", NO_CLOCK, False)):
            opened.add_resource_server(
                name,
                audience,
                scopes=["read"],
                token_key=TOKEN_KEY,
                token_kid=b"k1",
                has_clock=clock,
                now=NOW,
            )
        yield opened


@pytest.fixture
def sqlite_hot(tmp_path: Path) -> Iterator[tuple[SqlAuthzStore, HotPath]]:
    """A store on an SQLite file and a :class:`HotPath` of its engine."""
    with SqlAuthzStore.init(f"sqlite:///{tmp_path / 'as.db'}") as store:
        hot = HotPath(store.engine)
        try:
            yield store, hot
        finally:
            hot.close()


def _records(prefix: bytes) -> list[IssuedToken]:
    """Records with every field given, left empty, large and small."""
    return [
        IssuedToken(
            cti=prefix + b"\x01",
            client_id="dev",
            audience=AUDIENCE,
            scope="read",
            format="cwt",
            iat=NOW,
            exp=NOW + 3600,
            cnf_id=b"\xaa" * 32,
            token_hash=b"\x01" * 32,
        ),
        IssuedToken(
            cti=prefix + b"\x02",
            client_id="dev-2",
            audience=NO_CLOCK,
            scope="read write",
            format="cwt",
            iat=NOW,
            exi=600,
            sequence=2**40,
        ),
        IssuedToken(
            cti=prefix + b"\x03",
            client_id="web",
            audience=AUDIENCE,
            scope="read",
            format="jwt",
            iat=2**62,
            exp=2**62 + 1,
            revoked=True,
            revoked_at=NOW + 5,
        ),
    ]


def _rows(store: SqlAuthzStore, prefix: bytes) -> list[tuple[Any, ...]]:
    """The stored rows of the records whose ``cti`` starts with ``prefix``, ``cti`` without
    it; on SQLite each value with its storage class."""
    columns = [c for c in tokens_table.c if c.name != "cti"]
    sqlite = store.engine.dialect.name == "sqlite"
    with store.engine.connect() as conn:
        rows = conn.execute(select(tokens_table).order_by(tokens_table.c.cti)).all()
        kinds: dict[bytes, tuple[Any, ...]] = {}
        if sqlite:
            typeof = ", ".join(f"typeof({c.name})" for c in columns)
            for found in conn.execute(text(f"SELECT cti, {typeof} FROM keybound_tokens")):
                kinds[bytes(found[0])] = tuple(found[1:])
    return [
        (
            bytes(row.cti)[len(prefix) :],
            *(getattr(row, c.name) for c in columns),
            *kinds.get(bytes(row.cti), ()),
        )
        for row in rows
        if bytes(row.cti).startswith(prefix)
    ]


def test_the_fixed_insert_names_every_column_but_the_defaulted_one() -> None:
    assert tuple(c.name for c in tokens_table.c if c.name != "trl_state") == TOKEN_COLUMNS
    listed = RECORD_INSERT_SQL.split("(", 1)[1].split(")", 1)[0]
    assert tuple(name.strip() for name in listed.split(",")) == TOKEN_COLUMNS
    assert RECORD_INSERT_SQL.count("?") == len(TOKEN_COLUMNS)
    assert NEXT_SEQUENCE_SQL.count("?") == 2
    record = _records(b"")[0]
    assert token_row(record) == tuple(getattr(record, name) for name in TOKEN_COLUMNS)


def test_rows_are_those_the_sqlalchemy_insert_wrote(store: SqlAuthzStore) -> None:
    reference = _records(b"R")
    with store.engine.begin() as conn:  # the store's INSERT before the fixed SQL
        conn.execute(
            insert(tokens_table),
            [dict(zip(TOKEN_COLUMNS, token_row(t), strict=True)) for t in reference],
        )
    store.record_tokens(_records(b"H")[:1])  # one row alone, as one request commits it
    store.record_tokens(_records(b"H")[1:])  # several in one transaction
    assert len(_rows(store, b"R")) == 3
    assert _rows(store, b"H") == _rows(store, b"R")
    for record in _records(b"H"):
        assert store.get_token(record.cti) == record


def test_the_multi_row_insert_lists_one_values_tuple_per_row() -> None:
    assert insert_sql(1) == RECORD_INSERT_SQL
    three = insert_sql(3, "%s")
    assert three.startswith(RECORD_INSERT_SQL.split(" VALUES ")[0] + " VALUES (")
    assert three.count("%s") == 3 * len(TOKEN_COLUMNS)
    assert "?" not in three
    assert three.count("), (") == 2
    with pytest.raises(ValueError, match="one row"):
        insert_sql(0)


def test_the_rows_of_a_group_commit_are_one_statement(
    sqlite_hot: tuple[SqlAuthzStore, HotPath],
) -> None:
    """One ``INSERT`` in autocommit mode: no ``BEGIN`` and ``COMMIT`` around it."""
    store, hot = sqlite_hot
    hot.insert_tokens(_records(b"W")[:1])  # the connection made first
    ran: list[str] = []
    hot._connection().set_trace_callback(ran.append)
    hot.insert_tokens(_records(b"S"))
    assert len(ran) == 1
    assert ran[0].startswith("INSERT INTO keybound_tokens")
    assert ran[0].count("), (") == 2
    hot._connection().set_trace_callback(None)
    assert {store.get_token(r.cti) for r in _records(b"S")} == set(_records(b"S"))


def test_rows_past_the_drivers_bound_values_are_one_transaction(
    sqlite_hot: tuple[SqlAuthzStore, HotPath],
) -> None:
    """Where SQLite binds fewer values than the rows need, the rows are still written
    in one transaction, every row or none."""
    store, hot = sqlite_hot
    raw = hot._connection()
    raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 2 * len(TOKEN_COLUMNS))
    hot._max_values = 2 * len(TOKEN_COLUMNS)  # as read from a connection so set
    first, second, third = _records(b"L")
    hot.insert_tokens([second])
    with pytest.raises(DuplicateRecord):
        hot.insert_tokens([first, second, third])
    assert store.get_token(first.cti) is None
    assert store.get_token(third.cti) is None
    ran: list[str] = []
    raw.set_trace_callback(ran.append)
    hot.insert_tokens([first, third, *_records(b"M")])
    raw.set_trace_callback(None)
    assert ran[0] == "BEGIN IMMEDIATE"
    assert ran[-1] == "COMMIT"
    assert store.get_token(first.cti) == first
    assert store.get_token(_records(b"M")[2].cti) == _records(b"M")[2]


def test_the_bound_is_read_from_the_sqlite_connection(
    sqlite_hot: tuple[SqlAuthzStore, HotPath],
) -> None:
    _store, hot = sqlite_hot
    hot.insert_tokens(_records(b"B")[:1])
    raw = hot._connection()
    assert hot._max_values == min(32_766, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))


def test_a_recorded_token_is_committed_when_the_call_returns(
    store: SqlAuthzStore, db_url: str
) -> None:
    record = _records(b"C")[0]
    with SqlAuthzStore.open(db_url) as other:  # another connection, another process alike
        store.record_token(record)
        assert other.get_token(record.cti) == record


def test_a_failing_row_leaves_none_of_its_transaction(store: SqlAuthzStore) -> None:
    first, second, third = _records(b"F")
    store.record_token(second)
    with pytest.raises(DuplicateRecord):
        store.record_tokens([first, second, third])  # the middle row is on record already
    assert store.get_token(first.cti) is None
    assert store.get_token(third.cti) is None
    store.record_tokens([first, third])  # the connection is usable after the rollback
    assert store.get_token(first.cti) == first


def test_sequence_numbers_share_the_connection_with_token_rows(
    store: SqlAuthzStore, db_url: str
) -> None:
    assert store.next_sequence(NO_CLOCK) == 1
    store.record_token(_records(b"S")[1])
    assert store.next_sequence(NO_CLOCK) == 2
    with SqlAuthzStore.open(db_url) as other:
        assert other.next_sequence(NO_CLOCK) == 3  # committed: the other store sees 2
    assert store.next_sequence(NO_CLOCK) == 4


def _sqlalchemy_next_sequence(store: SqlAuthzStore, audience: str) -> int | None:
    """The store's sequence statement before the fixed SQL, through SQLAlchemy."""
    registered = exists().where(resource_servers_table.c.audience == audience)
    with store.engine.begin() as conn:
        value = conn.execute(
            update(sequences_table)
            .where(sequences_table.c.audience == audience, registered)
            .values(value=sequences_table.c.value + 1)
            .returning(sequences_table.c.value)
        ).scalar_one_or_none()
    return None if value is None else int(value)


def _counter(store: SqlAuthzStore, audience: str) -> int:
    with store.engine.connect() as conn:
        query = select(sequences_table.c.value).where(sequences_table.c.audience == audience)
        return int(conn.execute(query).scalar_one())


def test_sequence_numbers_are_those_the_sqlalchemy_update_gave(store: SqlAuthzStore) -> None:
    hot = HotPath(store.engine)
    try:
        taken = [
            hot.next_sequence(NO_CLOCK) if i % 2 else _sqlalchemy_next_sequence(store, NO_CLOCK)
            for i in range(10)
        ]
        assert taken == list(range(1, 11))  # one counter, whichever statement moves it
        # A removed RS keeps its counter row; neither statement moves it or gives a number.
        store.remove_resource_server("door")
        assert _sqlalchemy_next_sequence(store, NO_CLOCK) is None
        assert hot.next_sequence(NO_CLOCK) is None
        assert _counter(store, NO_CLOCK) == 10
        assert hot.next_sequence("coap://nobody.example") is None
        assert _sqlalchemy_next_sequence(store, "coap://nobody.example") is None
    finally:
        hot.close()


def test_an_unknown_audience_gets_no_number_and_none_is_made(store: SqlAuthzStore) -> None:
    hot = HotPath(store.engine)
    try:
        assert hot.next_sequence("coap://nobody.example") is None
        assert hot.next_sequence(NO_CLOCK) == 1
    finally:
        hot.close()


def test_the_sqlite_connection_commits_with_synchronous_full(tmp_path: Path) -> None:
    with SqlAuthzStore.init(f"sqlite:///{tmp_path / 'as.db'}") as store:
        hot = HotPath(store.engine)
        try:
            hot.insert_tokens(_records(b"P")[:1])
            settings = hot.settings()
        finally:
            hot.close()
    assert settings == {"synchronous": 2, "journal_mode": "wal", "foreign_keys": 1}


def test_the_postgresql_connection_commits_synchronously(pg_url: str) -> None:
    with SqlAuthzStore.init(pg_url) as store:
        hot = HotPath(store.engine)
        try:
            settings = hot.settings()
        finally:
            hot.close()
    # each statement alone is committed when it returns; several rows, in one transaction
    assert settings["synchronous_commit"] == "on"
    assert settings["autocommit"] is True


def test_a_lost_postgresql_connection_fails_its_write_and_the_next_one_reconnects(
    pg_url: str,
) -> None:
    with SqlAuthzStore.init(pg_url) as store:
        first, second, third = _records(b"L")
        hot = HotPath(store.engine)  # the store's own, seen from outside
        try:
            hot.insert_tokens([first])
            pid = hot.settings()["backend_pid"]
            with store.engine.begin() as conn:
                ended = conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                assert ended.scalar_one() is True
            with pytest.raises(StorageError, match="database error"):
                hot.insert_tokens([second])
            hot.insert_tokens([third])  # a new connection for the next rows
            assert hot.settings()["backend_pid"] != pid
        finally:
            hot.close()
        assert store.get_token(first.cti) == first
        assert store.get_token(second.cti) is None
        assert store.get_token(third.cti) == third


#: A child AS process: 4 threads issue tokens for the clock RS ``temp`` and the no-clock
#: RS ``door`` through AuthzService and print each token's ``cti`` (hex) and ``exi``
#: number (or -) once ``issue_token`` has returned it, that is, once it may be answered.
_ISSUER = r"""
import os, sys, threading
from keybound.coap.authz_service import AuthzService
from keybound.core.authz_server import TokenRequest
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.storage import SqlAuthzStore

store = SqlAuthzStore.open(sys.argv[1])
service = AuthzService(store, as_config(store))
lock = threading.Lock()

def issue(audience, scope):
    request = TokenRequest(client_id="sensor-1", audience=audience, scope=scope)
    while True:
        record = service.issue_token(request, now=1_700_000_000, random_bytes=os.urandom).record
        line = f"{record.cti.hex()} {'-' if record.sequence is None else record.sequence}\n"
        with lock:
            os.write(1, line.encode())  # one write per line: a kill cannot cut a line in two

kinds = [("temp", "read"), ("door", "open")] * 2
threads = [threading.Thread(target=issue, args=kind) for kind in kinds]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def test_every_token_answered_before_a_kill_is_on_record(db_url: str) -> None:
    provision(db_url)["store"].close()
    process = subprocess.Popen(
        [sys.executable, "-c", _ISSUER, db_url], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(300)]  # several commits of each kind
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    lines += process.stdout.read().splitlines(keepends=True)
    process.stdout.close()
    issued = [line.split() for line in lines if line.endswith("\n")]  # whole lines only
    numbers = [int(seq) for _, seq in issued if seq != "-"]
    assert numbers  # both kinds were issued
    assert len(numbers) < len(issued)
    with SqlAuthzStore.open(db_url) as store:
        for cti, _ in issued:
            assert store.get_token(bytes.fromhex(cti)) is not None, cti
        assert store.next_sequence("door") > max(numbers)  # none of them is handed out again
    assert len(set(numbers)) == len(numbers)
