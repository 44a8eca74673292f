"""``keybound demo --profile edhoc``: the EDHOC and OSCORE profile on this machine.

1. A throw-away AS database: the AS signing key, one RS of both profiles with its
   EDHOC credential, one device registered by its public credential only (the
   device's and the RS's P-256 keys are made here, as ``keybound key generate --ccs``
   makes them where they live).
2. The AS and the RS start on 127.0.0.1, in this process.
3. The device's flow: token request (``req_cnf`` ``kccs``), the token at
   ``/authz-info``, EDHOC with the RS, an OSCORE GET of ``/temp``.
4. Two refusals: a device whose credential no token binds (EDHOC refused), and a
   scope that was not granted (4.03 over the EDHOC-derived context).

Everything is removed at the end; the exit status is 0 only if every step went as
described.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import aiocoap

from keybound.coap.client import client_context
from keybound.coap.edhoc_client import EdhocAceClient
from keybound.core.client_flow import error_description
from keybound.core.edhoc_credentials import Ccs, private_key_map
from keybound.core.keys import Key
from keybound.core.numbers.ace_profiles import AceProfile
from keybound.tools.authz_server import provision as as_provision
from keybound.tools.authz_server.server import RunningServer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import DeviceBundle, device_bundle, rs_bundle, write_bundle
from keybound.tools.console import console
from keybound.tools.demo import HOST, DemoFailure, _free_port, _show, _step
from keybound.tools.keyfiles import write_secret_file
from keybound.tools.resource_server.daemon import build_site, load_config


def _edhoc_key(path: Path, kid: bytes, subject: str) -> tuple[bytes, Ccs]:
    key = Key.generate_ec2(kid=kid)
    ccs = Ccs.make(key, subject=subject)
    d = private_key_map(key)[-4]
    assert isinstance(d, bytes)
    from keybound.core import cbor  # noqa: PLC0415

    write_secret_file(path, cbor.dumps(private_key_map(key)))
    path.with_name(path.name + ".ccs").write_bytes(ccs.encoded)
    return d, ccs


def provision(workdir: Path, as_port: int, rs_port: int) -> tuple[Path, Path, bytes, Ccs]:
    """The AS database, the RS bundle, key and config, and the device's bundle and key."""
    _d_rs, rs_ccs = _edhoc_key(workdir / "rs.key", b"\x32", "demo-rs")
    d_dev, dev_ccs = _edhoc_key(workdir / "dev.key", b"\x2b", "dev-1")
    store = SqlAuthzStore.init(f"sqlite:///{workdir / 'as.db'}")
    try:
        as_base = f"coap://{HOST}:{as_port}"
        rs_uri = f"coap://{HOST}:{rs_port}"
        issuer = as_provision.init_issuer(store, as_base)
        profiles = [int(AceProfile.COAP_EDHOC_OSCORE), int(AceProfile.COAP_OSCORE)]
        rs = as_provision.add_resource_server(
            store, "demo-rs", rs_uri, ["temp.read", "led.write"], profiles=profiles,
            credential=rs_ccs.encoded,
        )  # fmt: skip
        (device,) = as_provision.add_clients(
            store, ["dev-1"], {rs_uri: ["temp.read"]}, credential=dev_ccs.encoded
        )
        write_bundle(workdir / "rs-bundle.json", rs_bundle(rs, issuer, as_base=as_base))
        bundle = device_bundle(
            "dev-1", as_base=as_base, rs_uri=rs_uri, audience=rs_uri, scope="temp.read",
            oscore=device.oscore,
        )  # fmt: skip
        write_bundle(workdir / "dev-1.json", bundle)
    finally:
        store.close()
    (workdir / "rs.toml").write_text(
        f'bundle = "rs-bundle.json"\nlisten = "{HOST}:{rs_port}"\nstate = "rs-state.db"\n'
        'profiles = ["oscore", "edhoc"]\n'
        '[edhoc]\nprivate_key = "rs.key"\ncredential = "rs.key.ccs"\n'
        '[resources."/temp"]\nGET = ["temp.read"]\n'
        '[resources."/led"]\nkind = "switch"\nGET = ["led.read"]\nPUT = ["led.write"]\n'
    )
    _show(f"RS 'demo-rs' ({rs_uri}, both profiles) and device 'dev-1' in {workdir}")
    _show(
        f"the AS knows the device by its public credential only ({len(dev_ccs.encoded)}-byte "
        "CCS); its private key stays in dev.key (0600)"
    )
    return workdir / "rs.toml", workdir / "dev-1.json", d_dev, dev_ccs


