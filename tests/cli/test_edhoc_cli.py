"""The EDHOC credential commands: ``key generate --ccs``, ``as client add --credential``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import cbor2

from keybound.core.edhoc_credentials import Ccs, holds
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.keyfiles import read_edhoc_private_key
from tests.helpers.processes import run_keybound


def _generate(path: Path, *extra: str) -> Ccs:
    result = run_keybound("key", "generate", str(path), "--type", "p256", "--ccs", *extra)
    assert result.returncode == 0, result.stderr
    return Ccs.decode(path.with_name(path.name + ".ccs").read_bytes())


def test_key_generate_ccs_writes_a_private_key_0600_and_its_public_credential(
    tmp_path: Path,
) -> None:
    key = tmp_path / "dev.key"
    ccs = _generate(key, "--subject", "dev-1", "--kid", "d1")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ccs.subject == "dev-1"
    assert ccs.kid == b"d1"
    assert len(read_edhoc_private_key(key)) == 32
    # The credential holds the public key of the private key file, and nothing secret.
    assert b"d1" in ccs.encoded
    assert read_edhoc_private_key(key) not in ccs.encoded
    refused = run_keybound("key", "generate", str(key), "--ccs")
    assert refused.returncode == 2
    assert "exists already" in refused.stderr
    wrong = run_keybound("key", "generate", str(tmp_path / "x"), "--type", "ed25519", "--ccs")
    assert wrong.returncode == 2
    assert "p256" in wrong.stderr


def test_key_generate_signing_writes_a_signature_credential(tmp_path: Path) -> None:
    key = tmp_path / "rs.key"
    signing = _generate(key, "--signing", "--kid", "r1")
    assert signing.signs
    assert cbor2.loads(signing.encoded)[8][1][3] == -7  # cnf COSE_Key alg ES256
    assert holds(read_edhoc_private_key(key), signing)
    static = _generate(tmp_path / "dev.key", "--kid", "d1")
    assert not static.signs
    assert 3 not in cbor2.loads(static.encoded)[8][1]  # no alg: a static DH key


def test_signing_without_ccs_is_refused(tmp_path: Path) -> None:
    refused = run_keybound("key", "generate", str(tmp_path / "k"), "--signing")
    assert refused.returncode == 2
    assert "--signing needs --ccs" in refused.stderr
    assert not (tmp_path / "k").exists()


def test_as_registers_a_client_and_an_rs_by_their_credentials(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    rs_ccs = _generate(tmp_path / "rs.key")
    dev_ccs = _generate(tmp_path / "dev.key")
    assert run_keybound("as", "init", "--db", db).returncode == 0
    add_rs = run_keybound(
        "as", "rs", "add", "temp", "--audience", "tempSensor", "--scope", "temp.read",
        "--profile", "edhoc", "--profile", "oscore",
        "--credential", str(tmp_path / "rs.key.ccs"), "--out", str(tmp_path / "rs.json"),
        "--db", db,
    )  # fmt: skip
    assert add_rs.returncode == 0, add_rs.stderr
    bundle = json.loads((tmp_path / "rs.json").read_text())
    assert bytes.fromhex(bundle["edhoc_credential"]) == rs_ccs.encoded
    assert bundle["profiles"] == [4, 2]
    add = run_keybound(
        "as", "client", "add", "dev-1", "--audience", "tempSensor", "--scope", "temp.read",
        "--credential", str(tmp_path / "dev.key.ccs"), "--out", str(tmp_path), "--db", db,
        "--json",
    )  # fmt: skip
    assert add.returncode == 0, add.stderr
    assert json.loads(add.stdout)[0]["credential"] is True
    with SqlAuthzStore.open(db) as store:
        client = store.get_client("dev-1")
        rs = store.get_resource_server("temp")
    assert client is not None
    assert client.credential == dev_ccs.encoded
    assert rs is not None
    assert rs.credential == rs_ccs.encoded
    # A private key file is no credential: the AS refuses it.
    bad = run_keybound(
        "as", "client", "add", "dev-2", "--audience", "tempSensor", "--scope", "temp.read",
        "--credential", str(tmp_path / "dev.key"), "--out", str(tmp_path), "--db", db,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "cnf" in bad.stderr
    no_credential = run_keybound(
        "as", "rs", "add", "other", "--audience", "other", "--scope", "a",
        "--profile", "edhoc", "--db", db,
    )  # fmt: skip
    assert no_credential.returncode != 0
    assert "--credential" in no_credential.stderr
