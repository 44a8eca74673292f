"""The AS storage (keybound.tools.authz_server.storage) against real SQLite files and PostgreSQL.

Every test that takes ``db_url`` runs twice: on an SQLite file in tmp_path and
on a fresh PostgreSQL schema (skipped unless KEYBOUND_TEST_PG_URL is set).
"""

from __future__ import annotations

import itertools
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from keybound.coap.token_writer import TokenNotRecorded, TokenWriter
from keybound.core.authz_store import (
    AuthzStore,
    ClientRegistration,
    DuplicateRecord,
    InvalidRecord,
    IssuedToken,
    OscoreContext,
    UnknownRecord,
)
from keybound.core.errors import InvalidClient, KeyboundError
from keybound.tools.authz_server.database import (
    DEFAULT_DATABASE_NAME,
    StorageError,
    resolve_database_url,
)
from keybound.tools.authz_server.schema import SCHEMA_VERSION
from keybound.tools.authz_server.storage import SqlAuthzStore
from tests.helpers.authz import gated_writer

# Key material is opaque to the store; these stand in for COSE_Key bytes.
SIGNING_KEY = bytes.fromhex("a5010202412a2001215820") + bytes(range(32))
TOKEN_KEY_1 = bytes.fromhex("a3010404410120") + b"\x50" + bytes(range(16))
TOKEN_KEY_2 = bytes.fromhex("a3010404410220") + b"\x50" + bytes(range(16, 32))
TOKEN_KEY_3 = bytes.fromhex("a3010404410320") + b"\x50" + bytes(range(32, 48))
NOW = 1_700_000_000


def _oscore(secret: bytes = b"\x01" * 16) -> OscoreContext:
    return OscoreContext(
        master_secret=secret, sender_id=b"\x01", recipient_id=b"\x00", master_salt=b"\x9e\x7c"
    )


@pytest.fixture
def store(db_url: str) -> Iterator[SqlAuthzStore]:
    with SqlAuthzStore.init(db_url) as opened:
        yield opened


@pytest.fixture
def with_rs(store: SqlAuthzStore) -> SqlAuthzStore:
    store.add_resource_server(
        "gateway",
        "coap://gw.example",
        scopes=["temp", "humidity", "config"],
        token_key=TOKEN_KEY_1,
        token_kid=b"k1",
        now=NOW,
    )
    store.add_resource_server(
        "clockless",
        "coap://sensor.example",
        scopes=["read"],
        token_key=TOKEN_KEY_1,
        token_kid=b"k1",
        has_clock=False,
        now=NOW,
    )
    return store


