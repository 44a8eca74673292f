"""The whole ACE flow with the AS, the RS and the client as real processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.paths import BIN
from tests.helpers.processes import ServerGroup, run_keybound, wait_for_log


class Fleet(ServerGroup):
    def provision(self, *, clock: bool = True) -> None:
        self.register("--scope", "led.write", *([] if clock else ["--no-clock"]))
        (self.root / "rs.toml").write_text(
            f'bundle = "rs-bundle.json"\nlisten = "127.0.0.1:{self.rs_port}"\n'
            'state = "rs-state.db"\n[resources."/temp"]\nGET = ["temp.read"]\n'
            '[resources."/led"]\nkind = "switch"\nGET = ["led.read"]\nPUT = ["led.write"]\n'
        )

    def client(self, method: str, path: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_keybound(
            "client", method, f"{self.rs_uri}{path}", "--bundle", "sensor-1.json",
            "--state", "client-state", *extra, cwd=self.root,
        )  # fmt: skip


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path)
    fleet.provision()
    fleet.start_servers()
    try:
        yield fleet
    finally:
        fleet.stop()


def test_full_flow_as_processes(fleet: Fleet) -> None:
    got = fleet.client("get", "/temp", "--verbose")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("2.05 ")
    float(got.stdout.split()[1])  # a temperature reading
    assert "[OSCORE (client-AS)] -> 2.01" in got.stderr
    assert "authz-info [plain CoAP] -> 2.01" in got.stderr
    assert "[OSCORE (derived)] -> 2.05" in got.stderr
    # The AS logged whom it issued to, and no secret reached either log.
    as_log = (fleet.root / "as.log").read_text()
    rs_log = (fleet.root / "rs.log").read_text()
    assert "issued token" in as_log
    assert "sensor-1" in as_log
    assert "token accepted" in rs_log
    bundle = json.loads((fleet.root / "sensor-1.json").read_text())
    secret = bundle["as_context"]["master_secret"]
    assert secret not in as_log
    assert secret not in rs_log


def test_scope_not_granted_is_403(fleet: Fleet) -> None:
    put = fleet.client("put", "/led", "--payload", "on")
    assert put.returncode == 1
    assert "4.03" in put.stderr
    assert "insufficient_scope" in put.stderr


def test_client_json_output(fleet: Fleet) -> None:
    """``--json`` prints the reply as one JSON object, an error reply too (exit 1)."""
    got = fleet.client("get", "/temp", "--json")
    assert got.returncode == 0, got.stderr
    reply = json.loads(got.stdout)
    assert reply["code"] == "2.05"
    assert reply["success"] is True
    float(reply["payload"])  # a temperature reading
    assert bytes.fromhex(reply["payload_hex"]).decode() == reply["payload"]
    refused = fleet.client("put", "/led", "--payload", "on", "--json")
    assert refused.returncode == 1
    error = json.loads(refused.stdout)
    assert error["code"] == "4.03"
    assert error["success"] is False
    assert "error=insufficient_scope" in error["error"]


def test_client_sequence_numbers_survive_runs(fleet: Fleet) -> None:
    """The client-AS Sender Sequence Number mark only grows across invocations."""
    marks = []
    for _ in range(3):
        for session in (fleet.root / "client-state").glob("*.rs.json"):
            session.unlink()  # without its kept token the client asks the AS again
        got = fleet.client("get", "/temp")
        assert got.returncode == 0, got.stderr
        (state,) = (fleet.root / "client-state").glob("*.as-seq.json")
        assert state.stat().st_mode & 0o777 == 0o600
        marks.append(json.loads(state.read_text())["mark"])
    assert marks == sorted(set(marks)), marks


def test_rs_restart_client_recovers(fleet: Fleet) -> None:
    assert fleet.client("get", "/temp").returncode == 0
    rs = fleet.procs[1]
    os.kill(rs.pid, signal.SIGKILL)
    rs.wait(timeout=10)
    fleet.procs.remove(rs)
    (fleet.root / "rs.log").unlink()
    fleet.start("rs", "rs", "serve", "--config", "rs.toml")
    got = fleet.client("get", "/temp")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("2.05")


def issued_tokens(fleet: Fleet) -> list[dict[str, object]]:
    shown = run_keybound("as", "show", "sensor-1", "--db", fleet.db, "--json", cwd=fleet.root)
    assert shown.returncode == 0, shown.stderr
    tokens: list[dict[str, object]] = json.loads(shown.stdout)["tokens"]
    return tokens


def test_client_keeps_its_token_until_the_rs_forgets_it(fleet: Fleet) -> None:
    """Two runs, one token at the AS; after the RS loses its state, one new token."""
    first = fleet.client("get", "/temp", "--verbose")
    assert first.returncode == 0, first.stderr
    (session,) = (fleet.root / "client-state").glob("sensor-1.*.rs.json")
    assert session.stat().st_mode & 0o777 == 0o600
    mark = json.loads(session.read_text())["mark"]
    second = fleet.client("get", "/temp", "--verbose")
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("2.05 ")
    assert "reusing the token and context kept in --state" in second.stderr
    assert "client-AS" not in second.stderr  # no token request
    assert "authz-info" not in second.stderr  # the derived context is reused
    assert len(issued_tokens(fleet)) == 1
    # The reused context went on from a mark written ahead: no sequence number twice.
    assert json.loads(session.read_text())["mark"] > mark

    rs = fleet.procs[1]
    rs.send_signal(signal.SIGTERM)
    rs.wait(timeout=20)
    fleet.procs.remove(rs)
    (fleet.root / "rs-state.db").unlink()  # the RS forgets every token and context
    (fleet.root / "rs.log").unlink()
    fleet.start("rs", "rs", "serve", "--config", "rs.toml")
    third = fleet.client("get", "/temp", "--verbose")
    assert third.returncode == 0, third.stderr
    assert third.stdout.startswith("2.05 ")
    # The RS no longer knows the kid: an unprotected 4.01 (RFC 8613 §8.2), then a new token.
    lines = third.stderr.splitlines()
    refused = lines.index(f"GET {fleet.rs_uri}/temp [OSCORE (derived)] -> 4.01")
    assert "OSCORE exchange failed (NotAProtectedMessage)" in lines[refused - 1]
    assert "/token [OSCORE (client-AS)] -> 2.01" in lines[refused + 1]
    assert len(issued_tokens(fleet)) == 2
    fourth = fleet.client("get", "/temp")
    assert fourth.returncode == 0, fourth.stderr
    assert len(issued_tokens(fleet)) == 2


def test_rs_without_a_clock(tmp_path: Path) -> None:
    """exi tokens with per-RS sequence numbers in cti, from the real AS to the real RS."""
    fleet = Fleet(tmp_path)
    fleet.provision(clock=False)
    fleet.start_servers()
    try:
        for _ in range(3):  # every fresh client gets a new token with a higher sequence number
            for session in (tmp_path / "client-state").glob("*.rs.json"):
                session.unlink()
            got = fleet.client("get", "/temp")
            assert got.returncode == 0, got.stderr
    finally:
        fleet.stop()
    shown = run_keybound("as", "show", "sensor-1", "--db", fleet.db, "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    tokens = json.loads(shown.stdout)["tokens"]
    sequences = sorted(t["sequence"] for t in tokens)
    assert len(sequences) == 3
    assert sequences == sorted(set(sequences))
    assert all(t["exi"] for t in tokens)
    assert "token accepted" in (tmp_path / "rs.log").read_text()


def test_demo_runs_and_says_what_happened() -> None:
    proc = run_keybound("demo", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for expected in (
        "[OSCORE (client-AS)] -> 2.01",
        "authz-info [plain CoAP] -> 2.01",
        "[OSCORE (derived)] -> 2.05",
        "4.01 Unauthorized with AS Request Creation Hints",
        "4.03 error=insufficient_scope",
        "replay: 4.01 Unauthorized",
        "done:",
    ):
        assert expected in out, expected


def test_a_second_client_run_waits_for_the_first(fleet: Fleet) -> None:
    """Two runs on one --state at once would use the same sequence numbers: one waits."""
    from keybound.tools.client.state import state_lock

    log = fleet.root / "waiting-client.log"
    with state_lock(fleet.root / "client-state", "sensor-1"):
        with log.open("wb") as out:
            waiting = subprocess.Popen(
                [str(BIN / "keybound"), "client", "get", f"{fleet.rs_uri}/temp", "--bundle",
                 "sensor-1.json", "--state", "client-state"],
                cwd=fleet.root, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        fleet.procs.append(waiting)
        wait_for_log(log, "waiting for another run of sensor-1 to finish", waiting)
        assert waiting.poll() is None  # blocked while this test holds the state
    assert waiting.wait(timeout=60) == 0, log.read_text()
    assert "2.05 " in log.read_text()
