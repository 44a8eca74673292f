"""``keybound demo``: the whole ACE flow on this machine, step by step, in a few seconds.

1. A throw-away AS database in a temporary directory: the AS signing key, one
   resource server (``/temp`` readable with ``temp.read``, ``/led`` writable with
   ``led.write``) and one device allowed ``temp.read`` only.
2. The AS (CoAP ``/token`` over OSCORE) and the RS (``/authz-info`` and the
   protected resources) start on 127.0.0.1, in this process.
3. The device's full flow: token request over its OSCORE context, ``/authz-info``,
   the RFC 9203 context, and an OSCORE GET of ``/temp``.
4. Three refusals: no token (4.01 with AS Request Creation Hints), a scope that was
   not granted (4.03), and a replayed OSCORE request (4.01).

Everything is removed at the end; the exit status is 0 only if every step went as
described.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import tempfile
from pathlib import Path

import aiocoap

from keybound.coap.client import CoapAceClient, Endpoints, client_context
from keybound.core import cbor
from keybound.core.client_flow import AceClient, error_description
from keybound.tools.authz_server import provision as as_provision
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import DeviceBundle, device_bundle, rs_bundle, write_bundle
from keybound.tools.console import console
from keybound.tools.resource_server.daemon import build_site, load_config

HOST = "127.0.0.1"


class DemoFailure(RuntimeError):
    """A step of the demo did not go as described."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _step(number: int, text: str) -> None:
    console.print(f"\n[bold cyan]{number}.[/] [bold]{text}[/]")


def _show(line: str) -> None:
    console.print(f"   {line}", markup=False, highlight=False, soft_wrap=True)


def provision(workdir: Path, as_port: int, rs_port: int) -> tuple[Path, Path]:
    """The AS database, the RS bundle and config, and the device bundle."""
    store = SqlAuthzStore.init(f"sqlite:///{workdir / 'as.db'}")
    try:
        as_base = f"coap://{HOST}:{as_port}"
        rs_uri = f"coap://{HOST}:{rs_port}"
        issuer = as_provision.init_issuer(store, as_base)
        rs = as_provision.add_resource_server(store, "demo-rs", rs_uri, ["temp.read", "led.write"])
        (device,) = as_provision.add_clients(store, ["sensor-1"], {rs_uri: ["temp.read"]})
        write_bundle(workdir / "rs-bundle.json", rs_bundle(rs, issuer, as_base=as_base))
        bundle = device_bundle(
            "sensor-1", as_base=as_base, rs_uri=rs_uri, audience=rs_uri, scope="temp.read",
            oscore=device.oscore,
        )  # fmt: skip
        write_bundle(workdir / "sensor-1.json", bundle)
    finally:
        store.close()
    (workdir / "rs.toml").write_text(
        f'bundle = "rs-bundle.json"\nlisten = "{HOST}:{rs_port}"\nstate = "rs-state.db"\n'
        '[resources."/temp"]\nGET = ["temp.read"]\n'
        '[resources."/led"]\nkind = "switch"\nGET = ["led.read"]\nPUT = ["led.write"]\n'
    )
    _show(f"AS database, signing key, RS 'demo-rs' ({rs_uri}) and device 'sensor-1' in {workdir}")
    _show("bundles written 0600: rs-bundle.json (for the RS), sensor-1.json (for the device)")
    return workdir / "rs.toml", workdir / "sensor-1.json"


async def _raw_exchange(data: bytes, port: int) -> aiocoap.Message:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.setblocking(False)
        await loop.sock_sendto(raw, data, (HOST, port))
        answer = await asyncio.wait_for(loop.sock_recv(raw, 2048), 5)
    return aiocoap.Message.decode(answer)


