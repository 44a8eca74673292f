"""The AS over CoAP: /token and /introspect with OSCORE, against a real aiocoap server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
import pytest
from aiocoap import oscore

from keybound.coap import authz_server_site
from keybound.coap.authz_server_site import build_site
from keybound.core import cwt
from keybound.core.authz_store import OscoreContext
from keybound.core.exi import decode_exi_sequence
from keybound.core.keys import Key
from keybound.core.numbers.cose_headers import CoseTag
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.token import CnfKey, CnfOsc
from keybound.tools.authz_server.provision import add_clients, as_config
from tests.helpers.authz import ISSUER, client_context_dir, provision
from tests.helpers.ports import free_port

ACE = 19


def rs_keys(bundle: dict[str, Any]) -> list[Key]:
    token_key = Key.from_jwk(bundle["token_key"])
    return [token_key, Key.from_jwk(bundle["as_public_key"])]


def oscore_json(ctx: OscoreContext) -> dict[str, Any]:
    return {
        "master_secret": ctx.master_secret.hex(),
        "master_salt": ctx.master_salt.hex(),
        "sender_id": ctx.sender_id.hex(),
        "recipient_id": ctx.recipient_id.hex(),
        "id_context": None,
    }


Scenario = Callable[[aiocoap.Context, str, dict[str, Any], Path], Awaitable[None]]


def run_as(url: str, tmp_path: Path, scenario: Scenario) -> None:
    """Start the AS on a free port, run ``scenario(client, base, setup, tmp)``, stop it."""
    setup = provision(url)
    store = setup["store"]
    port = free_port()
    base = f"coap://127.0.0.1:{port}"

    async def main() -> None:
        site, credentials = build_site(store, as_config(store), tmp_path / "state")
        server = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        client = await aiocoap.Context.create_client_context()
        try:
            await scenario(client, base, setup, tmp_path)
        finally:
            await client.shutdown()
            await server.shutdown()
            credentials.close()

    try:
        asyncio.run(main())
    finally:
        store.close()


def use_context(
    client: aiocoap.Context, base: str, oscore_ctx: dict[str, Any], where: Path
) -> oscore.FilesystemSecurityContext:
    ctx = oscore.FilesystemSecurityContext(str(client_context_dir(oscore_ctx, where)))
    client.client_credentials[f"{base}/*"] = ctx
    return ctx


async def post(
    client: aiocoap.Context, uri: str, body: Any, *, raw: bytes | None = None, fmt: int = ACE
) -> aiocoap.Message:
    payload = raw if raw is not None else cbor2.dumps(body)
    request = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload, content_format=fmt)
    return await client.request(request).response


def error_of(response: aiocoap.Message) -> dict[int, Any]:
    assert response.opt.content_format == ACE
    body = cbor2.loads(response.payload)
    assert 30 in body
    assert 31 in body
    return body


# ---- success ------------------------------------------------------------------------------------


def test_oscore_profile_token(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        use_context(client, base, s["sensor_bundle"]["as_context"], tmp / "c1")
        response = await post(client, f"{base}/token", {5: "temp", 9: "read", 38: None})
        assert response.code == aiocoap.CREATED, response.payload
        assert response.opt.content_format == ACE
        body = cbor2.loads(response.payload)
        assert set(body) == {1, 2, 8, 38}
        assert body[38] == 2
        assert body[2] == 3600
        osc = OscoreInputMaterial.from_cbor_map(body[8][4])
        assert 2 <= len(osc.id) <= 4
        assert len(osc.ms) == 16
        assert osc.salt is not None
        decoded = cwt.decode(body[1], rs_keys(s["temp_bundle"]))
        assert [layer.kind for layer in decoded.layers] == [CoseTag.ENCRYPT0, CoseTag.SIGN1]
        token = decoded.token
        assert token.iss == ISSUER
        assert token.aud == ("temp",)
        assert str(token.scope) == "read"
        assert token.ace_profile == 2
        assert token.exp == token.iat + 3600
        assert token.exi is None
        assert isinstance(token.cnf, CnfOsc)
        assert token.cnf.material == osc
        record = s["store"].get_token(token.cti)
        assert record.client_id == "sensor-1"
        assert record.audience == "temp"

    run_as(db_url, tmp_path, scenario)


def test_req_cnf_public_key(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        use_context(client, base, s["sensor_bundle"]["as_context"], tmp / "c1")
        mine = Key.generate_ec2()
        cose_key = mine.public_key().to_cose_key()
        response = await post(client, f"{base}/token", {5: "temp", 4: {1: cose_key}})
        assert response.code == aiocoap.CREATED, response.payload
        body = cbor2.loads(response.payload)
        assert 8 not in body  # the client's own key: nothing to return
        decoded = cwt.decode(body[1], Key.from_jwk(s["temp_bundle"]["as_public_key"]))
        assert [layer.kind for layer in decoded.layers] == [CoseTag.SIGN1]
        assert isinstance(decoded.token.cnf, CnfKey)
        assert decoded.token.cnf.key.equals_public(mine)

    run_as(db_url, tmp_path, scenario)


def test_no_clock_rs_gets_exi_and_increasing_sequence(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        use_context(client, base, s["sensor_bundle"]["as_context"], tmp / "c1")
        seen: list[int] = []
        for _ in range(4):
            response = await post(client, f"{base}/token", {5: "door", 9: "open"})
            assert response.code == aiocoap.CREATED, response.payload
            body = cbor2.loads(response.payload)
            token = cwt.decode(body[1], rs_keys(s["door_bundle"])).token
            assert token.exp is None
            assert token.exi == 3600
            assert token.cti is not None
            seen.append(decode_exi_sequence(token.cti))
        assert seen == sorted(seen)
        assert len(set(seen)) == 4
        assert s["door_bundle"]["has_clock"] is False

    run_as(db_url, tmp_path, scenario)


def test_introspection_by_rs(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        use_context(client, base, s["sensor_bundle"]["as_context"], tmp / "c1")
        response = await post(client, f"{base}/token", {5: "temp"})
        token = cbor2.loads(response.payload)[1]
        rs_client = await aiocoap.Context.create_client_context()
        try:
            intro = s["temp_bundle"]["introspection"]
            use_context(rs_client, base, intro["oscore"], tmp / "rs")
            answer = await post(rs_client, f"{base}/introspect", {11: token})
            assert answer.code == aiocoap.CREATED, answer.payload
            body = cbor2.loads(answer.payload)
            assert body[10] is True
            assert body[3] == "temp"
            assert body[24] == "sensor-1"
            assert 4 in body[8]  # cnf with the OSCORE input material
            s["store"].revoke(cwt.decode(token, rs_keys(s["temp_bundle"])).token.cti)
            answer = await post(rs_client, f"{base}/introspect", {11: token})
            assert cbor2.loads(answer.payload) == {10: False}
            answer = await post(rs_client, f"{base}/introspect", {11: b"\x84\x40\xa0\x40\x40"})
            assert cbor2.loads(answer.payload) == {10: False}
        finally:
            await rs_client.shutdown()

    run_as(db_url, tmp_path, scenario)


def _loaded_client_context(
    credentials: authz_server_site.AsServerCredentials, kid: bytes
) -> authz_server_site.StoredServerContext:
    """The AS's context of the client sending with ``kid``, derived as a request would."""
    asyncio.run(credentials.ensure({oscore.COSE_KID: kid}))
    return credentials.find_oscore({oscore.COSE_KID: kid})


