"""The firmware after its token was revoked (RFC 9770): on the real MicroPython unix port
under a 64 KiB heap, against ``keybound as serve`` and ``keybound rs serve`` following the
token revocation list. The firmware does not follow the list itself; the RS removes the
token and its context at once, answers the next request 4.01, and the firmware fetches a
new token and posts it (the bare minimum of issue 16)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.firmware_fleet import Device, Fleet
from tests.helpers.processes import run_keybound, wait_for_log

pytestmark = pytest.mark.micropython


@pytest.fixture
def trl_fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    fleet.provision()
    rs_toml = tmp_path / "rs.toml"
    rs_toml.write_text(rs_toml.read_text() + '[trl]\nmode = "observe"\n')
    fleet.start_as()
    fleet.start_rs()
    try:
        wait_for_log(tmp_path / "rs.log", "observing the token revocation list", fleet.procs["rs"])
        yield fleet
    finally:
        fleet.stop()


def _tokens(fleet: Fleet, client: str) -> list[dict[str, object]]:
    shown = run_keybound("as", "show", client, "--db", fleet.db, "--json", cwd=fleet.root)
    assert shown.returncode == 0, shown.stderr
    tokens: list[dict[str, object]] = json.loads(shown.stdout)["tokens"]
    return tokens


def test_a_revoked_token_makes_the_device_fetch_a_new_one(
    trl_fleet: Fleet,
    deployed: Path,
) -> None:
    fleet = trl_fleet
    device = Device(deployed, fleet.device_bundle("sensor-1"), fleet.root)
    try:
        first = device.cmd("get /temp")
        assert first.startswith("RESP 2.05 "), first
        assert "tokens=1 posts=1" in first
        (issued,) = _tokens(fleet, "sensor-1")
        revoked = run_keybound("as", "revoke", str(issued["cti"]), "--db", fleet.db, cwd=fleet.root)
        assert revoked.returncode == 0, revoked.stderr
        wait_for_log(
            fleet.root / "rs.log",
            "token removed (revoked: on the AS's token revocation list)",
            fleet.procs["rs"],
        )
        again = device.cmd("get /temp", timeout=60)
        third = device.cmd("get /temp")
    finally:
        device.quit()
    # The RS no longer knows the context: an unprotected 4.01, then a new token and post.
    assert again.startswith("RESP 2.05 "), again
    assert "tokens=2 posts=2" in again, again
    assert "tokens=2 posts=2" in third, third  # and it goes on with the new one
    tokens = _tokens(fleet, "sensor-1")
    assert len(tokens) == 2
    assert sum(1 for t in tokens if t["revoked"]) == 1
