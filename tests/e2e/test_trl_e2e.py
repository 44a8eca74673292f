"""Token revocation (RFC 9770) with every part a real process: ``keybound as serve``, ``keybound
rs serve`` following the list (``[trl]`` in ``rs.toml``), and ``keybound as revoke`` run while
a client is mid-stream. The RS refuses that client's next request; the client starts over.

The time from starting ``keybound as revoke`` to the first refused request is printed (the
goal is under a second on loopback); it is a figure, not an assertion.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import aiocoap
import pytest

from keybound.coap.client import CoapAceClient, Endpoints, client_context
from keybound.coap.edhoc_client import EdhocAceClient
from keybound.core.client_flow import AceClient
from keybound.tools.bundles import DeviceBundle
from keybound.tools.keyfiles import credential_path, read_ccs, read_edhoc_private_key
from tests.helpers.paths import BIN
from tests.helpers.processes import EdhocFleet, ServerGroup, wait_for_log

WAIT = 30.0  # the longest any step waits (never a sleep to wait)


class TrlFleet(ServerGroup):
    def provision(self, trl_table: str) -> None:
        self.register()
        (self.root / "rs.toml").write_text(
            f'bundle = "rs-bundle.json"\nlisten = "127.0.0.1:{self.rs_port}"\n'
            f'state = "rs-state.db"\n[trl]\n{trl_table}\n'
            '[resources."/temp"]\nGET = ["temp.read"]\n'
        )


async def _revoke(fleet: ServerGroup, token: bytes) -> asyncio.Future[tuple[bytes, bytes]]:
    """Start ``keybound as revoke`` of ``token`` (given as itself, base64url); its output
    (JSON, so a failing command fails the test reading it) when it is done."""
    text = base64.urlsafe_b64encode(token).rstrip(b"=").decode()
    revoke = await asyncio.create_subprocess_exec(
        str(BIN / "keybound"), "as", "revoke", text, "--db", fleet.db, "--json",
        cwd=fleet.root, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    communicate = revoke.communicate()
    return asyncio.ensure_future(communicate)


async def _mid_stream(fleet: TrlFleet) -> dict[str, object]:
    """A client reading /temp in a loop; ``keybound as revoke`` of its token meanwhile."""
    device = DeviceBundle.read(fleet.root / "sensor-1.json")
    coap = await aiocoap.Context.create_client_context()
    seen: dict[str, object] = {}
    try:
        client = CoapAceClient(
            coap,
            AceClient(audience=device.audience, scope=device.scope, random_bytes=os.urandom),
            Endpoints(device.as_uri, fleet.rs_uri, device.token_path, device.authz_info_path),
            client_context(device.as_context),
        )
        first = await client.request("GET", "temp")
        assert first.success, first
        assert client.flow.grant is not None
        token = client.flow.grant.access_token
        before = len(client.exchanges)
        started = time.monotonic()
        done = await _revoke(fleet, token)
        exits: list[float] = []
        done.add_done_callback(lambda _: exits.append(time.monotonic()))
        refused: float | None = None
        async with asyncio.timeout(WAIT):
            while refused is None:
                reply = await client.request("GET", "temp")
                assert reply.success, reply  # refused once, then the client started over
                for send, answer in client.exchanges[before:]:
                    if send.security == "rs" and answer.code == (4, 1):
                        refused = time.monotonic()
                        break
                before = len(client.exchanges)
            out, _err = await done
        seen["revoked"] = json.loads(out)
        seen["to_refusal_s"] = refused - started
        seen["after_exit_s"] = refused - exits[0]  # negative: before the command returned
        grant = client.flow.grant
        seen["new_token"] = grant is not None and grant.access_token != token
        seen["steps"] = [f"{s.peer} {s.path} -> {r}" for s, r in client.exchanges[-4:]]
        again = await client.request("GET", "temp")
        seen["continues"] = again.success
    finally:
        await coap.shutdown()
    return seen


def _check(seen: dict[str, object], client: str, rs_log: Path) -> str:
    """What every mid-stream revocation shows; returns the RS's log."""
    revoked = seen["revoked"]
    assert isinstance(revoked, dict)
    assert revoked["revoked"] is True
    assert revoked["on_trl"] is True
    assert revoked["notified"] == [client, "rs:temp-rs"]
    assert seen["new_token"] is True, seen["steps"]
    assert seen["continues"] is True
    # The refusal came from the RS having removed the token (not from its expiry).
    log = rs_log.read_text()
    assert "token removed (revoked: on the AS's token revocation list)" in log
    assert "cannot follow the token revocation list" not in log
    return log


