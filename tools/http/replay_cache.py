"""DPoP ``jti`` replay caches: one in memory, one shared by processes in SQL (RFC 9449 §11.1).

RFC 9449 §11.1: a server must not accept a proof whose ``jti`` it has seen
within the proof's acceptance window. The in-process
:class:`InMemoryReplayCache` cannot see proofs that
another process accepted: behind ``uvicorn --workers N``, or several processes
behind one public URL, a proof replayed to another process would pass.
:class:`SqlReplayCache` keeps the entries in a database all of them share:
an SQLite file for processes on one host, PostgreSQL for several hosts. It
uses the AS's engine setup (:func:`keybound.tools.authz_server.database.build_engine`:
SQLite in WAL mode, ``BEGIN IMMEDIATE``, files created 0600).

Each check is one transaction: ``INSERT`` the digest of (target URI, ``jti``)
with ``ON CONFLICT DO UPDATE ... WHERE expires_at < now`` on its primary key
(an entry whose window has ended is taken over, an unexpired one is left
alone), then count. The primary key makes insert-if-absent atomic across
processes: of two processes storing the same proof, exactly one writes the
row; the other changes nothing and refuses the proof as replayed. Expired
entries are deleted every :data:`PURGE_EVERY` checks and when the count
reaches ``capacity``. An entry lives until ``expires_at`` inclusive, the last
second at which :func:`keybound.core.dpop.verify_proof` accepts the proof. At
``capacity`` unexpired entries new proofs are refused (503) rather than an
entry forgotten.
"""

from __future__ import annotations

import heapq
import threading
from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    LargeBinary,
    MetaData,
    Table,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from keybound.core.dpop_state import ReplayCacheFull, ReplayedProof, replay_digest
from keybound.core.errors import TemporarilyUnavailable
from keybound.tools.authz_server.database import build_engine, resolve_database_url
from keybound.tools.authz_server.schema import DPOP_REPLAY_TABLE

__all__ = [
    "DEFAULT_CAPACITY",
    "InMemoryReplayCache",
    "ReplayCacheUnavailable",
    "SqlReplayCache",
    "replay_table",
]

#: Default bound of unexpired entries (about 1,000 proofs/s over a 65 s window).
DEFAULT_CAPACITY: Final = 65_536
#: Expired entries are deleted every this many checks of a process, and at capacity.
PURGE_EVERY: Final = 256

metadata = MetaData()

#: One row per accepted proof: SHA-256 of (target URI, jti), kept until ``expires_at``.
replay_table = Table(
    DPOP_REPLAY_TABLE,
    metadata,
    Column("digest", LargeBinary(32), primary_key=True),
    Column("expires_at", BigInteger, nullable=False, index=True),
)


