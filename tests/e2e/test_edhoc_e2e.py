"""The EDHOC and OSCORE profile end to end: AS, RS and client as processes on 127.0.0.1.

A device known to the AS only by its public credential (``keybound key generate
--ccs`` on the device, ``as client add --credential`` at the AS) gets a token,
runs EDHOC with the RS and reads a protected resource; the RS serves both profiles.
"""

from __future__ import annotations

import signal
from pathlib import Path

import cbor2

from tests.helpers.processes import EdhocFleet, run_keybound


def test_device_known_only_by_its_credential_reads_a_resource_through_edhoc(
    tmp_path: Path,
) -> None:
    fleet = EdhocFleet(tmp_path)
    fleet.provision()
    fleet.start_servers()
    try:
        got = fleet.client("get", "/temp", "--verbose")
        assert got.returncode == 0, got.stderr
        assert got.stdout.startswith("2.05 ")
        float(got.stdout.split()[1])  # a temperature reading
        assert "[OSCORE (client-AS)] -> 2.01" in got.stderr
        assert "authz-info [plain CoAP] -> 2.01" in got.stderr
        assert "[OSCORE (EDHOC)] -> 2.05" in got.stderr
        rs_log = (tmp_path / "rs.log").read_text()
        assert "EDHOC session completed" in rs_log
        # Scope is enforced over the EDHOC-derived context too.
        led = fleet.client("get", "/led")
        assert led.returncode == 1
        assert "4.03" in led.stderr or "insufficient_scope" in led.stderr
        # The AS never held the device's private key: only its public credential.
        private = (tmp_path / "dev.key").read_bytes()[-32:]
        assert private not in (tmp_path / "as.db").read_bytes()
    finally:
        fleet.stop()


def test_the_rs_restarts_and_the_device_runs_edhoc_again(tmp_path: Path) -> None:
    fleet = EdhocFleet(tmp_path)
    fleet.provision()
    fleet.start_servers()
    try:
        assert fleet.client("get", "/temp").returncode == 0
        rs = fleet.procs.pop()
        rs.send_signal(signal.SIGTERM)
        rs.wait(timeout=20)
        fleet.start("rs2", "rs", "serve", "--config", "rs.toml")
        assert "restored 1 token(s)" in (tmp_path / "rs2.log").read_text()
        again = fleet.client("get", "/temp")
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("2.05 ")
    finally:
        fleet.stop()


def test_signature_credentials_from_the_cli_run_method_0_end_to_end(tmp_path: Path) -> None:
    """``key generate --ccs --signing`` for the RS and the device: the client signs, the RS
    signs (EDHOC method 0, RFC 9528 §3.2), and the device reads through the context."""
    fleet = EdhocFleet(tmp_path)
    fleet.provision("--signing")
    for name in ("rs.key.ccs", "dev.key.ccs"):
        ccs = cbor2.loads((tmp_path / name).read_bytes())
        assert ccs[8][1][3] == -7  # cnf COSE_Key alg ES256: a signature key
    fleet.start_servers()
    try:
        got = fleet.client("get", "/temp", "--verbose")
        assert got.returncode == 0, got.stderr
        assert got.stdout.startswith("2.05 ")
        assert "[OSCORE (EDHOC)] -> 2.05" in got.stderr
        assert "EDHOC session completed, method 0," in (tmp_path / "rs.log").read_text()
    finally:
        fleet.stop()


def test_demo_of_the_edhoc_profile_runs_and_says_what_happened() -> None:
    got = run_keybound("demo", "--profile", "edhoc", timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "[OSCORE (EDHOC)] -> 2.05" in got.stdout
    assert "4.03 error=insufficient_scope" in got.stdout
    assert "refused: the RS accepts only a credential bound" in got.stdout
    assert "done:" in got.stdout
