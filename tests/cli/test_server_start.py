"""Servers must not start wrong: a taken port, a misspelt key, an unusable state file.

Each server prints one ready line once it listens and tells systemd (``READY=1``
on ``$NOTIFY_SOCKET``); a second server on the same address refuses to start.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiocoap
import pytest

from keybound.tools.keyfiles import write_edhoc_key
from keybound.tools.resource_server.daemon import KNOWN_KEYS, ConfigError, load_config
from keybound.tools.server_ready import READY_PREFIX, announce_ready, notify_systemd
from tests.helpers.paths import BIN
from tests.helpers.ports import free_port, free_udp_port
from tests.helpers.processes import run_keybound, start_server, wait_ready
from tests.helpers.rs import Keys, run, write_setup


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(20)


def second(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "keybound"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


async def unprotected_get(port: int) -> int:
    client = await aiocoap.Context.create_client_context()
    try:
        message = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/temp")
        response = await client.request(message).response
        return int(response.code)
    finally:
        await client.shutdown()


def test_second_rs_on_the_same_port_refuses_to_start(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = free_udp_port()
    config = write_setup(tmp_path, Keys(), port)
    procs.append(start_server(["rs", "serve", "--config", str(config)], tmp_path / "rs1.log"))
    other = tmp_path / "other"
    other.mkdir()
    config2 = write_setup(other, Keys(), port)
    result = second(["rs", "serve", "--config", str(config2)], other)
    assert result.returncode == 3, result
    assert result.stderr.splitlines() == [
        f"keybound: cannot listen on coap://127.0.0.1:{port}: "
        "the address is already in use (is another server running?)"
    ]
    assert READY_PREFIX not in result.stdout
    assert not (other / "state").exists(), "no state may be touched before the port is checked"
    assert procs[0].poll() is None
    assert run(unprotected_get(port)) == 0x81  # 4.01 Unauthorized: the first RS still serves


def _as_db(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'as.db'}"
    assert run_keybound("as", "init", "--db", db).returncode == 0
    return db


def test_second_as_on_the_same_ports_refuses_to_start(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    db = _as_db(tmp_path)
    coap, http = free_udp_port(), free_port(socket.SOCK_STREAM)
    args = ["as", "serve", "--db", db, "--coap", f"127.0.0.1:{coap}"]
    args += ["--state-dir", str(tmp_path / "state")]
    procs.append(start_server([*args, "--http", f"127.0.0.1:{http}"], tmp_path / "as1.log"))
    result = second(args, tmp_path)
    assert result.returncode == 3, result
    assert result.stderr.splitlines() == [
        f"keybound: cannot listen on coap://127.0.0.1:{coap}: "
        "the address is already in use (is another server running?)"
    ]
    other_coap = free_udp_port()
    result = second(
        [*args[:5], f"127.0.0.1:{other_coap}", *args[6:], "--http", f"127.0.0.1:{http}"],
        tmp_path,
    )
    assert result.returncode == 3, result
    assert result.stderr.splitlines() == [
        f"keybound: cannot listen on http://127.0.0.1:{http}: "
        "the address is already in use (is another server running?)"
    ]
    assert procs[0].poll() is None


def test_as_ready_line_names_every_endpoint(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    db = _as_db(tmp_path)
    coap, http = free_udp_port(), free_port(socket.SOCK_STREAM)
    proc = subprocess.Popen(
        [
            *(str(BIN / "keybound"), "as", "serve", "--db", db, "--coap", f"127.0.0.1:{coap}"),
            *("--http", f"127.0.0.1:{http}", "--state-dir", str(tmp_path / "state")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    procs.append(proc)
    assert wait_ready(proc) == [f"coap://127.0.0.1:{coap}", f"http://127.0.0.1:{http}"]


def test_rs_notifies_systemd_when_ready(
    tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    port = free_udp_port()
    config = write_setup(tmp_path, Keys(), port)
    notify = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(notify))
        listener.settimeout(30)
        env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
        procs.append(
            start_server(["rs", "serve", "--config", str(config)], tmp_path / "rs.log", env=env)
        )
        assert listener.recv(4096) == b"READY=1"


def test_notify_abstract_socket_and_unset() -> None:
    name = f"keybound-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(5)
        assert notify_systemd("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert listener.recv(64) == b"READY=1"
    assert not notify_systemd("READY=1", {})


def test_ready_line_format(capsys: pytest.CaptureFixture[str]) -> None:
    line = announce_ready(["coap://127.0.0.1:5683", "http://[::1]:8080"], environ={})
    assert line == "keybound: ready coap://127.0.0.1:5683 http://[::1]:8080"
    assert capsys.readouterr().out == line + "\n"


# ---- rs.toml ------------------------------------------------------------------------------------


def _config_with(tmp_path: Path, extra_top: str = "", extra_tail: str = "") -> Path:
    config = write_setup(tmp_path, Keys(), free_udp_port())
    text = config.read_text()
    config.write_text(extra_top + text + extra_tail)
    return config


def test_misspelt_listen_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    config = _config_with(tmp_path)
    config.write_text(config.read_text().replace("listen =", "listn ="))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value) == f"{config}: unknown key 'listn' (did you mean 'listen'?)"


def test_unknown_section_and_section_key(tmp_path: Path) -> None:
    config = _config_with(tmp_path, extra_tail="\n[capacty]\ntokens = 5\n")
    with pytest.raises(
        ConfigError, match=r"unknown section 'capacty' \(did you mean 'capacity'\?\)"
    ):
        load_config(config)
    config = _config_with(tmp_path)
    config.write_text(config.read_text().replace("sequence_chunk", "sequence_chunks"))
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'sequence_chunks' in \[oscore\] \(did you mean 'sequence_chunk'\?\)",
    ):
        load_config(config)


def test_every_known_key_is_accepted(tmp_path: Path) -> None:
    """The table lists what the loader reads: a config using all of it loads."""
    written = write_edhoc_key(tmp_path / "rs.key")
    config = _config_with(
        tmp_path,
        extra_top='require_as_signature = false\nprofiles = ["oscore", "edhoc"]\n',
        extra_tail='\n[edhoc]\nprivate_key = "rs.key"\ncredential = "rs.key.ccs"\n',
    )
    loaded = load_config(config)
    assert loaded.capacity == 10
    assert loaded.require_as_signature is False
    assert loaded.profiles == (2, 4)
    assert loaded.edhoc is not None
    assert loaded.edhoc.credential.same(written.ccs)
    assert set(KNOWN_KEYS[""] or ()) == {
        "bundle", "listen", "state", "require_as_signature", "profiles"
    }  # fmt: skip
    assert KNOWN_KEYS["edhoc"] == {"private_key", "credential"}


def test_an_edhoc_key_that_is_not_the_credentials_is_refused(tmp_path: Path) -> None:
    write_edhoc_key(tmp_path / "rs.key")
    write_edhoc_key(tmp_path / "other.key")
    config = _config_with(
        tmp_path,
        extra_top='profiles = ["edhoc"]\n',
        extra_tail='\n[edhoc]\nprivate_key = "other.key"\ncredential = "rs.key.ccs"\n',
    )
    with pytest.raises(ConfigError, match="private_key does not belong to the credential"):
        load_config(config)
    config.write_text(config.read_text().replace("[edhoc]", "[edhoc-x]"))
    with pytest.raises(ConfigError, match=r"unknown section 'edhoc-x'"):
        load_config(config)


def test_relative_paths_resolve_next_to_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _config_with(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(Path("../rs.toml"))
    assert loaded.state.resolve() == tmp_path / "state" / "rs-state.db"


def test_unwritable_state_names_the_state_file(tmp_path: Path) -> None:
    config = _config_with(tmp_path)
    (tmp_path / "state").write_text("a file where the state directory should be")
    result = run_keybound("rs", "serve", "--config", str(config))
    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"keybound: cannot use the state file {tmp_path / 'state' / 'rs-state.db'}: "
    )
    assert "cannot serve" not in lines[0]


def test_corrupt_state_file_is_one_line(tmp_path: Path) -> None:
    config = _config_with(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "rs-state.db").write_bytes(b"this is not an SQLite database" * 100)
    result = run_keybound("rs", "serve", "--config", str(config))
    assert result.returncode == 2, result
    assert result.stderr.splitlines() == [
        f"keybound: cannot use the state file {tmp_path / 'state' / 'rs-state.db'}: "
        "file is not a database"
    ]
