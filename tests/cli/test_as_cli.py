"""``keybound as``: init -> rs add -> client add -> list/show -> revoke -> remove."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from keybound.coap.authz_service import AuthzService
from keybound.core.authz_server import TokenRequest
from keybound.core.authz_store import IssuedToken
from keybound.core.errors import InvalidClient
from keybound.core.exi import decode_exi_sequence
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.schema import sequences_table
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import provision


def kb_as(*args: str, db: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "KEYBOUND_AS_DB": db}
    return subprocess.run(
        [sys.executable, "-m", "keybound.tools.cli.as_commands", *args],
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


@pytest.mark.parametrize("number", [0, 23, 24, 255, 256, 65536])
def test_revoke_by_sequence_number(db_url: str, tmp_path: Path, number: int) -> None:
    """``revoke AUDIENCE#SEQ`` finds the token whose ``cti`` encodes SEQ (RFC 9200 §5.10.3),
    also where the number's CBOR encoding is longer than one byte (24 and more)."""
    setup = provision(db_url)
    store = setup["store"]
    config = as_config(store)
    with store._write() as conn:  # the counter hands out ``value + 1`` next
        conn.execute(
            update(sequences_table)
            .where(sequences_table.c.audience == "door")
            .values(value=number - 1)
        )
    request = TokenRequest(client_id="sensor-1", audience="door")
    service = AuthzService(store, config)
    response = service.issue_token(request, now=int(time.time()), random_bytes=os.urandom)
    assert decode_exi_sequence(response.token.cti) == number
    assert service.introspect(response.access_token, now=int(time.time())).active
    store.close()

    revoked = ok(kb_as("revoke", f"door#{number}", "--json", db=db_url, cwd=tmp_path))
    assert revoked["revoked"] is True
    with SqlAuthzStore.open(db_url) as reopened:
        result = AuthzService(reopened, config).introspect(
            response.access_token, now=int(time.time())
        )
    assert result.to_cbor_map() == {10: False}


def test_rs_bundle_carries_an_introspection_secret_rotated_apart_from_the_token_key(
    db_url: str, tmp_path: Path
) -> None:
    ok(kb_as("init", "--issuer", "coap://127.0.0.1:5683", db=db_url, cwd=tmp_path))
    ok(kb_as("rs", "add", "temp-rs", "--audience", "temp", "--scope", "read",
             "--out", "rs.json", db=db_url, cwd=tmp_path))  # fmt: skip
    added = json.loads((tmp_path / "rs.json").read_text())
    secret = added["introspection"]["http_secret"]
    assert isinstance(secret, str)
    assert secret != added["token_key"]["k"]
    with SqlAuthzStore.open(db_url) as store:
        assert store.verify_introspection_secret("temp-rs", secret).name == "temp-rs"

    ok(kb_as("rotate-key", "temp-rs", "--out", "rs.json", db=db_url, cwd=tmp_path))
    rotated = json.loads((tmp_path / "rs.json").read_text())
    assert rotated["token_key"] != added["token_key"]
    assert rotated["introspection"]["http_secret"] == secret  # still the valid one

    ok(kb_as("rotate-key", "temp-rs", "--introspection-secret", "--out", "rs.json",
             db=db_url, cwd=tmp_path))  # fmt: skip
    renewed = json.loads((tmp_path / "rs.json").read_text())
    assert renewed["token_key"] == rotated["token_key"]
    new_secret = renewed["introspection"]["http_secret"]
    assert new_secret != secret
    with SqlAuthzStore.open(db_url) as store:
        store.verify_introspection_secret("temp-rs", new_secret)
        with pytest.raises(InvalidClient):
            store.verify_introspection_secret("temp-rs", secret)
        with pytest.raises(InvalidClient):
            store.verify_introspection_secret("temp-rs", renewed["token_key"]["k"])


