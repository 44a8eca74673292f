"""The RS daemon across a SIGKILL: no (Sender ID, Partial IV) reuse, no replay (RFC 8613 B.1)."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.message import Direction

from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.core import cbor
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.oscore_derivation import derive_context_parameters
from keybound.core.oscore_sequence import SequenceNumberReservation
from keybound.core.token_store import PersistedReplayWindow, ShutdownRecord
from keybound.tools.resource_server.daemon import ConfigError, build_site, load_config
from keybound.tools.resource_server.state import SqliteRsState
from tests.helpers.ports import free_udp_port
from tests.helpers.processes import wait_ready
from tests.helpers.rs import (
    AUDIENCE,
    CHUNK,
    ClientContext,
    Keys,
    establish,
    material,
    mint,
    post_authz_info,
    request,
    run,
    write_setup,
)
from tests.helpers.soak import log_problems

_LOGS: dict[int, Path] = {}
_COUNT = itertools.count()


def start_rs(config: Path) -> subprocess.Popen[bytes]:
    """Start the RS daemon, its log in a file of its own, and wait for its ready line."""
    log = config.with_name(f"rs-{next(_COUNT)}.log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keybound.tools.cli.rs_commands",
                "serve",
                "--config",
                str(config),
            ],
            stdout=subprocess.PIPE,
            stderr=out,
        )
    _LOGS[process.pid] = log
    try:
        wait_ready(process)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the RS logged: {log.read_text()}") from None
    return process


def rs_logs(processes: list[subprocess.Popen[bytes]]) -> str:
    """What the (stopped) RS processes logged."""
    return "".join(_LOGS[p.pid].read_text() for p in processes)


async def raw_exchange(port: int, data: bytes) -> aiocoap.Message:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.setblocking(False)
        await loop.sock_sendto(raw, data, ("127.0.0.1", port))
        answer = await asyncio.wait_for(loop.sock_recv(raw, 2048), 5)
    message = aiocoap.Message.decode(answer)
    message.direction = Direction.INCOMING
    return message


def protect_get(context: ClientContext, mid: int) -> tuple[aiocoap.Message, Any]:
    plain = aiocoap.Message(code=aiocoap.GET, uri_path=["temp"])
    plain.direction = Direction.OUTGOING
    protected, request_id = context.protect(plain)
    protected.mtype = aiocoap.CON
    protected.token = mid.to_bytes(2, "big")
    protected.mid = mid
    return protected, request_id


def inner_code(context: ClientContext, response: aiocoap.Message, request_id: Any) -> int:
    """The code inside a protected answer, or the plain code of an unprotected one."""
    if response.opt.oscore is None:
        return int(response.code)
    plain, _ = context.unprotect(response, request_id)
    return int(plain.code)


@pytest.mark.slow
def test_sigkill_restart_never_reuses_partial_ivs(tmp_path: Path) -> None:
    keys = Keys()
    port = free_udp_port()
    config = write_setup(tmp_path, keys, port)
    processes: list[subprocess.Popen[bytes]] = []
    log: dict[str, Any] = {}

    async def body() -> None:
        processes.append(start_rs(config))
        client = await aiocoap.Context.create_client_context()
        try:
            mat = material()
            context = await establish(client, port, mint(keys, mat, nested=True), mat)
            for _ in range(20):
                response = await request(client, port, aiocoap.GET, "/temp")
                assert int(response.code) == 0x45
            # a protected request captured before the crash, for a replay afterwards
            captured, captured_id = protect_get(context, 4000)
            first = await raw_exchange(port, captured.encode())
            assert inner_code(context, first, captured_id) == 0x45
            before = list(context.response_pivs)
            log["before"] = before

            processes[0].send_signal(signal.SIGKILL)
            processes[0].wait(10)
            processes.append(start_rs(config))

            # the replay (fresh message ID) after the restart: never served
            captured.mid = 4001
            replayed = await raw_exchange(port, captured.encode())
            log["replay_answer"] = inner_code(context, replayed, captured_id)
            assert log["replay_answer"] == 0x81  # a protected 4.01 with Echo, not 2.05

            # the client recovers through Echo (aiocoap retries with the Echo value)
            for _ in range(20):
                response = await request(client, port, aiocoap.GET, "/temp")
                assert int(response.code) == 0x45
            after = context.response_pivs[len(before) :]
            log["after"] = after

            # and the replay is now refused by the re-initialised window
            captured.mid = 4002
            replayed = await raw_exchange(port, captured.encode())
            assert replayed.opt.oscore is None
            assert int(replayed.code) == 0x81
        finally:
            await client.shutdown()

    try:
        run(body(), timeout=90)
        print("response Partial IVs before:", [p.hex() for p in log["before"]])
        print("response Partial IVs after:", [p.hex() for p in log["after"]])
        seen = [int.from_bytes(p, "big") for p in log["before"] + log["after"]]
        assert len(seen) == len(set(seen)), f"Partial IV reused: {seen}"
        assert min(int.from_bytes(p, "big") for p in log["after"]) >= max(
            int.from_bytes(p, "big") for p in log["before"]
        )
        state = tmp_path / "state" / "rs-state.db"
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        processes[-1].send_signal(signal.SIGTERM)
        assert processes[-1].wait(20) == 0
        text = rs_logs(processes)
        assert "token accepted" in text
        assert "restored 1 token" in text
        assert keys.token_key.secret is not None
        assert keys.token_key.secret.hex() not in text
        assert mat_secret_absent(text)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)


def mat_secret_absent(text: str) -> bool:
    return "ms=" not in text and "master" not in text.lower()


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "rs.toml"
    config.write_text('bundle = "missing.json"\nstate = "s.db"\n[resources."/temp"]\nGET=["a"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "keybound.tools.cli.rs_commands", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "missing.json" in lines[0]


def test_world_readable_bundle_is_refused(tmp_path: Path) -> None:
    keys = Keys()
    config = write_setup(tmp_path, keys, free_udp_port())
    (tmp_path / "rs-bundle.json").chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "keybound.tools.cli.rs_commands", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "chmod 600" in result.stderr


def test_sigterm_flushes_and_restores(tmp_path: Path) -> None:
    keys = Keys()
    port = free_udp_port()
    config = write_setup(tmp_path, keys, port)
    processes: list[subprocess.Popen[bytes]] = []

    async def body() -> None:
        processes.append(start_rs(config))
        client = await aiocoap.Context.create_client_context()
        try:
            mat = material()
            await establish(
                client, port, mint(keys, mat, scope="led.write led.read", nested=True), mat
            )
            put = await request(client, port, aiocoap.PUT, "/led", b"on")
            assert int(put.code) == 0x44
            processes[0].send_signal(signal.SIGTERM)
            assert processes[0].wait(20) == 0
            processes.append(start_rs(config))
            response = await request(client, port, aiocoap.GET, "/led")
            assert int(response.code) == 0x45  # the context survived; Echo was handled
            hints = await _plain_get(client, port)
            assert hints[5] == AUDIENCE
        finally:
            await client.shutdown()

    try:
        run(body(), timeout=90)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(10)


async def _plain_get(client: aiocoap.Context, port: int) -> dict[int, Any]:
    other = await aiocoap.Context.create_client_context()
    try:
        message = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/temp")
        response = await other.request(message).response
        value: dict[int, Any] = cbor.loads(response.payload)
        return value
    finally:
        await other.shutdown()


# ---- replay windows across a clean shutdown (RFC 8613 Appendix B.1.2) -----------------------


def state_file(tmp_path: Path) -> Path:
    return tmp_path / "state" / "rs-state.db"


def clean_marker(tmp_path: Path) -> bool:
    """Whether the state file holds the clean shutdown marker."""
    db = sqlite3.connect(state_file(tmp_path))
    try:
        row = db.execute("SELECT value FROM marks WHERE name = 'clean_shutdown'").fetchone()
        return row is not None
    finally:
        db.close()


async def fresh_get(context: ClientContext, port: int, mid: int) -> aiocoap.Message:
    """A new legitimate GET /temp, sent once (no Echo retry): the decrypted answer."""
    message, request_id = protect_get(context, mid)
    response = await raw_exchange(port, message.encode())
    assert response.opt.oscore is not None, "expected a protected answer"
    plain, _ = context.unprotect(response, request_id)
    answer: aiocoap.Message = plain
    return answer


async def assert_replay_refused(port: int, captured: aiocoap.Message, mid: int) -> None:
    """A replay is refused by a known window: an unprotected 4.01, nothing decrypted."""
    captured.mid = mid
    replayed = await raw_exchange(port, captured.encode())
    assert replayed.opt.oscore is None
    assert int(replayed.code) == 0x81


def stop_cleanly(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(5)


@dataclass
class RsRun:
    """An RS daemon (restartable) and one client with a context established on it."""

    config: Path
    port: int
    processes: list[subprocess.Popen[bytes]]
    client: aiocoap.Context
    context: ClientContext

    async def restart(self, *, clean: bool) -> None:
        """SIGTERM (clean) or SIGKILL the running RS, then start it again."""
        (stop_cleanly if clean else kill)(self.processes[-1])
        self.processes.append(start_rs(self.config))


def run_with_rs(
    tmp_path: Path, scenario: Callable[[RsRun], Awaitable[None]]
) -> list[subprocess.Popen[bytes]]:
    """Start the RS, establish a context, run ``scenario``; return the processes started."""
    keys = Keys()
    port = free_udp_port()
    config = write_setup(tmp_path, keys, port)
    processes: list[subprocess.Popen[bytes]] = []

    async def body() -> None:
        processes.append(start_rs(config))
        client = await aiocoap.Context.create_client_context()
        try:
            mat = material()
            context = await establish(client, port, mint(keys, mat, nested=True), mat)
            await scenario(RsRun(config, port, processes, client, context))
        finally:
            await client.shutdown()

    try:
        run(body(), timeout=90)
    except BaseException:
        stop_all(processes)
        raise
    return processes


@pytest.mark.slow
def test_clean_restart_keeps_replay_windows_without_echo(tmp_path: Path) -> None:
    log: dict[str, Any] = {}

    async def scenario(rs: RsRun) -> None:
        client, context, port = rs.client, rs.context, rs.port
        for _ in range(3):
            assert int((await request(client, port, aiocoap.GET, "/temp")).code) == 0x45
        # requests captured before the restart: one deep in the window, one at its top
        captured: list[aiocoap.Message] = []
        for index in range(6):
            message, request_id = protect_get(context, 5000 + index)
            answer = await raw_exchange(port, message.encode())
            assert inner_code(context, answer, request_id) == 0x45
            if index in (1, 5):
                captured.append(message)
        log["before"] = list(context.response_pivs)

        stop_cleanly(rs.processes[0])
        assert clean_marker(tmp_path)
        rs.processes.append(start_rs(rs.config))
        assert not clean_marker(tmp_path)  # cleared before the RS served anything

        # the first new request is served at once: no Echo round trip
        answer = await fresh_get(context, port, 5100)
        assert int(answer.code) == 0x45
        assert answer.opt.echo is None
        # every captured request is still refused as a replay
        for number, message in enumerate(captured):
            await assert_replay_refused(port, message, 5200 + number)
        answer = await fresh_get(context, port, 5300)
        assert int(answer.code) == 0x45
        log["after"] = context.response_pivs[len(log["before"]) :]

    processes = run_with_rs(tmp_path, scenario)
    try:
        before = [int.from_bytes(p, "big") for p in log["before"]]
        after = [int.from_bytes(p, "big") for p in log["after"]]
        assert len(set(before + after)) == len(before + after), "response Partial IV reused"
        # the exact next Sender Sequence Number was saved: no chunk was skipped
        assert min(after) == max(before) + 1
        stop_cleanly(processes[-1])
        text = rs_logs(processes)
        assert "after a clean shutdown" in text
        assert not log_problems(text)
    finally:
        stop_all(processes)


@pytest.mark.slow
def test_sigkill_restart_still_needs_echo(tmp_path: Path) -> None:
    async def scenario(rs: RsRun) -> None:
        context, port = rs.context, rs.port
        assert int((await fresh_get(context, port, 6000)).code) == 0x45
        captured, _ = protect_get(context, 6001)
        assert int((await raw_exchange(port, captured.encode())).code) == 0x44

        await rs.restart(clean=False)
        assert not clean_marker(tmp_path)

        answer = await fresh_get(context, port, 6100)
        assert int(answer.code) == 0x81  # a protected 4.01 ...
        assert answer.opt.echo is not None  # ... carrying Echo
        # aiocoap's client retries with the Echo value and is then served
        assert int((await request(rs.client, port, aiocoap.GET, "/temp")).code) == 0x45
        await assert_replay_refused(port, captured, 6200)

    stop_all(run_with_rs(tmp_path, scenario))


@pytest.mark.slow
def test_sigkill_after_clean_restart_falls_back_to_echo(tmp_path: Path) -> None:
    """The marker is cleared at startup: a crash after a clean restart means Echo again."""

    async def scenario(rs: RsRun) -> None:
        context, port = rs.context, rs.port
        assert int((await fresh_get(context, port, 7000)).code) == 0x45

        await rs.restart(clean=True)
        assert not clean_marker(tmp_path)
        answer = await fresh_get(context, port, 7100)
        assert int(answer.code) == 0x45
        assert answer.opt.echo is None
        # a request of the second run, captured for a replay after the crash
        captured, captured_id = protect_get(context, 7101)
        first = await raw_exchange(port, captured.encode())
        assert inner_code(context, first, captured_id) == 0x45

        await rs.restart(clean=False)
        assert not clean_marker(tmp_path)

        # the replay is not served: the stale window is not trusted, Echo is asked
        captured.mid = 7200
        replayed = await raw_exchange(port, captured.encode())
        assert inner_code(context, replayed, captured_id) == 0x81
        answer = await fresh_get(context, port, 7201)
        assert int(answer.code) == 0x81
        assert answer.opt.echo is not None
        assert int((await request(rs.client, port, aiocoap.GET, "/temp")).code) == 0x45
        await assert_replay_refused(port, captured, 7300)

    stop_all(run_with_rs(tmp_path, scenario))


def test_restored_window_refuses_seen_and_accepts_next() -> None:
    """The window saved from aiocoap's replay window object comes back exactly."""
    mat = material()
    derived = derive_context_parameters(mat, b"n1" * 4, b"n2" * 4, b"\x42", b"\x00", role="rs")

    def context(shutdown: ShutdownRecord | None) -> DurableSecurityContext:
        return DurableSecurityContext(
            derived,
            key_id=b"k",
            reservation=SequenceNumberReservation(
                shutdown.sender_next if shutdown else 0, chunk=CHUNK
            ),
            persist_mark=lambda mark: None,
            replay_window_known=shutdown is None,
            replay_window=shutdown.replay_window if shutdown else None,
        )

    first = context(None)
    seen = [0, 1, 2, 5, 9, 40, 41, 44, 60]
    for number in seen:
        first.recipient_replay_window.strike_out(number)
    for _ in range(11):
        first.new_sequence_number()
    record = first.shutdown_record()
    assert record.sender_next == 11
    assert record.replay_window is not None

    again = context(record)
    window = again.recipient_replay_window
    assert window.is_initialized()
    for number in range(0, 61):
        assert window.is_valid(number) == (number not in seen and number > 60 - 32), number
    for number in (61, 62, 100, 2**20):
        assert window.is_valid(number)
    assert again.new_sequence_number() == 11

    # a context whose window is not known is saved as such: Echo after the restart
    unknown = context(ShutdownRecord(key_id=b"k", replay_window=None, sender_next=3))
    assert not unknown.recipient_replay_window.is_initialized()
    assert unknown.shutdown_record().replay_window is None


