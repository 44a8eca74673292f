"""PostgreSQL for tests: a throw-away schema per test on the server named by KEYBOUND_TEST_PG_URL.

Each test gets its own schema, put first on ``search_path`` through the
URL's ``options``, so tests may run repeatedly and side by side; the schema
is dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.helpers.require import require

PG_URL_VARIABLE = "KEYBOUND_TEST_PG_URL"
SKIP_REASON = f"set {PG_URL_VARIABLE} to run against PostgreSQL"


def pg_base_url() -> str:
    """The configured server URL, or skip the test."""
    url = os.environ.get(PG_URL_VARIABLE)
    require(url, SKIP_REASON)
    assert url is not None
    return url


@contextmanager
def temporary_pg_schema(base_url: str) -> Iterator[str]:
    """A URL whose connections work in a new, empty schema; dropped on exit."""
    schema = f"keybound_test_{secrets.token_hex(6)}"
    url = make_url(base_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    admin = create_engine(url)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@contextmanager
def database_url(kind: str, where: Path, name: str = "test.db") -> Iterator[str]:
    """A URL of an empty database: an SQLite file ``name`` in ``where`` for ``"sqlite"``,
    a temporary schema for ``"postgresql"`` (skipped without KEYBOUND_TEST_PG_URL)."""
    if kind == "sqlite":
        yield f"sqlite:///{where / name}"
        return
    with temporary_pg_schema(pg_base_url()) as url:
        yield url
