"""Fixtures of the firmware tests (plain code: :mod:`tests.helpers.firmware_fleet`).

No ``fleet`` here: that name is the soak fleet of ``tests/conftest.py`` (which
test_firmware_heap.py uses); test_firmware_e2e.py and test_firmware_edhoc.py each make
their own servers under that name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from keybound.tools.device.flash import compile_firmware
from tests.helpers.firmware import MP_TESTS, MPY_CROSS


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