class InMemoryReplayCache:
    """A bounded in-process :class:`~keybound.core.dpop_state.ReplayCache`.

    Entries are SHA-256 digests of ``key`` and ``jti`` (RFC 9449 §11.1 suggests
    storing hashes), each kept until the proof's acceptance window ends. When
    ``capacity`` entries are stored, expired ones are evicted first; if none has
    expired, the new proof is refused with :class:`ReplayCacheFull` (HTTP 503)
    rather than growing the cache or forgetting an unexpired entry, which would
    reopen a replay. Size the capacity for the peak request rate times the
    window (for example 1,000 requests/s x 65 s = 65,000 entries, roughly 10 MB).
    Safe to share between threads: the AS's token endpoint checks proofs in
    worker threads, so every check and store happens under one lock.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._expiry: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._expiry)

    def _evict_expired(self, now: int) -> None:
        while self._heap and self._heap[0][0] < now:
            _, digest = heapq.heappop(self._heap)
            self._expiry.pop(digest, None)

    def check_and_store(self, key: str, jti: str, expires_at: int, now: int) -> None:
        digest = replay_digest(key, jti)
        with self._lock:
            seen_until = self._expiry.get(digest)
            if seen_until is not None and seen_until >= now:
                raise ReplayedProof(f"the jti {jti!r} was already used for {key}")
            self._evict_expired(now)
            if len(self._expiry) >= self.capacity:
                raise ReplayCacheFull(
                    f"the replay cache holds {self.capacity} unexpired proofs; try again later"
                )
            self._expiry[digest] = expires_at
            heapq.heappush(self._heap, (expires_at, digest))


class ReplayCacheUnavailable(TemporarilyUnavailable):
    """the shared DPoP replay cache cannot be reached; proofs are refused until it can"""


class SqlReplayCache:
    """A :class:`~keybound.core.dpop_state.ReplayCache` in a database shared by processes.

    :param url: ``sqlite:///path`` (or a file path) for processes on one host,
        ``postgresql+psycopg://...`` for several hosts; the table is created if
        absent. Give ``engine`` instead to share an existing engine (the AS
        uses its own database).
    :param capacity: the most unexpired entries kept; beyond it new proofs
        raise :class:`~keybound.core.dpop_state.ReplayCacheFull` (HTTP 503).
    """

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: Engine | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if (url is None) == (engine is None):
            raise ValueError("give either a database url or an engine")
        self.capacity = capacity
        self._own_engine = engine is None
        self._engine = (
            engine if engine is not None else build_engine(resolve_database_url(url), echo=False)
        )
        backend = self._engine.url.get_backend_name()
        self._insert = postgresql.insert if backend == "postgresql" else sqlite.insert
        self._checks = 0
        self._create_table()

    def _create_table(self) -> None:
        try:
            with self._engine.begin() as conn:
                metadata.create_all(conn, checkfirst=True)
        except DBAPIError:
            # Another process created it at the same moment (PostgreSQL); check again.
            with self._engine.begin() as conn:
                metadata.create_all(conn, checkfirst=True)

    def close(self) -> None:
        """Close the pooled connections of an engine this cache made."""
        if self._own_engine:
            self._engine.dispose()

    def __len__(self) -> int:
        with self._engine.connect() as conn:
            return self._count(conn)

    def _purge(self, conn: Connection, now: int) -> None:
        conn.execute(delete(replay_table).where(replay_table.c.expires_at < now))

    def check_and_store(self, key: str, jti: str, expires_at: int, now: int) -> None:
        """Store ``(key, jti)`` until ``expires_at`` or raise (RFC 9449 §11.1).

        Raises :class:`~keybound.core.dpop_state.ReplayedProof` when an
        unexpired entry exists, :class:`~keybound.core.dpop_state.ReplayCacheFull`
        at capacity and :class:`ReplayCacheUnavailable` when the database fails.
        """
        digest = replay_digest(key, jti)
        insert = self._insert(replay_table).values(digest=digest, expires_at=expires_at)
        # Insert, or take over an entry whose window has ended; an unexpired one stays.
        statement = insert.on_conflict_do_update(
            index_elements=[replay_table.c.digest],
            set_={"expires_at": insert.excluded.expires_at},
            where=replay_table.c.expires_at < now,
        ).returning(replay_table.c.digest)
        self._checks += 1
        try:
            if self._checks % PURGE_EVERY == 0:
                with self._engine.begin() as conn:
                    self._purge(conn, now)
            with self._engine.begin() as conn:
                if conn.execute(statement).first() is None:  # nothing written
                    raise ReplayedProof(f"the jti {jti!r} was already used for {key}")
                if self._count(conn) > self.capacity:
                    self._purge(conn, now)
                    if self._count(conn) > self.capacity:  # raising rolls the insert back
                        raise ReplayCacheFull(
                            f"the replay cache holds {self.capacity} unexpired proofs; "
                            "try again later"
                        )
        except DBAPIError as exc:
            raise ReplayCacheUnavailable(
                f"the DPoP replay cache failed: {type(exc.orig).__name__}"
            ) from None

    @staticmethod
    def _count(conn: Connection) -> int:
        return int(conn.execute(select(func.count()).select_from(replay_table)).scalar_one())
