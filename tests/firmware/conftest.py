"""Fixtures of the firmware tests (plain code: :mod:`tests.helpers.firmware_fleet`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from keybound.tools.device.flash import compile_firmware
from tests.helpers.firmware import MP_TESTS, MPY_CROSS
from tests.helpers.firmware_fleet import Fleet


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The board's filesystem: compiled modules, main.py, and the compiled test driver."""
    out = tmp_path_factory.mktemp("board")
    compile_firmware(out, mpy_cross=str(MPY_CROSS))
    subprocess.run(
        [str(MPY_CROSS), "-o", str(out / "mp_device.mpy"), str(MP_TESTS / "mp_device.py")],
        check=True,
        timeout=60,
    )
    return out


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    fleet.provision()
    fleet.start_as()
    fleet.start_rs()
    try:
        yield fleet
    finally:
        fleet.stop()