_OLD_SCHEMA = """
CREATE TABLE contexts (
    key_id BLOB PRIMARY KEY,
    token BLOB NOT NULL,
    nonce1 BLOB NOT NULL,
    nonce2 BLOB NOT NULL,
    client_id BLOB NOT NULL,
    server_id BLOB NOT NULL,
    received_at INTEGER,
    sender_mark INTEGER NOT NULL
);
CREATE TABLE marks (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO contexts VALUES (x'01', x'aa', x'02', x'03', x'42', x'00', 17, 64);
INSERT INTO marks VALUES ('exi_sequence', 9);
"""


def test_state_file_of_the_previous_version_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(_OLD_SCHEMA)
    db.close()

    store = SqliteRsState(path)
    try:
        loaded = store.load()
        assert not loaded.clean_shutdown
        assert loaded.exi_sequence_mark == 9
        (record,) = loaded.contexts
        assert (record.key_id, record.token, record.sender_mark) == (b"\x01", b"\xaa", 64)
        assert record.shutdown is None

        window = PersistedReplayWindow(index=7, bitfield=0b1011, size=32)
        saved = ShutdownRecord(key_id=b"\x01", replay_window=window, sender_next=12)
        store.save_clean_shutdown([saved])
        loaded = store.load()
        assert loaded.clean_shutdown
        assert loaded.contexts[0].shutdown == saved

        store.clear_clean_shutdown()
        loaded = store.load()
        assert not loaded.clean_shutdown
        assert loaded.contexts[0].shutdown is None
        assert loaded.contexts[0].token == b"\xaa"  # the token survives

        # windows saved without the marker are never returned
        store.save_clean_shutdown([saved])
        store.put_context(replace(record, nonce2=b"\x04"))
        assert store.load().contexts[0].shutdown is None  # a new context of the key
    finally:
        store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def _daemon_answers(config: Path, keys: Keys, port: int) -> list[str]:
    """Serve the daemon's site for ``config`` and post an Encrypt0-only and a signed token."""

    async def body() -> list[str]:
        site = build_site(load_config(config))
        await site.serve(("127.0.0.1", port))
        client = await aiocoap.Context.create_client_context()
        answers: list[str] = []
        try:
            for nested, id1 in ((False, b"\x41"), (True, b"\x42")):
                token = mint(keys, material(id1), nested=nested)
                payload = AuthzInfoRequest(token, b"\x00" * 8, id1).encode()
                response = await post_authz_info(client, port, payload)
                answers.append(f"{int(response.code) >> 5}.{int(response.code) & 0x1F:02d}")
                if nested is False and int(response.code) != 0x41:
                    assert (
                        cbor.loads(response.payload)[31]
                        == "the access token must be signed by the AS"
                    )
        finally:
            await client.shutdown()
            await site.shutdown()
        return answers

    return run(body())