def test_sequence_numbers_survive_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'as.db'}"
    state = tmp_path / "state"
    setup = provision(url)
    store = setup["store"]
    kid = setup["sensor"].oscore.sender_id
    _site, credentials = build_site(store, as_config(store), state)
    ctx = _loaded_client_context(credentials, kid)
    used = [ctx.new_sequence_number() for _ in range(3)]
    assert used == [0, 1, 2]
    credentials.close()
    # a fresh start takes numbers above every one reserved before, never one used
    _site, credentials = build_site(store, as_config(store), state)
    again = _loaded_client_context(credentials, kid)
    assert again.key == ctx.key
    assert again.new_sequence_number() > max(used)
    credentials.close()
    store.close()


def test_no_per_client_file_is_made(tmp_path: Path) -> None:
    """Start-up and a context's first use write to the database, not to the state directory."""
    setup = provision(f"sqlite:///{tmp_path / 'as.db'}")
    store = setup["store"]
    state = tmp_path / "state"
    _site, credentials = build_site(store, as_config(store), state)
    ctx = _loaded_client_context(credentials, setup["sensor"].oscore.sender_id)
    ctx.new_sequence_number()
    credentials.close()
    store.close()
    assert not state.exists()


def test_contexts_are_derived_on_their_first_request_only(tmp_path: Path) -> None:
    setup = provision(f"sqlite:///{tmp_path / 'as.db'}")
    store = setup["store"]
    _site, credentials = build_site(store, as_config(store), tmp_path / "state")
    try:
        assert credentials.loaded == {}
        kid = setup["sensor"].oscore.sender_id
        with pytest.raises(KeyError):
            credentials.find_oscore({oscore.COSE_KID: kid})
        ctx = _loaded_client_context(credentials, kid)
        assert ctx.principal == ("client", "sensor-1")
        assert list(credentials.loaded) == [(kid, None)]
    finally:
        credentials.close()
        store.close()


