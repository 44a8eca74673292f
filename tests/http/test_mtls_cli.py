"""``keybound as client add-tls`` and ``as serve --mtls``: registering RFC 8705 clients."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from keybound.core.tls_client_auth import PKI, SELF_SIGNED, TlsClientRegistration
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.processes import run_keybound
from tests.http.certificates import make_pair


def kb_as(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return run_keybound("as", *args, "--db", db)


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def http_only_fleet(tmp_path: Path) -> str:
    """An AS with one resource server, audience temp."""
    db = f"sqlite:///{tmp_path / 'as.db'}"
    ok(kb_as("init", "--issuer", "http://127.0.0.1:8080", "--json", db=db))
    ok(kb_as("rs", "add", "api", "--audience", "temp", "--scope", "read", "--out",
             str(tmp_path / "api-bundle.json"), "--json", db=db))  # fmt: skip
    return db


def test_add_tls_registers_a_self_signed_certificate(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    pair, _, _ = make_pair(tmp_path, "device")
    row = ok(kb_as("client", "add-tls", "dev-1", "--audience", "temp", "--scope", "read",
                   "--self-signed", str(pair.cert), "--json", db=db))  # fmt: skip
    assert row["tls_client_auth"] == SELF_SIGNED
    with SqlAuthzStore.open(db) as store:
        client = store.get_client("dev-1")
    assert client is not None
    assert client.oscore is None
    assert not client.has_secret
    registration = TlsClientRegistration.decode(client.credential)
    assert registration is not None
    assert registration.certificate == pair.der
    assert row["x5t#S256"] == registration.thumbprint


def test_add_tls_registers_a_pki_client_by_san(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    row = ok(kb_as("client", "add-tls", "svc-1", "--audience", "temp", "--scope", "read",
                   "--san", "dns=svc.example", "--json", db=db))  # fmt: skip
    assert row["tls_client_auth"] == PKI
    with SqlAuthzStore.open(db) as store:
        client = store.get_client("svc-1")
    assert client is not None
    assert TlsClientRegistration.decode(client.credential) == TlsClientRegistration(
        method=PKI, san=("dns", "svc.example")
    )


def test_add_tls_needs_exactly_one_way(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    done = kb_as("client", "add-tls", "x", "--audience", "temp", "--scope", "read",
                 "--subject-dn", "CN=x", "--san", "dns=x", db=db)  # fmt: skip
    assert done.returncode == 2
    assert "give one of" in done.stderr


def test_add_tls_refuses_a_bad_san_kind(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    done = kb_as("client", "add-tls", "x", "--audience", "temp", "--scope", "read",
                 "--san", "phone=123", db=db)  # fmt: skip
    assert done.returncode == 2
    assert "SAN kind" in done.stderr


def test_serve_mtls_needs_https(tmp_path: Path) -> None:
    db = http_only_fleet(tmp_path)
    done = kb_as("serve", "--http", "127.0.0.1:1", "--mtls", db=db)
    assert done.returncode == 2
    assert "--mtls needs --http with --cert and --keyfile" in done.stderr
