"""Fixtures shared by every test folder (plain helpers live in :mod:`tests.helpers`)."""

from __future__ import annotations

import pytest

from keybound.core.keys import Key
from tests.helpers.paths import rfc8392_keys


@pytest.fixture(scope="session")
def a2_keys() -> dict[str, Key]:
    return rfc8392_keys()