def _schema_version(db_url: str) -> int:
    engine = create_engine(resolve_database_url(db_url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT schema_version FROM keybound_meta")).scalar_one())
    finally:
        engine.dispose()


def _raw_execute(db_url: str, sql: str) -> None:
    engine = create_engine(resolve_database_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


# ---- schema ----------------------------------------------------------------------------------


def test_init_then_open(db_url: str) -> None:
    SqlAuthzStore.init(db_url).close()
    with SqlAuthzStore.open(db_url) as store:
        assert store.get_issuer() is None
    SqlAuthzStore.init(db_url).close()  # initialising again leaves the database alone


def test_open_refuses_an_empty_database(db_url: str) -> None:
    if db_url.startswith("sqlite:///"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # an empty SQLite database
    with pytest.raises(StorageError, match="is empty: initialise it first"):
        SqlAuthzStore.open(db_url)


def test_open_creates_nothing(tmp_path: Path) -> None:
    """Only ``init`` creates a database; opening a missing one leaves no file behind."""
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match=f"no AS database at {missing}: create it with"):
        SqlAuthzStore.open(f"sqlite:///{missing}")
    with pytest.raises(StorageError, match="no AS database at notaurl"):
        SqlAuthzStore.open("notaurl")
    assert not missing.exists()
    assert not Path("notaurl").exists()


def test_init_creates_no_directories(tmp_path: Path) -> None:
    target = tmp_path / "no" / "such" / "dir" / "as.db"
    with pytest.raises(StorageError, match=f"the directory {target.parent} does not exist"):
        SqlAuthzStore.init(f"sqlite:///{target}")
    assert not (tmp_path / "no").exists()


def test_refuses_a_database_without_keybound_meta(db_url: str) -> None:
    _raw_execute(db_url, "CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    with pytest.raises(StorageError, match=r"holds tables \(invoices\) but no keybound_meta"):
        SqlAuthzStore.open(db_url)
    with pytest.raises(StorageError, match="not a keybound AS database"):
        SqlAuthzStore.init(db_url)


def test_refuses_a_newer_schema(db_url: str) -> None:
    SqlAuthzStore.init(db_url).close()
    _raw_execute(db_url, f"UPDATE keybound_meta SET schema_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StorageError, match="written by a newer keybound"):
        SqlAuthzStore.open(db_url)


def test_refuses_an_unknown_schema_version(db_url: str) -> None:
    SqlAuthzStore.init(db_url).close()
    _raw_execute(db_url, "UPDATE keybound_meta SET schema_version = 0")
    with pytest.raises(StorageError, match="unknown schema version 0"):
        SqlAuthzStore.open(db_url)


def test_schema_1_sequence_token_records_are_migrated(db_url: str) -> None:
    """Schema 1 recorded sequence number 24 under ``AUDIENCE#6168`` (the integer value of
    its CBOR encoding ``h'1818'``); opening the database rekeys such tokens, loses none."""
    with SqlAuthzStore.init(db_url) as store:
        old_keys = {0: b"door#0", 23: b"door#23", 24: b"door#6168", 65536: b"door#111669215232"}
        for number, key in old_keys.items():
            store.record_token(_token(key, audience="door", exi=60, sequence=number))
        store.record_token(_token(b"\x01\x02", exp=NOW + 60))
    _downgrade_to_schema_2(db_url)
    _raw_execute(db_url, "UPDATE keybound_meta SET schema_version = 1")
    # Schema 1 had no introspection secrets; migrating adds the column back.
    _raw_execute(
        db_url, "ALTER TABLE keybound_resource_servers DROP COLUMN introspection_secret_hash"
    )
    with SqlAuthzStore.open(db_url) as store:
        for number in old_keys:
            record = store.get_token(f"door#{number}".encode())
            assert record is not None, number
            assert record.sequence == number
        assert store.get_token(b"door#6168") is None
        assert store.get_token(b"\x01\x02") is not None
        assert len(store.list_tokens("dev")) == 5
    version = _schema_version(db_url)
    assert version == SCHEMA_VERSION == 5


def _drop_credential_columns(db_url: str) -> None:
    for table in ("keybound_clients", "keybound_resource_servers"):
        _raw_execute(db_url, f"ALTER TABLE {table} DROP COLUMN credential")


def test_schema_3_gains_credential_columns(db_url: str) -> None:
    """Schema 3 -> 4 adds the EDHOC credential columns; existing rows keep everything
    and have no credential, and a credential can then be stored and read back."""
    with SqlAuthzStore.init(db_url) as store:
        store.add_resource_server(
            "door", "door", scopes=["open"], token_key=b"k" * 16, token_kid=b"1", now=NOW
        )
        store.add_client(ClientRegistration("dev", grants={"door": ["open"]}), now=NOW)
    _raw_execute(db_url, "UPDATE keybound_meta SET schema_version = 3")
    _drop_credential_columns(db_url)
    with SqlAuthzStore.open(db_url) as store:
        client = store.get_client("dev")
        assert client is not None
        assert client.credential is None
        assert client.grants == {"door": ("open",)}
        rs = store.set_rs_credential("door", b"\xa1\x08\xa0")
        assert rs.credential == b"\xa1\x08\xa0"
        store.add_client(ClientRegistration("dev2", credential=b"\xa0"), now=NOW)
    with SqlAuthzStore.open(db_url) as store:
        again = store.get_client("dev2")
        assert again is not None
        assert again.credential == b"\xa0"
        door = store.get_resource_server("door")
        assert door is not None
        assert door.credential == b"\xa1\x08\xa0"


def test_schema_4_gains_the_oscore_sequences_table(db_url: str) -> None:
    """4 -> 5: the CoAP site's OSCORE sequence state gets a table; the rest is kept."""
    with SqlAuthzStore.init(db_url) as store:
        store.add_client(ClientRegistration("dev", oscore=_oscore()), now=NOW)
    _raw_execute(db_url, "DROP TABLE keybound_oscore_sequences")
    _raw_execute(db_url, "DROP TABLE keybound_config_version")
    _raw_execute(db_url, "UPDATE keybound_meta SET schema_version = 4")
    with SqlAuthzStore.open(db_url) as store:
        assert [(kind, name) for kind, name, _ in store.list_oscore_peers()] == [("client", "dev")]
        before = store.config_version()
        store.remove_client("dev")
        assert store.config_version() == before + 1
        assert store.start_oscore_state("ctx", mark=7)
        assert store.reserve_oscore_sequence("ctx", 3) == 10
    version = _schema_version(db_url)
    assert version == 5


def _downgrade_to_schema_2(db_url: str) -> None:
    """Take away what schemas 3 to 5 added (token hashes, the TRL tables, credentials,
    OSCORE sequence state, the configuration version)."""
    _raw_execute(db_url, "DROP TABLE keybound_oscore_sequences")
    _raw_execute(db_url, "DROP TABLE keybound_config_version")
    _drop_credential_columns(db_url)
    _raw_execute(db_url, "DROP TABLE keybound_trl_series")
    _raw_execute(db_url, "DROP TABLE keybound_trl_updates")
    _raw_execute(db_url, "DROP INDEX ix_keybound_tokens_token_hash")
    _raw_execute(db_url, "ALTER TABLE keybound_tokens DROP COLUMN token_hash")
    _raw_execute(db_url, "ALTER TABLE keybound_tokens DROP COLUMN trl_state")
    _raw_execute(db_url, "UPDATE keybound_meta SET schema_version = 2")


def test_schema_2_tokens_are_kept_and_stay_off_the_trl(db_url: str) -> None:
    """2 -> 3: tokens issued before keep their records, have no hash, cannot be listed."""
    with SqlAuthzStore.init(db_url) as store:
        store.record_token(_token(b"\x01\x02", exp=NOW + 60))
    _downgrade_to_schema_2(db_url)
    with SqlAuthzStore.open(db_url) as store:
        before = store.get_token(b"\x01\x02")
        assert before is not None
        assert before.token_hash is None
        store.revoke(b"\x01\x02", now=NOW)
        assert store.trl_version() == 0  # revoked for introspection, not on the TRL
        record = _token(b"\x03", exp=NOW + 60)
        store.record_token(replace(record, token_hash=b"\x01" + bytes(32)))
        store.revoke(b"\x03", now=NOW)
        assert store.trl_version() == 1


def test_refuses_a_damaged_database(db_url: str) -> None:
    SqlAuthzStore.init(db_url).close()
    _raw_execute(db_url, "DROP TABLE keybound_tokens")
    with pytest.raises(StorageError, match=r"lacks tables.*keybound_tokens"):
        SqlAuthzStore.open(db_url)


def test_storage_error_is_an_authz_store_error_not_a_protocol_error() -> None:
    from keybound.core.authz_store import AuthzStoreError

    assert issubclass(StorageError, AuthzStoreError)
    assert not issubclass(StorageError, KeyboundError)


# ---- location and file permissions -------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_sqlite_file_is_private_even_with_an_open_umask(tmp_path: Path) -> None:
    path = tmp_path / "as.db"  # a named database goes in a directory that exists
    old_umask = os.umask(0)
    try:
        with SqlAuthzStore.init(f"sqlite:///{path}") as store:
            store.set_issuer("https://as.example", SIGNING_KEY, now=NOW)
            assert _mode(path) == 0o600
            # WAL mode: SQLite gives its side files the database file's mode.
            for side in ("-wal", "-shm"):
                side_file = path.with_name(path.name + side)
                assert side_file.exists()
                assert _mode(side_file) == 0o600
    finally:
        os.umask(old_umask)


@pytest.mark.skipif(sys.platform != "linux", reason="XDG data directory")
def test_default_location_is_the_user_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = tmp_path / "data" / "keybound" / DEFAULT_DATABASE_NAME
    with pytest.raises(StorageError, match="no AS database at"):
        SqlAuthzStore.open()
    assert not (tmp_path / "data").exists()
    old_umask = os.umask(0)
    try:
        store = SqlAuthzStore.init()  # the default location's directory is made, 0700
    finally:
        os.umask(old_umask)
    with store:
        assert store.url == f"sqlite:///{expected}"
    assert _mode(expected) == 0o600
    assert _mode(expected.parent) == 0o700


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "as.db"
    SqlAuthzStore.init(path.as_posix()).close()  # a plain path means an SQLite file
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


def test_url_resolution() -> None:
    assert resolve_database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert resolve_database_url("relative/as.db").database == "relative/as.db"
    with pytest.raises(StorageError, match="unsupported database 'mysql'"):
        resolve_database_url("mysql://u@h/db")


def test_unreachable_server_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot use postgresql"):
        SqlAuthzStore.open("postgresql://nobody@127.0.0.1:1/nothing?connect_timeout=2")


def test_in_memory_database_for_tests() -> None:
    with SqlAuthzStore.init("sqlite://") as store:
        store.set_issuer("https://as.example", SIGNING_KEY)
        assert store.get_issuer() is not None


# ---- issuer ----------------------------------------------------------------------------------


def test_issuer_set_and_replace(store: SqlAuthzStore) -> None:
    assert store.get_issuer() is None
    store.set_issuer("https://as.example", SIGNING_KEY, now=NOW)
    issuer = store.get_issuer()
    assert issuer is not None
    assert (issuer.issuer, issuer.signing_key, issuer.created) == (
        "https://as.example",
        SIGNING_KEY,
        NOW,
    )
    assert SIGNING_KEY.hex() not in repr(issuer)
    store.set_issuer("https://as2.example", SIGNING_KEY[::-1], now=NOW + 1)
    replaced = store.get_issuer()
    assert replaced is not None
    assert replaced.issuer == "https://as2.example"
    assert replaced.signing_key == SIGNING_KEY[::-1]


# ---- resource servers ------------------------------------------------------------------------


def test_resource_server_round_trip(store: SqlAuthzStore) -> None:
    context = OscoreContext(
        master_secret=b"\x11" * 16,
        sender_id=b"\x02",
        recipient_id=b"\x03",
        master_salt=b"",
        id_context=b"\x37\xcb",
    )
    added = store.add_resource_server(
        "gateway",
        "coap://gw.example",
        scopes=["temp", "config", "temp"],
        token_key=TOKEN_KEY_1,
        token_kid=b"k1",
        has_clock=False,
        profiles=[2, 1],
        default_lifetime=600,
        introspection_context=context,
        now=NOW,
    )
    assert added.scopes == ("temp", "config")  # duplicates dropped, order kept
    assert added.token_key.key == TOKEN_KEY_1
    assert added.token_key.version == 1
    assert added.profiles == (2, 1)
    assert added.introspection_context == context
    assert store.get_resource_server("gateway") == added
    assert store.get_resource_server_by_audience("coap://gw.example") == added
    assert store.get_resource_server("nope") is None
    assert store.get_resource_server_by_audience("coap://nope") is None
    assert b"\x11" * 16 not in repr(added).encode()


def test_resource_server_defaults(store: SqlAuthzStore) -> None:
    added = store.add_resource_server(
        "rs", "aud", scopes=["r"], token_key=TOKEN_KEY_1, token_kid=b"k"
    )
    assert added.profiles == (2,)  # coap_oscore (RFC 9203)
    assert added.has_clock is True
    assert added.introspection_context is None
    assert added.default_lifetime == 3600


def test_resource_server_uniqueness_and_validation(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    with pytest.raises(DuplicateRecord):
        store.add_resource_server("gateway", "other", scopes=[], token_key=b"k", token_kid=b"1")
    with pytest.raises(DuplicateRecord):
        store.add_resource_server(
            "other", "coap://gw.example", scopes=[], token_key=b"k", token_kid=b"1"
        )
    with pytest.raises(InvalidRecord, match="not a scope value"):
        store.add_resource_server("x", "x", scopes=["a b"], token_key=b"k", token_kid=b"1")
    with pytest.raises(InvalidRecord, match="not one string"):
        store.add_resource_server("x", "x", scopes="read", token_key=b"k", token_kid=b"1")
    with pytest.raises(InvalidRecord, match="profile"):
        store.add_resource_server("x", "x", scopes=[], profiles=[], token_key=b"k", token_kid=b"1")
    assert [rs.name for rs in store.list_resource_servers()] == ["clockless", "gateway"]


def test_remove_resource_server(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    store.add_client(ClientRegistration("dev", grants={"coap://gw.example": ["temp"]}))
    store.remove_resource_server("gateway")
    assert store.get_resource_server("gateway") is None
    client = store.get_client("dev")
    assert client is not None
    assert client.grants == {}
    with pytest.raises(UnknownRecord):
        store.remove_resource_server("gateway")


def test_token_key_rotation_keeps_the_previous_version(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    rotated = store.rotate_token_key("gateway", TOKEN_KEY_2, b"k2", now=NOW + 10)
    assert [k.version for k in rotated.token_keys] == [2, 1]
    assert rotated.token_key.key == TOKEN_KEY_2
    assert rotated.token_keys[1].retired == NOW + 10
    assert rotated.token_key.retired is None
    old = rotated.token_key_by_kid(b"k1")
    assert old is not None
    assert old.key == TOKEN_KEY_1

    again = store.rotate_token_key("gateway", TOKEN_KEY_3, b"k3", now=NOW + 20)
    assert [k.version for k in again.token_keys] == [3, 2]  # version 1 is gone
    assert again.token_key_by_kid(b"k1") is None
    assert again.token_keys[1].retired == NOW + 20
    assert store.get_resource_server("gateway") == again

    with pytest.raises(DuplicateRecord, match="kid"):
        store.rotate_token_key("gateway", TOKEN_KEY_1, b"k2")
    kept_two = store.rotate_token_key("gateway", TOKEN_KEY_1, b"k4", keep_previous=2)
    assert [k.version for k in kept_two.token_keys] == [4, 3, 2]
    only_new = store.rotate_token_key("gateway", TOKEN_KEY_2, b"k5", keep_previous=0)
    assert [k.version for k in only_new.token_keys] == [5]
    # The other RS is untouched.
    other = store.get_resource_server("clockless")
    assert other is not None
    assert [k.version for k in other.token_keys] == [1]
    with pytest.raises(UnknownRecord):
        store.rotate_token_key("nope", TOKEN_KEY_2, b"k9")


# ---- clients ---------------------------------------------------------------------------------


def test_client_round_trip(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    added = store.add_client(
        ClientRegistration(
            "esp32-0001",
            oscore=_oscore(),
            public_key=b"\xa4\x01\x02",
            grants={"coap://gw.example": ["temp", "humidity"], "coap://sensor.example": ["read"]},
        ),
        now=NOW,
    )
    assert added.has_secret is False
    assert added.allowed_scopes("coap://gw.example") == ("temp", "humidity")
    assert added.allowed_scopes("coap://elsewhere") == ()
    fetched = store.get_client("esp32-0001")
    assert fetched == added
    assert store.get_client("nope") is None
    assert [c.client_id for c in store.list_clients()] == ["esp32-0001"]
    with pytest.raises(DuplicateRecord):
        store.add_client(ClientRegistration("esp32-0001"))
    store.remove_client("esp32-0001")
    assert store.get_client("esp32-0001") is None
    with pytest.raises(UnknownRecord):
        store.remove_client("esp32-0001")


def test_grants_are_checked_against_resource_servers(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    with pytest.raises(UnknownRecord, match="no resource server has this audience"):
        store.add_client(ClientRegistration("a", grants={"coap://unknown": ["x"]}))
    with pytest.raises(InvalidRecord, match=r"has no scopes \['write'\]"):
        store.add_client(ClientRegistration("a", grants={"coap://gw.example": ["write"]}))
    assert store.get_client("a") is None

    store.add_client(ClientRegistration("a", grants={"coap://gw.example": ["temp"]}))
    updated = store.set_grants("a", {"coap://sensor.example": ["read"]})
    assert updated.grants == {"coap://sensor.example": ("read",)}
    assert store.set_grants("a", {}).grants == {}
    with pytest.raises(UnknownRecord):
        store.set_grants("nobody", {})


def test_oscore_context_rules() -> None:
    with pytest.raises(InvalidRecord, match="must differ"):
        OscoreContext(master_secret=b"s", sender_id=b"\x01", recipient_id=b"\x01")
    with pytest.raises(InvalidRecord, match="must not be empty"):
        OscoreContext(master_secret=b"", sender_id=b"\x01", recipient_id=b"\x02")


def test_client_secret_verification(with_rs: SqlAuthzStore, db_url: str) -> None:
    store = with_rs
    store.add_client(ClientRegistration("web", secret="correct horse battery staple"))
    store.add_client(ClientRegistration("device", oscore=_oscore()))

    client = store.verify_client_secret("web", "correct horse battery staple")
    assert client.client_id == "web"
    assert client.has_secret
    with pytest.raises(InvalidClient, match="client authentication failed"):
        store.verify_client_secret("web", "correct horse battery stapler")
    with pytest.raises(InvalidClient, match="client authentication failed"):
        store.verify_client_secret("nobody", "correct horse battery staple")
    with pytest.raises(InvalidClient, match="client authentication failed"):
        store.verify_client_secret("device", "")
    with pytest.raises(InvalidRecord, match="empty secret"):
        ClientRegistration("x", secret="")

    # The secret is stored salted and hashed: two clients with one secret differ.
    store.add_client(ClientRegistration("web2", secret="correct horse battery staple"))
    engine = create_engine(resolve_database_url(db_url))
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT client_id, secret_hash FROM keybound_clients")).all()
    hashes: dict[str, str | None] = {row.client_id: row.secret_hash for row in rows}
    engine.dispose()
    web_hash = hashes["web"]
    assert web_hash is not None
    assert web_hash.startswith("scrypt$")
    assert web_hash != hashes["web2"]
    assert "staple" not in web_hash
    assert hashes["device"] is None


def test_unknown_client_costs_about_as_much_as_a_wrong_secret(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    store.add_client(ClientRegistration("web", secret="s3cret"))

    def cost(client_id: str) -> float:
        start = time.perf_counter()
        with pytest.raises(InvalidClient):
            store.verify_client_secret(client_id, "wrong")
        return time.perf_counter() - start

    wrong = min(cost("web") for _ in range(3))
    unknown = min(cost("nobody") for _ in range(3))
    assert unknown > wrong / 3  # both run scrypt; a bare lookup would be ~100x faster


def test_batch_add_of_100_clients(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    registrations = [
        ClientRegistration(
            f"esp32-{i:04d}",
            oscore=_oscore(i.to_bytes(2, "big") * 8),
            grants={"coap://gw.example": ["temp"], "coap://sensor.example": ["read"]},
        )
        for i in range(100)
    ]
    added = store.add_clients(registrations, now=NOW)
    assert len(added) == 100
    listed = store.list_clients()
    assert [c.client_id for c in listed] == [r.client_id for r in registrations]
    assert listed == added
    assert listed[42].oscore is not None
    assert listed[42].oscore.master_secret == (42).to_bytes(2, "big") * 8

    # All or nothing: one clash at the end of a batch adds none of it.
    clash = [ClientRegistration(f"new-{i}") for i in range(50)] + [ClientRegistration("esp32-0007")]
    with pytest.raises(DuplicateRecord, match="esp32-0007"):
        store.add_clients(clash)
    with pytest.raises(DuplicateRecord, match="more than once"):
        store.add_clients([ClientRegistration("twice"), ClientRegistration("twice")])
    bad_grant = [ClientRegistration("new-a"), ClientRegistration("new-b", grants={"zz": ["x"]})]
    with pytest.raises(UnknownRecord):
        store.add_clients(bad_grant)
    assert len(store.list_clients()) == 100
    assert store.add_clients([]) == []


# ---- tokens ----------------------------------------------------------------------------------


def _token(cti: bytes, client_id: str = "dev", iat: int = NOW, **fields: object) -> IssuedToken:
    values: dict[str, object] = {"audience": "coap://gw.example", "scope": "temp", "format": "cwt"}
    values.update(fields)
    return IssuedToken(cti=cti, client_id=client_id, iat=iat, **values)  # type: ignore[arg-type]


def test_record_get_and_revoke(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    token = _token(b"\x01\x02", exp=NOW + 3600, cnf_id=b"\xaa" * 32)
    store.record_token(token)
    assert store.get_token(b"\x01\x02") == token
    assert store.get_token(b"\x09") is None
    with pytest.raises(DuplicateRecord):
        store.record_token(token)

    revoked = store.revoke(b"\x01\x02", now=NOW + 5)
    assert revoked.revoked
    assert revoked.revoked_at == NOW + 5
    again = store.revoke(b"\x01\x02", now=NOW + 99)
    assert again.revoked_at == NOW + 5  # the first revocation counts
    stored = store.get_token(b"\x01\x02")
    assert stored is not None
    assert stored.revoked
    with pytest.raises(UnknownRecord):
        store.revoke(b"\x09")


def test_exi_token_fields(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    sequence = store.next_sequence("coap://sensor.example")
    token = IssuedToken(
        cti=sequence.to_bytes(4, "big"),
        client_id="dev",
        audience="coap://sensor.example",
        scope="read",
        format="cwt",
        iat=NOW,
        exi=600,
        sequence=sequence,
    )
    store.record_token(token)
    assert store.get_token(token.cti) == token
    with pytest.raises(InvalidRecord, match="exi"):
        _token(b"\x01", exi=0)
    with pytest.raises(InvalidRecord, match="format"):
        _token(b"\x01", format="saml")


def test_list_and_purge_tokens(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    for i in range(5):
        store.record_token(_token(bytes([i]), iat=NOW + i, exp=NOW + 100 + i))
    store.record_token(_token(b"\xff", client_id="other", iat=NOW, exp=NOW + 100))
    store.record_token(_token(b"\xfe", client_id="dev", iat=NOW - 1, exi=60))
    store.revoke(bytes([3]))

    listed = store.list_tokens("dev")
    assert [t.cti for t in listed] == [b"\x04", b"\x03", b"\x02", b"\x01", b"\x00", b"\xfe"]
    active = store.list_tokens("dev", include_revoked=False, limit=3)
    assert [t.cti for t in active] == [b"\x04", b"\x02", b"\x01"]
    assert store.list_tokens("nobody") == []

    assert store.purge_expired_tokens(NOW + 102) == 3  # exp NOW+100 (two clients), +101
    assert [t.cti for t in store.list_tokens("dev")] == [b"\x04", b"\x03", b"\x02", b"\xfe"]


# ---- group commit of token records (keybound.coap.token_writer) ---------------------------


def _record_concurrently(writer: TokenWriter, tokens: list[IssuedToken]) -> list[str | None]:
    """Record ``tokens[0]`` first, then the rest from one thread each; each one's error."""
    errors: list[str | None] = [None] * len(tokens)

    def record(i: int) -> None:
        try:
            writer.record(tokens[i])
        except TokenNotRecorded as exc:
            errors[i] = str(exc)

    leader = threading.Thread(target=record, args=(0,))
    leader.start()
    while writer.commits == 0 and not writer.committing:
        time.sleep(0.001)
    others = [threading.Thread(target=record, args=(i,)) for i in range(1, len(tokens))]
    for thread in others:
        thread.start()
    for thread in [leader, *others]:
        thread.join(60)
        assert not thread.is_alive()
    return errors


def test_concurrent_token_records_share_commits(with_rs: SqlAuthzStore) -> None:
    count = 40
    writer = gated_writer(with_rs, count - 1)
    tokens = [_token(i.to_bytes(2, "big"), exp=NOW + 60) for i in range(count)]
    assert _record_concurrently(writer, tokens) == [None] * count
    assert writer.commits == 2  # the first row, then the 39 that queued behind it
    assert all(with_rs.get_token(t.cti) == t for t in tokens)
    assert len(with_rs.list_tokens("dev")) == count


def test_a_failing_commit_fails_every_request_in_it(with_rs: SqlAuthzStore) -> None:
    count = 10
    writer = gated_writer(with_rs, count - 1)
    first = _token(b"\x00\x00", exp=NOW + 60)
    # The last row repeats the first's cti: the second commit fails on the primary key.
    rest = [_token(i.to_bytes(2, "big"), exp=NOW + 60) for i in range(1, count - 1)]
    errors = _record_concurrently(writer, [first, *rest, first])
    assert errors[0] is None
    for error in errors[1:]:
        assert error is not None
        assert error.startswith("the token was not recorded, so it is not issued:")
    assert writer.commits == 2
    assert [t.cti for t in with_rs.list_tokens("dev")] == [first.cti]  # none of the batch
    later = _token(b"\x01\x00", exp=NOW + 60)
    writer.record(later)  # the writer goes on after a failed commit
    assert with_rs.get_token(later.cti) == later


def test_no_row_is_left_waiting_after_a_commit(with_rs: SqlAuthzStore) -> None:
    writer = TokenWriter(with_rs.record_tokens)
    tokens = [_token(i.to_bytes(2, "big"), exp=NOW + 60) for i in range(300)]
    threads = [threading.Thread(target=writer.record, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    assert writer.waiting == 0
    assert not writer.committing
    assert 1 <= writer.commits <= len(tokens)
    assert len(with_rs.list_tokens("dev")) == len(tokens)


# ---- sequence numbers (RFC 9200 §5.10.3) ----------------------------------------------------


def test_sequence_numbers(with_rs: SqlAuthzStore) -> None:
    store = with_rs
    assert [store.next_sequence("coap://sensor.example") for _ in range(3)] == [1, 2, 3]
    assert store.next_sequence("coap://gw.example") == 1  # per audience
    with pytest.raises(UnknownRecord):
        store.next_sequence("coap://unknown")

    # Removing and re-adding an RS must not restart its counter.
    store.remove_resource_server("clockless")
    with pytest.raises(UnknownRecord):
        store.next_sequence("coap://sensor.example")
    store.add_resource_server(
        "clockless2",
        "coap://sensor.example",
        scopes=["read"],
        token_key=TOKEN_KEY_2,
        token_kid=b"k2",
        has_clock=False,
    )
    assert store.next_sequence("coap://sensor.example") == 4


def test_two_stores_on_one_database_never_hand_out_the_same_sequence_number(
    with_rs: SqlAuthzStore, db_url: str
) -> None:
    # Two AS stores on one database, taking numbers in turn: no block is held by either,
    # so the numbers the RS sees increase in the order they were issued.
    first, second = with_rs, SqlAuthzStore.open(db_url)
    audience = "coap://sensor.example"
    with second:
        taken = [(first if i % 3 else second).next_sequence(audience) for i in range(30)]
    assert taken == list(range(1, 31))


def test_a_returned_sequence_number_is_committed(with_rs: SqlAuthzStore, db_url: str) -> None:
    audience = "coap://sensor.example"
    assert with_rs.next_sequence(audience) == 1
    with_rs.close()  # no further statement after the return: the number was committed
    with SqlAuthzStore.open(db_url) as reopened:
        assert reopened.next_sequence(audience) == 2


_ALLOCATOR = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from keybound.tools.authz_server.storage import SqlAuthzStore

    url, audience, count, ready, go = sys.argv[1:]
    store = SqlAuthzStore.open(url)
    store.get_issuer()  # connect before the start line
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.001)
    numbers = [store.next_sequence(audience) for _ in range(int(count))]
    store.close()
    print(" ".join(map(str, numbers)))
    """
)


def _two_processes(tmp_path: Path, script: str, *args: str) -> list[list[int]]:
    """Run ``script ARGS... READY GO`` in two processes started together; their numbers."""
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, *args, str(tmp_path / f"ready-{i}"), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.01)
    go.touch()
    results: list[list[int]] = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append([int(n) for n in out.split()])
    return results


def test_sequence_numbers_from_two_processes(
    with_rs: SqlAuthzStore, db_url: str, tmp_path: Path
) -> None:
    store = with_rs
    audience = "coap://sensor.example"
    first = store.next_sequence(audience)
    per_process = 200
    results = _two_processes(tmp_path, _ALLOCATOR, db_url, audience, str(per_process))
    for numbers in results:
        assert len(numbers) == per_process
        assert all(a < b for a, b in itertools.pairwise(numbers))
    everything = results[0] + results[1]
    assert len(set(everything)) == 2 * per_process
    assert set(everything) == set(range(first + 1, first + 1 + 2 * per_process))
    assert store.next_sequence(audience) == first + 2 * per_process + 1


def test_oscore_peers_are_clients_and_resource_servers_with_a_context(
    with_rs: SqlAuthzStore,
) -> None:
    store = with_rs
    store.add_client(ClientRegistration("with", oscore=_oscore()), now=NOW)
    store.add_client(ClientRegistration("without", secret="s3cret"), now=NOW)
    store.add_resource_server(
        "introspecting",
        "coap://i.example",
        scopes=["read"],
        token_key=TOKEN_KEY_1,
        token_kid=b"k1",
        introspection_context=_oscore(b"\x02" * 16),
        now=NOW,
    )
    assert sorted(store.list_oscore_peers(), key=lambda p: p[0]) == [
        ("client", "with", _oscore()),
        ("rs", "introspecting", _oscore(b"\x02" * 16)),
    ]


def test_every_change_of_the_configuration_bumps_its_version(with_rs: SqlAuthzStore) -> None:
    """What issuing caches (clients, grants, RSs, keys) changes only with a new version."""
    store = with_rs
    changes = [
        lambda: store.add_client(ClientRegistration("c", oscore=_oscore()), now=NOW),
        lambda: store.set_grants("c", {"coap://gw.example": ["temp"]}),
        lambda: store.set_client_oscore("c", _oscore(b"\x03" * 16)),
        lambda: store.rotate_token_key("gateway", TOKEN_KEY_2, b"k2", now=NOW),
        lambda: store.set_rs_credential("gateway", b"\xa0"),
        lambda: store.set_introspection_secret("gateway", "pw"),
        lambda: store.remove_client("c"),
        lambda: store.remove_resource_server("clockless"),
        lambda: store.add_resource_server(
            "again", "coap://a.example", scopes=["x"], token_key=TOKEN_KEY_1, token_kid=b"1"
        ),
        lambda: store.set_issuer("coap://as.example", SIGNING_KEY, now=NOW),
    ]
    for change in changes:
        before = store.config_version()
        change()
        assert store.config_version() == before + 1
    before = store.config_version()
    store.record_token(_token(b"\x09", exp=NOW + 60))  # issuing is no configuration change
    store.next_sequence("coap://a.example")
    assert store.config_version() == before


def test_a_refused_change_leaves_the_version(with_rs: SqlAuthzStore) -> None:
    before = with_rs.config_version()
    with pytest.raises(UnknownRecord):
        with_rs.remove_client("nobody")
    assert with_rs.config_version() == before


def test_oscore_sequence_state_starts_once(store: SqlAuthzStore) -> None:
    assert store.start_oscore_state("ctx", mark=100)
    assert not store.start_oscore_state("ctx", mark=0)  # the second start changes nothing
    assert store.reserve_oscore_sequence("ctx", 16) == 116  # [100, 116)
    assert store.reserve_oscore_sequence("ctx", 32) == 148  # [116, 148)


def test_oscore_sequence_of_an_unstarted_context_is_refused(store: SqlAuthzStore) -> None:
    with pytest.raises(UnknownRecord):
        store.reserve_oscore_sequence("never-started", 16)


@pytest.mark.parametrize("count", [0, -1, 2**20 + 1])
def test_oscore_sequence_block_size_is_bounded(store: SqlAuthzStore, count: int) -> None:
    store.start_oscore_state("ctx")
    with pytest.raises(ValueError):
        store.reserve_oscore_sequence("ctx", count)


_RESERVER = textwrap.dedent(
    """
    import pathlib, sys, time
    from keybound.tools.authz_server.storage import SqlAuthzStore
    url, count, ready, go = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    with SqlAuthzStore.open(url) as store:
        store.start_oscore_state("shared")
        pathlib.Path(ready).touch()
        while not pathlib.Path(go).exists():
            time.sleep(0.001)
        for _ in range(count):
            print(store.reserve_oscore_sequence("shared", 4))
    """
)


def test_oscore_sequence_blocks_of_two_processes_never_overlap(
    store: SqlAuthzStore, db_url: str, tmp_path: Path
) -> None:
    """Two AS processes sharing one client context (one database): disjoint blocks."""
    ends = [end for out in _two_processes(tmp_path, _RESERVER, db_url, "100") for end in out]
    numbers = [n for end in ends for n in range(end - 4, end)]
    assert sorted(numbers) == list(range(800))


def test_is_an_authz_store(store: SqlAuthzStore) -> None:
    as_protocol: AuthzStore = store
    assert as_protocol.get_issuer() is None
    assert "password" not in repr(store)
