"""The RS's durable state in one SQLite file (mode 0600).

Implements :class:`keybound.core.token_store.RsStateStore`: stored tokens with
the nonces and identifiers of their OSCORE contexts (enough to re-derive them,
RFC 9203 §4.3), each context's Sender Sequence Number high-water mark (written
ahead, RFC 8613 Appendix B.1.1), and the exi sequence number high-water mark
(RFC 9200 §5.10.3). Every write is committed with ``synchronous=FULL`` before the
call returns. Replay windows are deliberately not stored: after a restart they
are rebuilt through Echo (RFC 8613 Appendix B.1.2).

The file holds the tokens, and so the OSCORE Master Secrets inside them (encrypted
under the AS-RS key): it is created readable by its owner only.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from keybound.core.token_store import PersistedContext, PersistedState

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
"""
_EXI_MARK = "exi_sequence"


class SqliteRsState:
    """:class:`~keybound.core.token_store.RsStateStore` over a SQLite file."""

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

    def load(self) -> PersistedState:
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
            )
            for r in rows
        )
        mark = self.db.execute("SELECT value FROM marks WHERE name = ?", (_EXI_MARK,)).fetchone()
        return PersistedState(contexts, None if mark is None else int(mark[0]))

    def put_context(self, record: PersistedContext) -> None:
        self.db.execute(
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

    def delete_context(self, key_id: bytes) -> None:
        self.db.execute("DELETE FROM contexts WHERE key_id = ?", (key_id,))

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

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _to_sql(mark: int) -> int:
    if not 0 <= mark < 2**63:
        raise ValueError("exi sequence numbers above 2**63 - 1 cannot be stored")
    return mark


__all__ = ["SqliteRsState"]
