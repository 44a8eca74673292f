"""``keybound as``: init -> rs add -> client add -> list/show -> revoke -> remove."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from keybound.core.authz_store import IssuedToken
from keybound.tools.as_storage import SqlAuthzStore

from .as_support import db_url

__all__ = ["db_url"]


def kb_as(*args: str, db: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "KEYBOUND_AS_DB": db}
    return subprocess.run(
        [sys.executable, "-m", "keybound.tools.as_cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_provisioning_flow(db_url: str, tmp_path: Path) -> None:
    init = ok(kb_as("init", "--issuer", "coap://127.0.0.1:5683", "--json", db=db_url, cwd=tmp_path))
    assert init["created"] is True
    rs = ok(kb_as("rs", "add", "temp-rs", "--audience", "temp", "--scope", "read",
                  "--scope", "write", "--no-clock", "--out", "rs.json", "--json",
                  db=db_url, cwd=tmp_path))  # fmt: skip
    assert rs["has_clock"] is False
    bundle = json.loads((tmp_path / "rs.json").read_text())
    assert mode(tmp_path / "rs.json") == 0o600
    assert bundle["kind"] == "keybound-rs-bundle"
    assert bundle["contains_secrets"] is True
    assert bundle["as_uri"] == "coap://127.0.0.1:5683/token"
    assert bundle["profiles"] == [2]
    assert bundle["token_key"]["kty"] == "oct"
    assert "note" in bundle
    assert set(bundle["introspection"]["oscore"]) >= {"master_secret", "sender_id"}

    made = ok(kb_as("client", "add", "sensor", "--audience", "temp", "--scope", "read",
                    "--count", "3", "--out", "devices", "--http-secret", "--json",
                    db=db_url, cwd=tmp_path))  # fmt: skip
    assert [c["client_id"] for c in made] == ["sensor-1", "sensor-2", "sensor-3"]
    for client in made:
        path = Path(client["bundle"]) if Path(client["bundle"]).is_absolute() else (
            tmp_path / client["bundle"])  # fmt: skip
        assert mode(path) == 0o600
        device = json.loads(path.read_text())
        assert device["kind"] == "keybound-device-bundle"
        assert device["audience"] == "temp"
        assert len(bytes.fromhex(device["as_context"]["master_secret"])) == 16
        assert device["http"]["client_secret"]

    listed = ok(kb_as("list", "--json", db=db_url, cwd=tmp_path))
    assert [r["name"] for r in listed["resource_servers"]] == ["temp-rs"]
    assert len(listed["clients"]) == 3
    shown = ok(kb_as("show", "sensor-2", "--json", db=db_url, cwd=tmp_path))
    assert shown["grants"] == {"temp": ["read"]}
    assert shown["tokens"] == []

    with SqlAuthzStore.open(db_url) as store:
        store.record_token(
            IssuedToken(
                cti=b"temp#1",
                client_id="sensor-2",
                audience="temp",
                scope="read",
                format="cwt",
                iat=1,
                exi=60,
                sequence=1,
            )
        )
    revoked = ok(kb_as("revoke", "temp#1", "--json", db=db_url, cwd=tmp_path))
    assert revoked["revoked"] is True
    shown = ok(kb_as("show", "sensor-2", "--json", db=db_url, cwd=tmp_path))
    assert shown["tokens"][0]["revoked"] is True

    ok(kb_as("rotate-key", "temp-rs", "--out", "rs.json", db=db_url, cwd=tmp_path))
    assert json.loads((tmp_path / "rs.json").read_text())["token_key"] != bundle["token_key"]

    ok(kb_as("remove", "sensor-3", db=db_url, cwd=tmp_path))
    listed = ok(kb_as("list", "--json", db=db_url, cwd=tmp_path))
    assert len(listed["clients"]) == 2
    ok(kb_as("remove", "temp-rs", db=db_url, cwd=tmp_path))


def test_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    result = kb_as("list", db=db, cwd=tmp_path)  # not initialised
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    ok(kb_as("init", db=db, cwd=tmp_path))
    for args in (("show", "nobody"), ("revoke", "00ff"), ("remove", "nobody"),
                 ("client", "add", "x", "--audience", "nowhere", "--scope", "read")):  # fmt: skip
        result = kb_as(*args, db=db, cwd=tmp_path)
        assert result.returncode == 2, args
        assert result.stderr.startswith("keybound: ")
        assert result.stderr.count("\n") == 1


def test_refuses_foreign_database(tmp_path: Path) -> None:
    import sqlite3

    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    result = kb_as("init", db=f"sqlite:///{foreign}", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a keybound" in result.stderr


def test_serve_refuses_plain_http_beyond_loopback(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    ok(kb_as("init", db=db, cwd=tmp_path))
    result = kb_as("serve", "--http", "0.0.0.0:18080", db=db, cwd=tmp_path)
    assert result.returncode == 2
    assert "without TLS" in result.stderr


def test_show_prints_the_whole_cti_and_iso_times(tmp_path: Path) -> None:
    """Piped output is not wrapped: the cti pastes into ``as revoke``; times are ISO 8601."""
    db = f"sqlite:///{tmp_path / 'as.db'}"
    ok(kb_as("init", "--json", db=db, cwd=tmp_path))
    ok(kb_as("rs", "add", "temp-rs", "--audience", "temp", "--scope", "read", "--out", "rs.json",
             "--json", db=db, cwd=tmp_path))  # fmt: skip
    ok(kb_as("client", "add", "sensor-1", "--audience", "temp", "--scope", "read", "--out", ".",
             "--json", db=db, cwd=tmp_path))  # fmt: skip
    cti = bytes(range(32))
    with SqlAuthzStore.open(db) as store:
        store.record_token(
            IssuedToken(
                cti=cti,
                client_id="sensor-1",
                audience="temp",
                scope="read",
                format="cwt",
                iat=1_764_626_400,
                exp=1_764_630_000,
            )
        )
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    shown = subprocess.run(
        [sys.executable, "-m", "keybound.tools.as_cli", "show", "sensor-1", "--db", db],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert cti.hex() in shown.stdout
    assert "2025-12-01T22:00:00Z (1764626400)" in shown.stdout
    assert "exp 2025-12-01T23:00:00Z (1764630000)" in shown.stdout
    data = ok(kb_as("show", "sensor-1", "--json", db=db, cwd=tmp_path))
    assert data["tokens"][0]["exp_iso"] == "2025-12-01T23:00:00Z"
    revoked = ok(kb_as("revoke", cti.hex(), "--json", db=db, cwd=tmp_path))
    assert revoked["revoked"] is True