@pytest.mark.parametrize(
    "trl_table", ['mode = "observe"', 'mode = "poll"\ninterval = 0.2'], ids=["observe", "poll"]
)
def test_as_revoke_stops_the_client_mid_stream_at_the_rs(tmp_path: Path, trl_table: str) -> None:
    fleet = TrlFleet(tmp_path)
    fleet.provision(trl_table)
    fleet.start_servers()
    try:
        rs_log = tmp_path / "rs.log"
        rs = fleet.procs[1]
        if "observe" in trl_table:
            wait_for_log(rs_log, "observing the token revocation list", rs, timeout=WAIT)
        seen = asyncio.run(_mid_stream(fleet))
    finally:
        fleet.stop()
    _check(seen, "client:sensor-1", rs_log)
    print(
        f"\n{trl_table.splitlines()[0]}: `as revoke` to the refused request "
        f"{seen['to_refusal_s']:.3f} s ({seen['after_exit_s']:.3f} s after the command exited)"
    )


async def _edhoc_mid_stream(fleet: EdhocFleet) -> dict[str, object]:
    """An EDHOC-profile client reading /temp in a loop; its token revoked meanwhile."""
    device = DeviceBundle.read(fleet.root / "dev-1.json")
    key = fleet.root / "dev.key"
    coap = await aiocoap.Context.create_client_context()
    steps: list[tuple[float, str]] = []
    seen: dict[str, object] = {}
    try:
        client = EdhocAceClient(
            coap, as_uri=device.as_uri, rs_uri=fleet.rs_uri,
            as_context=client_context(device.as_context),
            private_key=read_edhoc_private_key(key), credential=read_ccs(credential_path(key)),
            audience=device.audience, scope=device.scope, token_path=device.token_path,
            on_step=lambda line: steps.append((time.monotonic(), line)),
        )  # fmt: skip
        first = await client.request("GET", "temp")
        assert first.success, steps
        assert client.grant is not None
        token = client.grant.access_token
        started = time.monotonic()
        done = await _revoke(fleet, token)
        async with asyncio.timeout(WAIT):
            while not any("starting over" in line for _, line in steps):
                reply = await client.request("GET", "temp")
                assert reply.success, steps  # refused once, then the client started over
            out, _err = await done
        seen["revoked"] = json.loads(out)
        refused = next(t for t, line in steps if "starting over" in line)
        seen["to_refusal_s"] = refused - started
        seen["new_token"] = client.grant is not None and client.grant.access_token != token
        seen["continues"] = (await client.request("GET", "temp")).success
        seen["steps"] = [line for _, line in steps]
    finally:
        await coap.shutdown()
    return seen


def test_as_revoke_ends_an_edhoc_session_mid_stream(tmp_path: Path) -> None:
    """The EDHOC and OSCORE profile: the revoked token's EDHOC-derived context goes at the
    RS at once; the client is refused, runs the flow again with a new token and EDHOC."""
    fleet = EdhocFleet(tmp_path)
    fleet.provision()
    rs_toml = tmp_path / "rs.toml"
    rs_toml.write_text(rs_toml.read_text() + '[trl]\nmode = "observe"\n')
    fleet.start_servers()
    try:
        rs_log = tmp_path / "rs.log"
        wait_for_log(rs_log, "observing the token revocation list", fleet.procs[1], timeout=WAIT)
        seen = asyncio.run(_edhoc_mid_stream(fleet))
    finally:
        fleet.stop()
    log = _check(seen, "client:dev-1", rs_log)
    assert log.count("EDHOC session completed") >= 2  # EDHOC again with the new token
    print(f"\nEDHOC profile: `as revoke` to the refused request {seen['to_refusal_s']:.3f} s")