async def run_demo(workdir: Path) -> None:
    as_port, rs_port = _free_port(), _free_port()
    _step(1, "Provisioning (keybound as init / rs add / client add)")
    rs_config, device_path = provision(workdir, as_port, rs_port)

    _step(2, "Starting the AS and the RS on loopback")
    store = SqlAuthzStore.open(f"sqlite:///{workdir / 'as.db'}")
    authz = RunningServer(store, coap=(HOST, as_port), state_dir=workdir / "as-state")
    await authz.start()
    site = build_site(load_config(rs_config))
    await site.serve((HOST, rs_port))
    _show(f"AS: coap://{HOST}:{as_port}/token (OSCORE)   RS: coap://{HOST}:{rs_port}/authz-info")
    coap = await aiocoap.Context.create_client_context()
    try:
        await _flow(coap, device_path, rs_port)
    finally:
        await coap.shutdown()
        await site.shutdown()
        await authz.stop()
        store.close()


async def _flow(coap: aiocoap.Context, device_path: Path, rs_port: int) -> None:
    device = DeviceBundle.read(device_path)
    rs_uri = f"coap://{HOST}:{rs_port}"
    client = CoapAceClient(
        coap,
        AceClient(audience=device.audience, scope=device.scope, random_bytes=secrets.token_bytes),
        Endpoints(device.as_uri, rs_uri, device.token_path, device.authz_info_path),
        client_context(device.as_context, mark=0, persist_mark=lambda mark: None),
        on_step=_show,
    )

    _step(3, "The device's flow: token, /authz-info, OSCORE GET /temp")
    reply = await client.request("GET", "temp")
    if reply.code != (2, 5):
        raise DemoFailure(f"GET /temp answered {error_description(reply)}")
    _show(f"temperature: {reply.payload.decode()} (read over OSCORE with the derived context)")
    grant = client.flow.grant
    assert grant is not None
    _show(f"token: {len(grant.access_token)} bytes (COSE_Sign1 nested in COSE_Encrypt0 for the RS)")

    _step(4, "Refusal: a request without a token")
    plain = aiocoap.Message(code=aiocoap.GET, uri=f"{rs_uri}/temp")
    answer = await coap.request(plain).response
    hints = cbor.loads(answer.payload) if answer.payload else {}
    _show(f"{answer.code} with AS Request Creation Hints {hints}")
    if str(answer.code) != "4.01 Unauthorized" or not isinstance(hints, dict) or 1 not in hints:
        raise DemoFailure(f"expected 4.01 with creation hints, got {answer.code}")

    _step(5, "Refusal: PUT /led, a scope the AS did not grant (led.write)")
    reply = await client.request("PUT", "led", b"on")
    _show(error_description(reply))
    if reply.code != (4, 3):
        raise DemoFailure(f"expected 4.03, got {reply}")

    _step(6, "Refusal: the same OSCORE request sent twice (a fresh message ID, same bytes)")
    rs_context = client._rs_context
    assert rs_context is not None
    message = aiocoap.Message(code=aiocoap.GET, uri_path=["temp"])
    message.direction = aiocoap.message.Direction.OUTGOING
    protected, _ = rs_context.protect(message)
    protected.mtype = aiocoap.CON
    protected.token = b"\x0d\xe0"
    answers = []
    for mid in (4242, 4243):
        protected.mid = mid
        answers.append(await _raw_exchange(protected.encode(), rs_port))
    protected_answer = "OSCORE-protected" if answers[0].opt.oscore is not None else "unprotected"
    _show(f"first: outer code {answers[0].code}, {protected_answer}")
    _show(f"replay: {answers[1].code} {bytes(answers[1].payload).decode(errors='replace')}")
    if str(answers[1].code) != "4.01 Unauthorized":
        raise DemoFailure(f"the replay was answered {answers[1].code}")


def run() -> None:
    """The ``keybound demo`` command."""
    console.rule("keybound demo: ACE-OAuth with the OSCORE profile, on loopback")
    with tempfile.TemporaryDirectory(prefix="keybound-demo-") as tmp:
        asyncio.run(run_demo(Path(tmp)))
    console.print("\n[green]done:[/] the flow worked and all three refusals held; files removed")


__all__ = ["DemoFailure", "provision", "run", "run_demo"]
