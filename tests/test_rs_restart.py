"""The RS daemon across a SIGKILL: no (Sender ID, Partial IV) reuse, no replay (RFC 8613 B.1)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiocoap
import pytest
from aiocoap.message import Direction

from keybound.core import cbor

from .rs_support import (
    AS_URI,
    AUDIENCE,
    ISSUER,
    ClientContext,
    Keys,
    establish,
    free_udp_port,
    material,
    mint,
    request,
    run,
)

CHUNK = 8


def write_setup(tmp_path: Path, keys: Keys, port: int) -> Path:
    bundle = {
        "kind": "keybound-rs-bundle",
        "version": 1,
        "contains_secrets": True,
        "name": "pi-1",
        "audience": AUDIENCE,
        "issuer": ISSUER,
        "as_uri": AS_URI,
        "token_key": keys.token_key.to_jwk(include_private=True),
        "as_public_key": keys.as_key.public_key().to_jwk(),
        "has_clock": True,
        "scopes": ["temp.read", "led.read", "led.write"],
        "profiles": [2],
    }
    bundle_path = tmp_path / "rs-bundle.json"
    bundle_path.write_text(json.dumps(bundle))
    bundle_path.chmod(0o600)
    config = tmp_path / "rs.toml"
    config.write_text(
        f"""
bundle = "rs-bundle.json"
listen = "127.0.0.1:{port}"
state = "state/rs-state.db"

[capacity]
tokens = 10

[oscore]
sequence_chunk = {CHUNK}
response_partial_iv = true

[resources."/temp"]
GET = ["temp.read"]

[resources."/led"]
kind = "switch"
GET = ["led.read"]
PUT = ["led.write"]
"""
    )
    return config


def start_rs(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "keybound.tools.rs_cli", "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_ready(port: int, timeout: float = 30.0) -> None:
    """Poll with unprotected GETs until the RS answers 4.01 with creation hints."""
    deadline = time.monotonic() + timeout
    client = await aiocoap.Context.create_client_context()
    try:
        while time.monotonic() < deadline:
            message = aiocoap.Message(code=aiocoap.GET, uri=f"coap://127.0.0.1:{port}/temp")
            try:
                response = await asyncio.wait_for(client.request(message).response, 1.0)
            except (TimeoutError, aiocoap.error.Error):
                await asyncio.sleep(0.2)
                continue
            if int(response.code) == 0x81:
                return
        raise AssertionError("the RS did not come up")
    finally:
        await client.shutdown()


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
        await wait_ready(port)
        client = await aiocoap.Context.create_client_context()
        try:
            mat = material()
            context = await establish(client, port, mint(keys, mat), mat)
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
            await wait_ready(port)

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
        output = b"".join(p.stdout.read() for p in processes if p.stdout)
        text = output.decode()
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
        [sys.executable, "-m", "keybound.tools.rs_cli", "serve", "--config", str(config)],
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
        [sys.executable, "-m", "keybound.tools.rs_cli", "serve", "--config", str(config)],
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
        await wait_ready(port)
        client = await aiocoap.Context.create_client_context()
        try:
            mat = material()
            await establish(client, port, mint(keys, mat, scope="led.write led.read"), mat)
            put = await request(client, port, aiocoap.PUT, "/led", b"on")
            assert int(put.code) == 0x44
            processes[0].send_signal(signal.SIGTERM)
            assert processes[0].wait(20) == 0
            processes.append(start_rs(config))
            await wait_ready(port)
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