def test_rotate_key_refuses_to_replace_a_bundle_it_cannot_read(tmp_path: Path) -> None:
    """Writing over it would drop the RS's introspection secret: the file is kept."""
    db = f"sqlite:///{tmp_path / 'as.db'}"
    ok(kb_as("init", "--issuer", "coap://127.0.0.1:5683", db=db, cwd=tmp_path))
    ok(kb_as("rs", "add", "temp-rs", "--audience", "temp", "--scope", "read",
             "--out", "rs.json", db=db, cwd=tmp_path))  # fmt: skip
    bundle = tmp_path / "rs.json"
    bundle.write_text('{"kind": "keybound-rs-bundle", "truncated')
    result = kb_as("rotate-key", "temp-rs", "--out", "rs.json", db=db, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "not valid JSON" in result.stderr
    assert "--introspection-secret" in result.stderr
    assert bundle.read_text() == '{"kind": "keybound-rs-bundle", "truncated'
    # The way out it names works: a new secret, so nothing from the old file is needed.
    ok(kb_as("rotate-key", "temp-rs", "--introspection-secret", "--out", "rs.json",
             db=db, cwd=tmp_path))  # fmt: skip
    assert isinstance(json.loads(bundle.read_text())["introspection"]["http_secret"], str)


def http_only_fleet(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    ok(kb_as("init", "--issuer", "http://127.0.0.1:8080", db=db, cwd=tmp_path))
    ok(kb_as("rs", "add", "api", "--audience", "temp", "--scope", "read", "--out",
             "api-bundle.json", db=db, cwd=tmp_path))  # fmt: skip
    return db


def add_web_client(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    db = http_only_fleet(tmp_path)
    added = kb_as("client", "add", name, "--audience", "temp", "--scope", "read",
                  "--http-secret", "--no-oscore", *extra, db=db, cwd=tmp_path)  # fmt: skip
    assert added.returncode == 0, added.stderr
    return added


def test_secret_out_writes_the_client_secret_alone_0600(tmp_path: Path) -> None:
    added = add_web_client(tmp_path, "web-1", "--secret-out", "web-1.secret")
    secret_file = tmp_path / "web-1.secret"
    assert mode(secret_file) == 0o600
    secret = secret_file.read_text().strip()
    assert secret not in added.stdout + added.stderr  # written, not printed
    assert "client secret written to web-1.secret (0600)" in added.stdout
    bundle = json.loads((tmp_path / "web-1.json").read_text())
    assert bundle["http"]["client_secret"] == secret
    with SqlAuthzStore.open(f"sqlite:///{tmp_path / 'as.db'}") as store:
        assert store.verify_client_secret("web-1", secret).client_id == "web-1"


def test_secret_out_dash_prints_it_once_with_a_warning(tmp_path: Path) -> None:
    added = add_web_client(tmp_path, "web-2", "--secret-out", "-")
    secret = added.stdout.strip().splitlines()[-1]
    assert json.loads((tmp_path / "web-2.json").read_text())["http"]["client_secret"] == secret
    assert "warning: the client secret follows; the AS cannot show it again" in added.stderr


def test_http_secret_without_secret_out_says_where_the_secret_is(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    added = kb_as("client", "add", "web-3", "--audience", "temp", "--scope", "read",
                  "--http-secret", db=db, cwd=tmp_path)  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "http.client_secret" in added.stdout
    assert "--secret-out FILE" in added.stdout


def test_secret_out_needs_one_http_client(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    for extra, message in (
        ([], "keybound: --secret-out needs --http-secret"),
        (["--http-secret", "--count", "2"], "keybound: --secret-out takes one client"),
    ):
        result = kb_as("client", "add", "web", "--audience", "temp", "--scope", "read",
                       "--secret-out", "s.txt", *extra, db=db, cwd=tmp_path)  # fmt: skip
        assert result.returncode == 2
        assert result.stderr.startswith(message)
        assert not (tmp_path / "s.txt").exists()


def test_http_only_bundle_has_no_oscore_or_wifi(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    ok(kb_as("client", "add", "web-4", "--audience", "temp", "--scope", "read",
             "--http-secret", "--no-oscore", db=db, cwd=tmp_path))  # fmt: skip
    bundle = json.loads((tmp_path / "web-4.json").read_text())
    assert set(bundle) == {
        "kind", "version", "contains_secrets", "note", "client_id", "as_uri", "audience",
        "scope", "http",
    }  # fmt: skip


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
        [sys.executable, "-m", "keybound.tools.cli.as_commands", "show", "sensor-1", "--db", db],
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


def test_remove_json_names_what_was_removed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    ok(kb_as("init", db=db, cwd=tmp_path))
    ok(kb_as("rs", "add", "temp-rs", "--audience", "temp", "--scope", "read", db=db, cwd=tmp_path))
    ok(kb_as("client", "add", "sensor-1", "--audience", "temp", "--scope", "read", db=db,
             cwd=tmp_path))  # fmt: skip
    assert ok(kb_as("remove", "sensor-1", "--json", db=db, cwd=tmp_path)) == {
        "name": "sensor-1", "kind": "client", "removed": True,
    }  # fmt: skip
    assert ok(kb_as("remove", "temp-rs", "--json", db=db, cwd=tmp_path)) == {
        "name": "temp-rs", "kind": "resource_server", "removed": True,
    }  # fmt: skip
    assert ok(kb_as("list", "--json", db=db, cwd=tmp_path)) == {
        "resource_servers": [], "clients": [],
    }  # fmt: skip
    result = kb_as("remove", "sensor-1", "--json", db=db, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == "keybound: no client or resource server named 'sensor-1'\n"


def test_remove_without_json_says_what_was_removed(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    ok(kb_as("init", db=db, cwd=tmp_path))
    ok(kb_as("rs", "add", "temp-rs", "--audience", "temp", "--scope", "read", db=db, cwd=tmp_path))
    result = kb_as("remove", "temp-rs", db=db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "resource server temp-rs removed\n"


def test_client_rekey_gives_new_keys_and_a_new_bundle(db_url: str, tmp_path: Path) -> None:
    """``as client rekey``: new secret, salt and Sender ID in the store and in a new 0600
    bundle; an unknown client and an HTTP-only one are refused."""
    ok(kb_as("init", "--issuer", "coap://127.0.0.1:5683", db=db_url, cwd=tmp_path))
    for name, audience in (("temp-rs", "coap://127.0.0.1:5700"), ("led-rs", "led")):
        ok(kb_as("rs", "add", name, "--audience", audience, "--scope", "read", "--out",
                 f"{name}.json", db=db_url, cwd=tmp_path))  # fmt: skip
    ok(kb_as("client", "add", "dev", "--audience", "coap://127.0.0.1:5700", "--scope", "read",
             "--out", "old", db=db_url, cwd=tmp_path))  # fmt: skip
    ok(kb_as("client", "add", "web", "--audience", "led", "--scope", "read", "--http-secret",
             "--no-oscore", "--out", "old", db=db_url, cwd=tmp_path))  # fmt: skip
    old = json.loads((tmp_path / "old" / "dev.json").read_text())

    row = ok(kb_as("client", "rekey", "dev", "--out", "new", "--json", db=db_url, cwd=tmp_path))
    new = json.loads((tmp_path / "new" / "dev.json").read_text())
    assert mode(tmp_path / "new" / "dev.json") == 0o600
    assert row["oscore_sender_id"] == new["as_context"]["sender_id"]
    for key in ("master_secret", "master_salt", "sender_id"):
        assert new["as_context"][key] != old["as_context"][key], key
    assert new["as_context"]["recipient_id"] == old["as_context"]["recipient_id"]
    assert new["rs_uri"] == "coap://127.0.0.1:5700"  # the audience, as `device bundle` does
    with SqlAuthzStore.open(db_url) as store:
        client = store.get_client("dev")
        assert client is not None
        assert client.oscore is not None
        assert client.oscore.master_secret.hex() == new["as_context"]["master_secret"]
        assert client.grants == {"coap://127.0.0.1:5700": ("read",)}

    for args, says in (
        (("nobody",), "no client 'nobody'"),
        (("web",), "HTTP-only"),
    ):
        refused = kb_as("client", "rekey", *args, "--out", "new", db=db_url, cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout
        assert says in refused.stderr, refused.stderr
    unchanged = ok(kb_as("show", "dev", "--json", db=db_url, cwd=tmp_path))
    assert unchanged["oscore_sender_id"] == new["as_context"]["sender_id"]
    plain = kb_as("client", "rekey", "dev", "--out", "new", db=db_url, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert "the old bundle no longer works" in plain.stdout
