"""``keybound as revoke`` and ``keybound as trl``: the token revocation list (RFC 9770)
as an operator sees it, the token named by its cti, its sequence number, or itself."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from keybound.coap.authz_service import AuthzService
from keybound.core import trl
from keybound.core.authz_server import TokenRequest
from keybound.tools.authz_server.provision import as_config
from tests.helpers.authz import provision


def kb_as(*args: str, db: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "KEYBOUND_AS_DB": db}
    return subprocess.run(
        [sys.executable, "-m", "keybound.tools.cli.as_commands", *args],
        capture_output=True, text=True, timeout=120, env=env, cwd=cwd, check=False,
    )  # fmt: skip


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.lstrip().startswith(("{", "[")) else None


def _issue(db: str, audience: str = "temp") -> bytes:
    setup = provision(db)
    store = setup["store"]
    try:
        service = AuthzService(store, as_config(store))
        response = service.issue_token(
            TokenRequest(client_id="sensor-1", audience=audience),
            now=int(time.time()),
            random_bytes=os.urandom,
        )
    finally:
        store.close()
    assert isinstance(response.access_token, bytes)
    return response.access_token


def test_revoke_by_token_shows_the_trl_and_who_is_told(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    token = _issue(db)
    assert ok(kb_as("trl", "--json", db=db, cwd=tmp_path)) == []
    shown = kb_as("trl", db=db, cwd=tmp_path)
    assert shown.stdout.strip() == "the token revocation list is empty"

    given = base64.urlsafe_b64encode(token).rstrip(b"=").decode()  # the token itself
    done = ok(kb_as("revoke", given, "--json", db=db, cwd=tmp_path))
    assert done["revoked"] is True
    assert done["on_trl"] is True
    assert done["token_hash"] == trl.response_token_hash(token).hex()
    assert done["notified"] == ["client:sensor-1", "rs:temp-rs"]

    listed = ok(kb_as("trl", "--json", db=db, cwd=tmp_path))
    assert [row["token_hash"] for row in listed] == [done["token_hash"]]
    assert listed[0]["requesters"] == ["client:sensor-1", "rs:temp-rs"]
    text = kb_as("trl", db=db, cwd=tmp_path).stdout
    assert done["token_hash"] in text
    assert "client:sensor-1, rs:temp-rs" in text

    again = ok(kb_as("revoke", done["cti"], "--json", db=db, cwd=tmp_path))
    assert again["on_trl"] is True  # still listed; revoked once
    human = kb_as("revoke", done["cti"], db=db, cwd=tmp_path)
    assert "notifying client:sensor-1, rs:temp-rs" in human.stdout


def test_revoke_a_no_clock_token_by_its_sequence_number(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    _issue(db, audience="door")
    done = ok(kb_as("revoke", "door#1", "--json", db=db, cwd=tmp_path))
    assert done["cti"] == "door#1"
    assert done["on_trl"] is True  # exi tokens stay listed exi seconds after revocation
    assert done["notified"] == ["client:sensor-1", "rs:door-rs"]


def test_revoke_of_an_unknown_token_is_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    _issue(db)
    for what, says in (
        ("00112233", "no token with cti 00112233"),
        ("d83dd0834040", "no token with cti d83dd0834040"),
        ("not-a-token", "is not a cti (not a hexadecimal string"),
    ):
        result = kb_as("revoke", what, db=db, cwd=tmp_path)
        assert result.returncode == 2, what
        assert len(result.stderr.strip().splitlines()) == 1
        assert says in result.stderr, result.stderr
