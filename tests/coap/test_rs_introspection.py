"""An online RS asks the AS about posted tokens (RFC 9200 §5.9): revoked tokens are refused."""

from __future__ import annotations

import os
from pathlib import Path

import aiocoap

from keybound.coap.client import CoapAceClient, Endpoints, client_context
from keybound.core.authz_info import AuthzInfoRequest
from keybound.core.client_flow import AceClient
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import DeviceBundle
from keybound.tools.demo import provision
from keybound.tools.resource_server.daemon import attach_introspector, build_site, load_config
from tests.helpers.ports import free_udp_port
from tests.helpers.rs import run


async def _scenario(workdir: Path, mode: str, *, as_running: bool) -> list[str]:
    """Get a token through the flow, optionally revoke it, post it again; return the codes."""
    as_port, rs_port = free_udp_port(), free_udp_port()
    rs_toml, device_path = provision(workdir, as_port, rs_port)
    rs_toml.write_text(rs_toml.read_text() + f'[introspection]\nmode = "{mode}"\n')
    config = load_config(rs_toml)
    store = SqlAuthzStore.open(f"sqlite:///{workdir / 'as.db'}")
    authz = RunningServer(store, coap=("127.0.0.1", as_port), state_dir=workdir / "as-state")
    await authz.start()
    site = build_site(config)
    await site.serve(("127.0.0.1", rs_port))
    attach_introspector(site, config)
    coap = await aiocoap.Context.create_client_context()
    codes: list[str] = []
    try:
        device = DeviceBundle.read(device_path)
        client = CoapAceClient(
            coap,
            AceClient(audience=device.audience, scope=device.scope, random_bytes=os.urandom),
            Endpoints(device.as_uri, f"coap://127.0.0.1:{rs_port}"),
            client_context(device.as_context),
        )
        reply = await client.request("GET", "temp")
        codes.append(str(reply))
        assert client.flow.grant is not None
        token = client.flow.grant.access_token
        (issued,) = store.list_tokens("sensor-1")
        store.revoke(issued.cti)
        if not as_running:
            await authz.stop()
        post = AuthzInfoRequest(token, os.urandom(8), b"\x33").encode()
        again = aiocoap.Message(
            code=aiocoap.POST, uri=f"coap://127.0.0.1:{rs_port}/authz-info", payload=post,
            content_format=19,
        )  # fmt: skip
        answer = await coap.request(again).response
        codes.append(str(answer.code).split()[0])
    finally:
        await coap.shutdown()
        await site.shutdown()
        if as_running:
            await authz.stop()
        store.close()
    return codes


def test_revoked_token_is_refused_when_the_as_is_asked(tmp_path: Path) -> None:
    assert run(_scenario(tmp_path, "optional", as_running=True), 60) == ["2.05", "4.01"]


def test_required_introspection_refuses_when_the_as_is_down(tmp_path: Path) -> None:
    assert run(_scenario(tmp_path, "required", as_running=False), 60) == ["2.05", "5.03"]


def test_optional_introspection_falls_back_to_local_checks(tmp_path: Path) -> None:
    """With the AS down, a token that passes the local checks is accepted (revocation unknown)."""
    assert run(_scenario(tmp_path, "optional", as_running=False), 60) == ["2.05", "2.01"]


def test_without_introspection_the_rs_cannot_know_of_revocation(tmp_path: Path) -> None:
    assert run(_scenario(tmp_path, "off", as_running=True), 60) == ["2.05", "2.01"]