def test_a_removed_client_is_dropped_from_the_index_at_its_next_request(tmp_path: Path) -> None:
    """A kid whose record went since the index was read is not looked up again on every
    request: it becomes unknown, so only the rate-limited read of the index can bring it."""
    setup = provision(f"sqlite:///{tmp_path / 'as.db'}")
    store = setup["store"]
    kid = setup["sensor"].oscore.sender_id
    _site, credentials = build_site(store, as_config(store), tmp_path / "state")
    try:
        store.remove_client("sensor-1")
        asyncio.run(credentials._ensure_loaded((kid, None)))
        assert credentials.loaded == {}
        assert (kid, None) not in credentials._index
    finally:
        credentials.close()
        store.close()


def test_a_fresh_context_has_an_empty_window_a_known_one_asks_for_echo(tmp_path: Path) -> None:
    """RFC 8613 Appendix B.1.2: only a context never used before may start with an empty
    replay window; after a restart the window is unknown and the first request gets Echo."""
    setup = provision(f"sqlite:///{tmp_path / 'as.db'}")
    store = setup["store"]
    kid = setup["sensor"].oscore.sender_id
    _site, credentials = build_site(store, as_config(store), tmp_path / "state")
    assert _loaded_client_context(credentials, kid).recipient_replay_window.is_initialized()
    credentials.close()
    _site, credentials = build_site(store, as_config(store), tmp_path / "state")
    again = _loaded_client_context(credentials, kid)
    assert not again.recipient_replay_window.is_initialized()
    credentials.close()
    store.close()


def test_an_earlier_state_directory_is_read_once(tmp_path: Path) -> None:
    """A context an earlier keybound kept in STATE_DIR/oscore/<fingerprint>/sequence.json
    continues above the file's next number; its window is unknown (Echo)."""
    setup = provision(f"sqlite:///{tmp_path / 'as.db'}")
    store = setup["store"]
    state = tmp_path / "state"
    fingerprint = authz_server_site.context_fingerprint(setup["sensor"].oscore)
    legacy = state / "oscore" / fingerprint
    legacy.mkdir(parents=True)
    (legacy / "sequence.json").write_text('{"next-to-send": 5000, "received": "unknown"}')
    _site, credentials = build_site(store, as_config(store), state)
    ctx = _loaded_client_context(credentials, setup["sensor"].oscore.sender_id)
    assert ctx.new_sequence_number() >= 5000
    assert not ctx.recipient_replay_window.is_initialized()
    credentials.close()
    store.close()


_USER = """
import asyncio, sys
from aiocoap import oscore
from keybound.coap.authz_server_site import build_site
from keybound.tools.authz_server.provision import as_config
from keybound.tools.authz_server.storage import SqlAuthzStore

store = SqlAuthzStore.open(sys.argv[1])
_site, credentials = build_site(store, as_config(store), sys.argv[2])
kid = {oscore.COSE_KID: bytes.fromhex(sys.argv[3])}
asyncio.run(credentials.ensure(kid))
ctx = credentials.find_oscore(kid)
while True:  # every number is printed only after new_sequence_number handed it out
    print(ctx.new_sequence_number(), flush=True)
"""


