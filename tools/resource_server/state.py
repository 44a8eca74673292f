"""The RS's durable state in one SQLite file (mode 0600).

Implements :class:`keybound.coap.state_writer.RsStateStore`: stored tokens with
the nonces and identifiers of their OSCORE contexts (enough to re-derive them,
RFC 9203 §4.3), each context's Sender Sequence Number high-water mark (written
ahead, RFC 8613 Appendix B.1.1), and the exi sequence number high-water mark
(RFC 9200 §5.10.3). Every write is committed with ``synchronous=FULL`` before the
call returns; the RS makes these calls on one worker thread
(:class:`keybound.coap.state_writer.StateWriter`), never on its event loop.

Replay windows are stored only by a clean shutdown (RFC 8613 Appendix B.1.2): the
``shutdown_windows`` table receives each context's window and exact next Sender
Sequence Number, and the ``clean_shutdown`` marker is written in the same
transaction. Startup removes both before anything is served, so a crash later in
that run leaves no marker: the next start rebuilds the windows through Echo and
resumes the Sender Sequence Numbers at the written-ahead marks. A state file of
an earlier version, without the table, gains it when opened; its tokens are kept.

The file holds the tokens, and so the OSCORE Master Secrets inside them (encrypted
under the AS-RS key): it is created readable by its owner only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from keybound.core.token_store import (
    PersistedContext,
    PersistedReplayWindow,
    PersistedState,
    ShutdownRecord,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contexts (
    key_id BLOB PRIMARY KEY,
    token BLOB NOT NULL,
    nonce1 BLOB NOT NULL,
    nonce2 BLOB NOT NULL,
    client_id BLOB NOT NULL,
    server_id BLOB NOT NULL,
    received_at INTEGER,
    sender_mark INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS marks (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shutdown_windows (
    key_id BLOB PRIMARY KEY,
    replay_index INTEGER,
    replay_bitfield INTEGER,
    replay_size INTEGER,
    sender_next INTEGER NOT NULL
);
"""
_EXI_MARK = "exi_sequence"
_CLEAN_SHUTDOWN = "clean_shutdown"


class SqliteRsState:
    """:class:`~keybound.coap.state_writer.RsStateStore` over a SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the RS state store is closed")
        return self._db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def load(self) -> PersistedState:
        clean = (
            self.db.execute("SELECT value FROM marks WHERE name = ?", (_CLEAN_SHUTDOWN,)).fetchone()
            is not None
        )
        saved: dict[bytes, ShutdownRecord] = {}
        if clean:
            for row in self.db.execute(
                "SELECT key_id, replay_index, replay_bitfield, replay_size, sender_next "
                "FROM shutdown_windows"
            ).fetchall():
                record = _shutdown_record(row)
                if record is not None:
                    saved[record.key_id] = record
        rows = self.db.execute(
            "SELECT key_id, token, nonce1, nonce2, client_id, server_id, received_at, "
            "sender_mark FROM contexts"
        ).fetchall()
        contexts = tuple(
            PersistedContext(
                key_id=bytes(r[0]),
                token=bytes(r[1]),
                nonce1=bytes(r[2]),
                nonce2=bytes(r[3]),
                client_id=bytes(r[4]),
                server_id=bytes(r[5]),
                received_at=r[6],
                sender_mark=int(r[7]),
                shutdown=saved.get(bytes(r[0])),
            )
            for r in rows
        )
        mark = self.db.execute("SELECT value FROM marks WHERE name = ?", (_EXI_MARK,)).fetchone()
        return PersistedState(contexts, None if mark is None else int(mark[0]), clean)

    def put_context(self, record: PersistedContext) -> None:
        """Store a context; a window saved for an earlier context of the key is dropped."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO contexts (key_id, token, nonce1, nonce2, client_id, "
                "server_id, received_at, sender_mark) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.key_id,
                    record.token,
                    record.nonce1,
                    record.nonce2,
                    record.client_id,
                    record.server_id,
                    record.received_at,
                    record.sender_mark,
                ),
            )
            db.execute("DELETE FROM shutdown_windows WHERE key_id = ?", (record.key_id,))

    def delete_context(self, key_id: bytes) -> None:
        self.delete_contexts([key_id])

    def delete_contexts(self, key_ids: Sequence[bytes]) -> None:
        """Delete the contexts of all ``key_ids`` in one transaction (one commit)."""
        rows = [(key_id,) for key_id in key_ids]
        if not rows:
            return
        with self._transaction() as db:
            db.executemany("DELETE FROM contexts WHERE key_id = ?", rows)
            db.executemany("DELETE FROM shutdown_windows WHERE key_id = ?", rows)

    def put_sender_mark(self, key_id: bytes, mark: int) -> None:
        self.db.execute(
            "UPDATE contexts SET sender_mark = ? WHERE key_id = ? AND sender_mark < ?",
            (mark, key_id, mark),
        )

    def put_exi_sequence_mark(self, mark: int) -> None:
        self.db.execute(
            "INSERT INTO marks (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (_EXI_MARK, _to_sql(mark)),
        )

    def save_clean_shutdown(self, records: Iterable[ShutdownRecord]) -> None:
        """Replace the saved windows by ``records`` and write the marker, in one transaction.

        The marker is written after the windows, so it is never present without
        them (RFC 8613 Appendix B.1.2).
        """
        rows = [_shutdown_row(record) for record in records]
        with self._transaction() as db:
            db.execute("DELETE FROM shutdown_windows")
            db.executemany(
                "INSERT OR REPLACE INTO shutdown_windows (key_id, replay_index, "
                "replay_bitfield, replay_size, sender_next) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            db.execute(
                "INSERT INTO marks (name, value) VALUES (?, 1) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (_CLEAN_SHUTDOWN,),
            )

    def clear_clean_shutdown(self) -> None:
        """Remove the marker and the saved windows: they describe the previous run only."""
        with self._transaction() as db:
            db.execute("DELETE FROM marks WHERE name = ?", (_CLEAN_SHUTDOWN,))
            db.execute("DELETE FROM shutdown_windows")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _to_sql(mark: int) -> int:
    if not 0 <= mark < 2**63:
        raise ValueError("exi sequence numbers above 2**63 - 1 cannot be stored")
    return mark


def _shutdown_row(
    record: ShutdownRecord,
) -> tuple[bytes, int | None, int | None, int | None, int]:
    window = record.replay_window
    if window is None:
        return record.key_id, None, None, None, _to_sql(record.sender_next)
    if not 0 <= window.bitfield < 2**63:
        raise ValueError("a replay window wider than 63 bits cannot be stored")
    return (
        record.key_id,
        _to_sql(window.index),
        window.bitfield,
        _to_sql(window.size),
        _to_sql(record.sender_next),
    )


def _shutdown_record(row: tuple[object, ...]) -> ShutdownRecord | None:
    """A saved row, or None for one that does not make sense (then it is not trusted)."""
    key_id, index, bitfield, size, sender_next = row
    if not isinstance(key_id, bytes) or type(sender_next) is not int or sender_next < 0:
        return None
    window = None
    if index is not None or bitfield is not None or size is not None:
        if type(index) is not int or type(bitfield) is not int or type(size) is not int:
            return None
        if index < 0 or size < 1 or not 0 <= bitfield < 1 << size:
            return None
        window = PersistedReplayWindow(index=index, bitfield=bitfield, size=size)
    return ShutdownRecord(key_id=key_id, replay_window=window, sender_next=sender_next)


__all__ = ["SqliteRsState"]
