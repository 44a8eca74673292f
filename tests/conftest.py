"""Fixtures shared by every test folder (plain helpers live in :mod:`tests.helpers`).

Fixtures live in conftest.py files only; test modules ask for them by parameter
name and never import them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from keybound.core.keys import Key
from tests.helpers.paths import rfc8392_keys
from tests.helpers.pg import database_url, pg_base_url, temporary_pg_schema

if TYPE_CHECKING:
    from tests.helpers.soak import Fleet


@pytest.fixture(scope="session")
def a2_keys() -> dict[str, Key]:
    return rfc8392_keys()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: an SQLite file ``as.db``, then a throw-away PostgreSQL
    schema (skipped without KEYBOUND_TEST_PG_URL, failing with KEYBOUND_REQUIRE_ALL=1)."""
    with database_url(request.param, tmp_path, "as.db") as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL of a throw-away PostgreSQL schema (:func:`tests.helpers.pg.temporary_pg_schema`)."""
    with temporary_pg_schema(pg_base_url()) as url:
        yield url


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The AS and the RS as processes on 127.0.0.1, provisioned in a temporary directory."""
    from tests.helpers import soak  # the process harness: imported only by the tests using it

    with soak.running_fleet(tmp_path_factory.mktemp("fleet")) as running:
        yield running
