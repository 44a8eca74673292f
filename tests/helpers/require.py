"""Parts outside pip's reach: skip without them, or fail when CI requires them all."""

from __future__ import annotations

import os

import pytest

#: Set to 1 (CI does) to make a missing part (MicroPython, mpy-cross, PostgreSQL, libcoap) fail
#: the tests that need it instead of skipping them.
REQUIRE_ALL_VARIABLE = "KEYBOUND_REQUIRE_ALL"


def require(available: object, missing: str) -> None:
    """Skip unless ``available``; with KEYBOUND_REQUIRE_ALL=1, fail instead.

    Every test that needs a part outside pip's reach, or an optional one,
    asks through here, so a CI run without that part fails loudly rather than
    passing with the tests skipped. Callable at module level (then it fails
    or skips the whole file) and inside a test or fixture.
    """
    if available:
        return
    if os.environ.get(REQUIRE_ALL_VARIABLE) == "1":
        pytest.fail(f"{missing} ({REQUIRE_ALL_VARIABLE}=1 requires it)", pytrace=False)
    pytest.skip(missing, allow_module_level=True)
