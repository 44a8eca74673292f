"""The RS daemon's temperature resource says when its value is simulated."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from keybound.tools.resource_server.daemon import TemperatureResource


def test_simulated_temperature_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zone = tmp_path / "temp"
    sensor = TemperatureResource(source=zone, clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, logger="keybound.rs"):
        assert sensor.read() == 21.0
        assert sensor.read() == 21.0
        zone.write_text("48312\n")
        assert sensor.read() == 48.312
        zone.write_text("hot\n")
        assert sensor.read() == 21.0
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        f"no temperature at {zone} (No such file or directory): serving a simulated value",
        f"temperature from {zone} again",
        f"no temperature at {zone} (not a number): serving a simulated value",
    ]
    assert caplog.records[0].levelno == logging.WARNING