async def run_demo(workdir: Path) -> None:
    as_port, rs_port = _free_port(), _free_port()
    _step(1, "Provisioning: keys made where they live, the AS learns public credentials")
    rs_config, device_path, d_dev, dev_ccs = provision(workdir, as_port, rs_port)

    _step(2, "Starting the AS and the RS (both profiles) on loopback")
    store = SqlAuthzStore.open(f"sqlite:///{workdir / 'as.db'}")
    authz = RunningServer(store, coap=(HOST, as_port), state_dir=workdir / "as-state")
    await authz.start()
    site = build_site(load_config(rs_config))
    await site.serve((HOST, rs_port))
    _show(f"AS: coap://{HOST}:{as_port}/token   RS: coap://{HOST}:{rs_port}/.well-known/edhoc")
    try:
        await _flow(device_path, rs_port, d_dev, dev_ccs)
    finally:
        await site.shutdown()
        await authz.stop()
        store.close()


def _client(
    coap: aiocoap.Context, device: DeviceBundle, rs_port: int, d: bytes, ccs: Ccs
) -> EdhocAceClient:
    return EdhocAceClient(
        coap,
        as_uri=device.as_uri,
        rs_uri=f"coap://{HOST}:{rs_port}",
        as_context=client_context(device.as_context, mark=0, persist_mark=lambda mark: None),
        private_key=d,
        credential=ccs,
        audience=device.audience,
        scope=device.scope,
        token_path=device.token_path,
        on_step=_show,
    )


async def _flow(device_path: Path, rs_port: int, d_dev: bytes, dev_ccs: Ccs) -> None:
    device = DeviceBundle.read(device_path)
    coap = await aiocoap.Context.create_client_context()
    try:
        client = _client(coap, device, rs_port, d_dev, dev_ccs)
        _step(3, "The device's flow: token, /authz-info, EDHOC, OSCORE GET /temp")
        reply = await client.request("GET", "temp")
        if reply.code != (2, 5):
            raise DemoFailure(f"GET /temp answered {error_description(reply)}")
        _show(f"temperature: {reply.payload.decode()} (over the OSCORE context EDHOC derived)")
        assert client.grant is not None
        _show(
            f"token: {len(client.grant.access_token)} bytes, a COSE_Sign1 binding the device's "
            "credential (kccs): no secret in it, so not encrypted"
        )
        _step(4, "Refusal: PUT /led, a scope the AS did not grant (led.write)")
        reply = await client.request("PUT", "led", b"on")
        _show(error_description(reply))
        if reply.code != (4, 3):
            raise DemoFailure(f"expected 4.03, got {reply}")
    finally:
        await coap.shutdown()
    _step(5, "Refusal: a device whose credential no token binds runs EDHOC")
    stranger = Key.generate_ec2(kid=b"\x2c")
    d_stranger = private_key_map(stranger)[-4]
    assert isinstance(d_stranger, bytes)
    coap = await aiocoap.Context.create_client_context()
    try:
        intruder = _client(coap, device, rs_port, d_stranger, Ccs.make(stranger, subject="x"))
        intruder.grant = client.grant  # a token it saw, bound to another credential
        intruder.use_edhoc(client.grant)
        reply = await intruder.send("GET", "temp", b"")
        if reply.code != (4, 1):
            raise DemoFailure(f"expected the EDHOC session to be refused, got {reply}")
        _show("refused: the RS accepts only a credential bound in a valid stored token")
    finally:
        await coap.shutdown()


def run() -> None:
    """``keybound demo --profile edhoc``."""
    console.rule("keybound demo: the EDHOC and OSCORE profile, on loopback")
    with tempfile.TemporaryDirectory(prefix="keybound-demo-") as tmp:
        asyncio.run(run_demo(Path(tmp)))
    console.print("\n[green]done:[/] the flow worked and both refusals held; files removed")


__all__ = ["provision", "run", "run_demo"]