def test_daemon_requires_the_as_signature_when_it_knows_the_as_key(tmp_path: Path) -> None:
    """The bundle carries the AS public key: an Encrypt0-only token is refused with 4.01."""
    keys = Keys()
    port = free_udp_port()
    config = write_setup(tmp_path, keys, port)
    assert _daemon_answers(config, keys, port) == ["4.01", "2.01"]


def test_daemon_accepts_unsigned_tokens_only_when_told(tmp_path: Path) -> None:
    """``require_as_signature = false`` in rs.toml lets an Encrypt0-only token in."""
    keys = Keys()
    port = free_udp_port()
    config = write_setup(tmp_path, keys, port)
    config.write_text("require_as_signature = false\n" + config.read_text())
    assert _daemon_answers(config, keys, port) == ["2.01", "2.01"]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("require_as_signature = 1", "require_as_signature must be true or false"),
        ("require_as_signature = true", "require_as_signature needs a bundle with as_public_key"),
    ],
)
def test_require_as_signature_is_checked(tmp_path: Path, line: str, error: str) -> None:
    keys = Keys()
    config = write_setup(tmp_path, keys, free_udp_port())
    if "true" in line:  # a bundle without the AS key cannot require its signature
        bundle_path = tmp_path / "rs-bundle.json"
        bundle = json.loads(bundle_path.read_text())
        del bundle["as_public_key"]
        bundle_path.write_text(json.dumps(bundle))
    config.write_text(line + "\n" + config.read_text())
    with pytest.raises(ConfigError, match=error):
        load_config(config)