def test_a_killed_as_never_reuses_a_sequence_number(tmp_path: Path) -> None:
    """RFC 8613 Appendix B.1.1 across SIGKILL: an AS process using its context with a
    client is killed mid-stream, twice; no number any of them took is taken again."""
    url = f"sqlite:///{tmp_path / 'as.db'}"
    setup = provision(url)
    setup["store"].close()
    kid = setup["sensor"].oscore.sender_id.hex()
    seen: list[int] = []
    for _ in range(3):
        process = subprocess.Popen(
            [sys.executable, "-c", _USER, url, str(tmp_path / "state"), kid],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        numbers = [int(process.stdout.readline()) for _ in range(150)]  # past several blocks
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        numbers += [int(line) for line in process.stdout.read().split()]
        process.stdout.close()
        assert numbers == sorted(set(numbers))
        assert min(numbers) > max(seen, default=-1)
        seen += numbers
    assert len(seen) == len(set(seen)) >= 450


# ---- errors -------------------------------------------------------------------------------------


def _error_case(db_url: str, tmp_path: Path, body: Any, expect_code: Any, expect_error: int,
                *, raw: bytes | None = None, fmt: int = ACE) -> None:  # fmt: skip
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        use_context(client, base, s["sensor_bundle"]["as_context"], tmp / "c1")
        response = await post(client, f"{base}/token", body, raw=raw, fmt=fmt)
        assert response.code == expect_code, (response.code, response.payload)
        assert error_of(response)[30] == expect_error

    run_as(db_url, tmp_path, scenario)


def test_unknown_audience(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, {5: "nowhere"}, aiocoap.BAD_REQUEST, 1)


def test_invalid_scope(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, {5: "temp", 9: "write"}, aiocoap.BAD_REQUEST, 6)


def test_unsupported_grant_type(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, {5: "temp", 33: 0}, aiocoap.BAD_REQUEST, 5)


def test_unsupported_pop_key(db_url: str, tmp_path: Path) -> None:
    symmetric = {1: 4, -1: b"0123456789abcdef"}
    _error_case(db_url, tmp_path, {5: "temp", 4: {1: symmetric}}, aiocoap.BAD_REQUEST, 7)


def test_incompatible_profile(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, {5: "temp", 38: 1}, aiocoap.BAD_REQUEST, 8)


def test_malformed_cbor(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, None, aiocoap.BAD_REQUEST, 1, raw=b"\xa1\x05")


def test_deeply_nested_cbor(db_url: str, tmp_path: Path) -> None:
    _error_case(db_url, tmp_path, None, aiocoap.BAD_REQUEST, 1, raw=b"\x81" * 500 + b"\x00")


def test_oversized_request(db_url: str, tmp_path: Path) -> None:
    body = {5: "temp", 9: "x" * 5000}
    _error_case(db_url, tmp_path, body, aiocoap.REQUEST_ENTITY_TOO_LARGE, 1)


def test_unprotected_token_request_is_401(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        response = await post(client, f"{base}/token", {5: "temp"})
        assert response.code == aiocoap.UNAUTHORIZED
        assert error_of(response)[30] == 2  # invalid_client

    run_as(db_url, tmp_path, scenario)


def test_unknown_context_is_401(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        stranger = dict(s["sensor_bundle"]["as_context"])
        stranger["sender_id"] = "7777"
        use_context(client, base, stranger, tmp / "c1")
        with pytest.raises(oscore.NotAProtectedMessage) as caught:
            await post(client, f"{base}/token", {5: "temp"})
        assert caught.value.plain_message.code == aiocoap.UNAUTHORIZED

    run_as(db_url, tmp_path, scenario)


def test_rs_context_cannot_get_tokens(db_url: str, tmp_path: Path) -> None:
    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        use_context(client, base, s["temp_bundle"]["introspection"]["oscore"], tmp / "rs")
        response = await post(client, f"{base}/token", {5: "temp"})
        assert response.code == aiocoap.UNAUTHORIZED
        assert error_of(response)[30] == 2

    run_as(db_url, tmp_path, scenario)


@pytest.mark.parametrize("fmt", [50])
def test_wrong_content_format(db_url: str, tmp_path: Path, fmt: int) -> None:
    _error_case(db_url, tmp_path, {5: "temp"}, aiocoap.BAD_REQUEST, 1, fmt=fmt)


def test_a_client_added_while_running_is_found_without_store_work_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """find_oscore only looks up; ensure() reads the store in a worker thread first."""
    monkeypatch.setattr(authz_server_site, "_REFRESH_INTERVAL_S", -1.0)  # no rate limit here
    setup = provision(f"sqlite:///{tmp_path / 'as.db'}")
    store = setup["store"]
    _site, credentials = build_site(store, as_config(store), tmp_path / "state")
    late = add_clients(store, ["late-1"], {"temp": ["read"]})[0]
    assert late.oscore is not None
    unprotected = {oscore.COSE_KID: late.oscore.sender_id}
    with pytest.raises(KeyError):
        credentials.find_oscore(unprotected)  # no refresh inside the lookup
    reads: list[tuple[str, str]] = []

    def recording(name: str) -> None:
        original = getattr(store, name)

        def read(*args: Any, **kwargs: Any) -> Any:
            reads.append((name, threading.current_thread().name))
            return original(*args, **kwargs)

        monkeypatch.setattr(store, name, read)

    for name in ("list_oscore_peers", "get_client", "start_oscore_state"):
        recording(name)

    async def main() -> None:
        await credentials.ensure(unprotected)
        reads.append(("loop", threading.current_thread().name))

    try:
        asyncio.run(main())
        found = credentials.find_oscore(unprotected)
        assert found.principal == ("client", "late-1")
        assert [name for name, _thread in reads] == [
            "list_oscore_peers",
            "get_client",
            "start_oscore_state",
            "loop",
        ]
        loop_thread = reads[-1][1]
        assert all(thread != loop_thread for _name, thread in reads[:-1])  # off the loop
    finally:
        credentials.close()
        store.close()


def test_a_client_added_just_after_a_refresh_is_served_on_its_first_request(
    db_url: str, tmp_path: Path
) -> None:
    """Unknown kids read the store once a second at most; one that arrives within that
    second waits for the next read instead of being refused (a device registered a
    moment after another device's first request)."""

    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        store = s["store"]
        first = add_clients(store, ["new-1"], {"temp": ["read"]})[0]
        assert first.oscore is not None
        use_context(client, base, oscore_json(first.oscore), tmp / "c1")
        answered = await post(client, f"{base}/token", {5: "temp"})
        assert answered.code == aiocoap.CREATED  # its unknown kid made the AS read the store
        second = add_clients(store, ["new-2"], {"temp": ["read"]})[0]
        assert second.oscore is not None
        other = await aiocoap.Context.create_client_context()
        try:
            use_context(other, base, oscore_json(second.oscore), tmp / "c2")
            response = await post(other, f"{base}/token", {5: "temp"})  # within the second
            assert response.code == aiocoap.CREATED, response.payload
        finally:
            await other.shutdown()

    run_as(db_url, tmp_path, scenario)


def test_a_replayed_request_is_logged_with_the_way_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 8613 §7.4: a request whose Partial IV the AS saw is refused 4.01 "Replay
    detected"; the AS names the client, the Partial IV and ``as client rekey``, once a
    minute at most per peer (later ones are counted into the next line)."""
    monkeypatch.setattr(authz_server_site, "_replays", {})
    caplog.set_level("WARNING", logger="keybound.as.coap")

    async def scenario(client: aiocoap.Context, base: str, s: dict[str, Any], tmp: Path) -> None:
        ctx = use_context(client, base, s["sensor_bundle"]["as_context"], tmp / "c1")
        first = await post(client, f"{base}/token", {5: "temp", 9: "read"})
        assert first.code == aiocoap.CREATED
        for _ in range(2):  # as a device whose state was erased: Partial IV 0 again
            ctx.sender_sequence_number = 0
            request = aiocoap.Message(
                code=aiocoap.POST, uri=f"{base}/token", content_format=ACE,
                payload=cbor2.dumps({5: "temp", 9: "read"}),
            )  # fmt: skip
            # aiocoap's client refuses the unprotected answer; it carries the refusal
            with pytest.raises(oscore.NotAProtectedMessage) as refused:
                await client.request(request).response
            answer = refused.value.plain_message
            assert answer.code == aiocoap.UNAUTHORIZED
            assert answer.payload == b"Replay detected"

    run_as(f"sqlite:///{tmp_path / 'as.db'}", tmp_path, scenario)
    lines = [r.getMessage() for r in caplog.records if "OSCORE replay" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("client sensor-1: OSCORE replay: request with Partial IV 0 ")
    assert "keybound as client rekey sensor-1" in lines[0]
