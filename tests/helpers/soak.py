"""Hostile traffic against real AS and RS processes: the fuzzer and the long soak runs.

``python -m tests.helpers.soak fuzz --count 200000 --seconds 1800`` provisions an
AS and an RS in a temporary directory, starts both as processes on 127.0.0.1 and
sends them whole CoAP datagrams: random bytes and mutations of valid
``/authz-info`` posts, OSCORE requests and ``/token`` requests. Every reply must
be a well-formed CoAP response, never 5.xx, with an ACE error map (RFC 9200
§5.8.3) where Content-Format 19 is used; no traceback may reach a server's log;
the servers' resident memory must stay bounded; and a legitimate client must
still complete its flow afterwards.

``python -m tests.helpers.soak codec --count 1000000`` compares the CBOR, COSE, CWT and
claims codec with its 0.1.0 reference copy on random and mutated inputs, in process
(tests/helpers/codec_diff.py): the same output or the same error for every input.

``python -m tests.helpers.soak soak --clients 200 --requests 50 --kills 20``
runs the load test (clients x OSCORE requests, zero errors) and then kills the
RS with SIGKILL ``--kills`` times during a stream of OSCORE requests, checking
that no response Partial IV repeats and that every client recovers.

Both stop by themselves at ``--count``/``--requests`` or after ``--seconds``,
whichever comes first, and exit 1 when a property fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiocoap
import cbor2
from aiocoap import oscore
from aiocoap.message import Direction

from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.core import cwt
from keybound.core.authz_info import AuthzInfoRequest, AuthzInfoResponse
from keybound.core.keys import Key
from keybound.core.numbers.ace_parameters import CONTENT_FORMAT_ACE_CBOR
from keybound.core.oscore_derivation import derive_context_parameters
from keybound.core.oscore_material import OscoreInputMaterial
from keybound.core.oscore_sequence import SequenceNumberReservation
from keybound.core.scope import TextScope
from keybound.core.token import AccessToken, CnfOsc
from keybound.tools.authz_server.provision import add_clients, add_resource_server, init_issuer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import rs_bundle
from tests.helpers.ports import free_udp_port

LOCALHOST = "127.0.0.1"
ISSUER = "coap://as.example"
#: RS audiences provisioned at the AS: one with a clock, one without (RFC 9200 §5.10.3).
CLOCK_AUDIENCE = "temp"
NO_CLOCK_AUDIENCE = "door"
_CREATED = 0x41
_CONTENT = 0x45


# ---- server processes ------------------------------------------------------------------


@dataclass
class ServerProcess:
    """A server started by this module; its output goes to ``log``."""

    name: str
    argv: list[str]
    log: Path
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not come up:\n{self.log_text()}")

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def rss_kib(self) -> int:
        """VmRSS of the process, from /proc/PID/status (0 where unavailable)."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        """SIGKILL, and wait for the process to be gone."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()


def log_problems(text: str) -> list[str]:
    """Lines of a server log that show an unhandled exception."""
    bad = ("Traceback", "internal error", "exception occurred", "Exception in callback")
    return [line for line in text.splitlines() if any(word in line for word in bad)]


def probe(port: int, datagram: bytes, timeout: float = 0.5) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(datagram, (LOCALHOST, port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


def coap_get(path: str, mid: int = 1) -> bytes:
    message = aiocoap.Message(code=aiocoap.GET, uri_path=path.split("/"))
    message.mtype = aiocoap.CON
    message.mid = mid
    message.token = b"\x01\x02"
    return bytes(message.encode())


# ---- provisioning ----------------------------------------------------------------------


@dataclass
class Fleet:
    """An AS database with two resource servers and clients, and the RS configuration.

    ``db`` is an SQLAlchemy URL (default: an SQLite file in ``root``). The RS
    serves ``/temp`` (scope ``read``) for audience ``temp`` and keeps at most
    ``capacity`` tokens; ``response_partial_iv`` makes every OSCORE response carry
    the RS's own Partial IV.
    """

    root: Path
    clients: int = 2
    db: str = ""
    capacity: int = 1000
    sequence_chunk: int = 64
    response_partial_iv: bool = True
    as_port: int = field(default_factory=free_udp_port)
    rs_port: int = field(default_factory=free_udp_port)
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)
    client_contexts: dict[str, dict[str, str]] = field(default_factory=dict)
    servers: list[ServerProcess] = field(default_factory=list)
    as_contexts: dict[str, Any] = field(default_factory=dict)
    as_signing_key: Key | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.db:
            self.db = f"sqlite:///{self.root / 'as.db'}"

    @property
    def token_key(self) -> Key:
        return Key.from_jwk(self.bundles[CLOCK_AUDIENCE]["token_key"])

    @property
    def as_base(self) -> str:
        return f"coap://{LOCALHOST}:{self.as_port}"

    @property
    def rs_base(self) -> str:
        return f"coap://{LOCALHOST}:{self.rs_port}"

    def provision(self, *, init: bool = True) -> None:
        store = SqlAuthzStore.init(self.db)
        try:
            if init:
                init_issuer(store, ISSUER)
                add_resource_server(store, "temp-rs", CLOCK_AUDIENCE, ["read", "write"])
                add_resource_server(store, "door-rs", NO_CLOCK_AUDIENCE, ["open"], has_clock=False)
                names = [f"client-{i}" for i in range(self.clients)]
                grants = {CLOCK_AUDIENCE: ["read"], NO_CLOCK_AUDIENCE: ["open"]}
                for made in add_clients(store, names, grants):
                    assert made.oscore is not None
                    self.client_contexts[made.client.client_id] = {
                        "secret_hex": made.oscore.master_secret.hex(),
                        "salt_hex": made.oscore.master_salt.hex(),
                        "sender-id_hex": made.oscore.sender_id.hex(),
                        "recipient-id_hex": made.oscore.recipient_id.hex(),
                    }
            issuer = store.get_issuer()
            assert issuer is not None
            self.as_signing_key = Key.from_cose_key(issuer.signing_key)
            for rs in store.list_resource_servers():
                self.bundles[rs.audience] = rs_bundle(rs, issuer, as_base=self.as_base)
        finally:
            store.close()
        self.write_rs_config()

    def write_rs_config(self) -> Path:
        bundle_path = self.root / "rs-bundle.json"
        bundle_path.write_text(json.dumps(self.bundles[CLOCK_AUDIENCE]))
        bundle_path.chmod(0o600)
        config = self.root / "rs.toml"
        config.write_text(
            f'bundle = "rs-bundle.json"\nlisten = "{LOCALHOST}:{self.rs_port}"\n'
            f'state = "rs-state/rs-state.db"\n[capacity]\ntokens = {self.capacity}\n'
            f"[oscore]\nsequence_chunk = {self.sequence_chunk}\n"
            f"response_partial_iv = {'true' if self.response_partial_iv else 'false'}\n"
            '[resources."/temp"]\nGET = ["read"]\n'
        )
        return config

    def rs_process(self) -> ServerProcess:
        argv = [
            sys.executable,
            "-m",
            "keybound.tools.cli.rs_commands",
            "serve",
            "--config",
            "rs.toml",
        ]
        return ServerProcess("rs", argv, self.root / "rs.log", self.root)

    def as_process(self, port: int | None = None, name: str = "as") -> ServerProcess:
        argv = [
            sys.executable, "-c", "from keybound.tools.cli.app import main; main()",
            "as", "serve", "--db", self.db, "--coap", f"{LOCALHOST}:{port or self.as_port}",
            "--state-dir", str(self.root / f"{name}-state"),
        ]  # fmt: skip
        return ServerProcess(name, argv, self.root / f"{name}.log", self.root)

    def start_rs(self) -> ServerProcess:
        server = self.rs_process()
        server.start(lambda: _answers(self.rs_port))
        self.servers.append(server)
        return server

    def start_as(self, port: int | None = None, name: str = "as") -> ServerProcess:
        server = self.as_process(port, name)
        server.start(lambda: _answers(port or self.as_port))
        self.servers.append(server)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        for context in self.as_contexts.values():
            release(context)
        self.as_contexts.clear()

    def client_context(self, client_id: str) -> Any:
        """The aiocoap client-side context of ``client_id`` towards the AS.

        One per client for the fleet's life: a second context from the same secrets
        would start again at sequence number 0, and the AS would rightly see replays.
        """
        if client_id not in self.as_contexts:
            where = self.root / "clients" / client_id
            where.mkdir(parents=True, exist_ok=True)
            (where / "secret.json").write_text(json.dumps(self.client_contexts[client_id]))
            self.as_contexts[client_id] = oscore.FilesystemSecurityContext(str(where))
        return self.as_contexts[client_id]

    def mint(
        self,
        mat: OscoreInputMaterial,
        *,
        scope: str = "read",
        audience: str = CLOCK_AUDIENCE,
        lifetime: int = 600,
        key: Key | None = None,
        signed: bool = True,
    ) -> bytes:
        """A token for the RS as the AS would issue it: the AS's Sign1 nested in an Encrypt0
        under the RS's token key (``signed`` False leaves the Sign1 out)."""
        now = int(time.time())
        token = AccessToken(
            iss=ISSUER,
            aud=(audience,),
            exp=now + lifetime,
            iat=now,
            cti=os.urandom(8),
            scope=TextScope.parse(scope),
            ace_profile=2,
            cnf=CnfOsc(mat),
        )
        encrypt = cwt.Encrypt0(key or self.token_key)
        if not signed:
            return cwt.encode(token, encrypt, random_bytes=os.urandom)
        assert self.as_signing_key is not None, "provision the fleet first"
        return cwt.encode(
            token, cwt.Nested(cwt.Sign1(self.as_signing_key), encrypt), random_bytes=os.urandom
        )


def release(context: Any) -> None:
    """Persist and unlock an aiocoap filesystem context (before its directory goes)."""
    if getattr(context, "lockfile", None) is not None:
        context._destroy()


def _answers(port: int) -> bool:
    """True once a CoAP server answers a GET for /.well-known/core."""
    return probe(port, coap_get(".well-known/core"), timeout=0.3) is not None


@contextlib.contextmanager
def running_fleet(root: Path | None = None, **options: Any) -> Iterator[Fleet]:
    """A provisioned fleet with the AS and the RS running, stopped on exit."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keybound-soak-")))
        fleet = Fleet(root, **options)
        fleet.provision()
        stack.callback(fleet.stop)
        fleet.start_as()
        fleet.start_rs()
        yield fleet


# ---- the OSCORE client side --------------------------------------------------------------


class RecordingContext(DurableSecurityContext):
    """A client-side RFC 9203 context (in memory) that records the responses' Partial IVs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.response_pivs: list[bytes] = []

    def unprotect(self, protected_message: Any, request_id: Any = None) -> Any:
        if request_id is not None:
            option = protected_message.opt.oscore or b""
            if option and option[0] & 0x07:
                self.response_pivs.append(bytes(option[1 : 1 + (option[0] & 0x07)]))
        return super().unprotect(protected_message, request_id)


def material(id_: bytes = b"\x01") -> OscoreInputMaterial:
    return OscoreInputMaterial(id=id_, ms=os.urandom(16))


def authz_info_datagram(token: bytes, nonce1: bytes, id1: bytes, mid: int | None = None) -> bytes:
    """A confirmable ``/authz-info`` POST; its Message ID (and token) random unless given.

    Each probe sends from a new socket, and the kernel may hand a later probe the port
    an earlier one had: with one Message ID for all of them the RS's deduplication
    (RFC 7252 §4.5, for EXCHANGE_LIFETIME) would answer that later POST with the
    earlier one's cached response.
    """
    if mid is None:
        mid = random.SystemRandom().randrange(0x10000)
    message = aiocoap.Message(
        code=aiocoap.POST,
        uri_path=["authz-info"],
        payload=AuthzInfoRequest(token, nonce1, id1).encode(),
        content_format=CONTENT_FORMAT_ACE_CBOR,
    )
    message.mtype = aiocoap.CON
    message.mid = mid
    message.token = mid.to_bytes(2, "big")
    return bytes(message.encode())


def client_side(
    mat: OscoreInputMaterial, nonce1: bytes, id1: bytes, answer: bytes
) -> RecordingContext:
    """The client's context of RFC 9203 §4.3 from the RS's 2.01 payload."""
    response = AuthzInfoResponse.decode(answer)
    derived = derive_context_parameters(
        mat, nonce1, response.nonce2, id1, response.server_recipient_id, role="client"
    )
    return RecordingContext(
        derived,
        key_id=b"client",
        reservation=SequenceNumberReservation(0, chunk=1 << 20),
        persist_mark=lambda mark: None,
        replay_window_known=True,
    )


def establish_raw(fleet: Fleet, id1: bytes = b"\x42") -> tuple[RecordingContext, bytes]:
    """POST a fresh token to /authz-info over a plain socket; return the context and token."""
    mat = material()
    token = fleet.mint(mat)
    nonce1 = os.urandom(8)
    reply = probe(fleet.rs_port, authz_info_datagram(token, nonce1, id1), timeout=5)
    assert reply is not None, "no answer from /authz-info"
    message = aiocoap.Message.decode(reply)
    assert int(message.code) == _CREATED, (message.code, message.payload)
    return client_side(mat, nonce1, id1, message.payload), token


async def establish(
    client: aiocoap.Context, fleet: Fleet, token: bytes, mat: OscoreInputMaterial, id1: bytes
) -> RecordingContext:
    """POST ``token`` to /authz-info with aiocoap and install the derived context."""
    nonce1 = os.urandom(8)
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"{fleet.rs_base}/authz-info",
        payload=AuthzInfoRequest(token, nonce1, id1).encode(),
        content_format=CONTENT_FORMAT_ACE_CBOR,
    )
    response = await client.request(request).response
    if int(response.code) != _CREATED:
        raise AssertionError(f"authz-info answered {response.code}: {response.payload!r}")
    context = client_side(mat, nonce1, id1, response.payload)
    client.client_credentials[f"{fleet.rs_base}/*"] = context
    return context


def protect(context: Any, plain: Any, mid: int) -> bytes:
    """An OSCORE-protected CON request as a datagram (``plain`` is an aiocoap Message)."""
    return protect_with_id(context, plain, mid)[0]


def protect_with_id(context: Any, plain: Any, mid: int) -> tuple[bytes, Any]:
    """The datagram and the request identity needed to unprotect its response."""
    plain.direction = Direction.OUTGOING
    protected, request_id = context.protect(plain)
    protected.mtype = aiocoap.CON
    protected.mid = mid & 0xFFFF
    protected.token = (mid & 0xFFFF).to_bytes(2, "big")
    return bytes(protected.encode()), request_id


def token_request_datagram(context: Any, mid: int, audience: str = CLOCK_AUDIENCE) -> bytes:
    body = cbor2.dumps({5: audience, 9: "read" if audience == CLOCK_AUDIENCE else "open"})
    plain = aiocoap.Message(code=aiocoap.POST, uri_path=["token"], payload=body, content_format=19)
    return protect(context, plain, mid)


async def request_token(client: aiocoap.Context, fleet: Fleet, audience: str) -> dict[int, Any]:
    scope = "read" if audience == CLOCK_AUDIENCE else "open"
    request = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"{fleet.as_base}/token",
        payload=cbor2.dumps({5: audience, 9: scope}),
        content_format=CONTENT_FORMAT_ACE_CBOR,
    )
    response = await client.request(request).response
    if int(response.code) != _CREATED:
        raise AssertionError(f"/token answered {response.code}: {response.payload!r}")
    body: dict[int, Any] = cbor2.loads(response.payload)
    return body


async def legitimate_flow(fleet: Fleet, client_id: str = "client-0") -> None:
    """Token from the AS, /authz-info at the RS, one OSCORE GET: raises unless all succeed."""
    client = await aiocoap.Context.create_client_context()
    try:
        client.client_credentials[f"{fleet.as_base}/*"] = fleet.client_context(client_id)
        body = await request_token(client, fleet, CLOCK_AUDIENCE)
        mat = OscoreInputMaterial.from_cbor_map(body[8][4])
        await establish(client, fleet, body[1], mat, os.urandom(2))
        response = await client.request(
            aiocoap.Message(code=aiocoap.GET, uri=f"{fleet.rs_base}/temp")
        ).response
        if int(response.code) != _CONTENT:
            raise AssertionError(f"GET /temp answered {response.code}")
    finally:
        await client.shutdown()


# ---- datagrams ---------------------------------------------------------------------------

#: CBOR fragments that stress decoders: deep nesting, huge declared lengths, indefinite items.
NASTY_CBOR = (
    b"\x81" * 600 + b"\x00",
    b"\xa1\x01" * 300 + b"\x00",
    b"\x9f" * 200,
    b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x9b\x00\x00\x00\x01\x00\x00\x00\x00",
    b"\xbf\x01\x02\xff",
    b"\xa2\x01\x41\x00\x01\x41\x00",
    b"\xd8\x3d\xd8\x3d\xd8\x3d\x80",
    b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xa1\x01\x59\xff\xff",
    b"\xa3\x01\x40\x18\x28\x40\x18\x2b\x40",
    b"\xf7",
    b"\x7f\x61\x61\xff",
)


class Mutator:
    """Mutations of whole datagrams, driven by one ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def junk(self, size: int) -> bytes:
        return bytes(self.rng.getrandbits(8) for _ in range(size))

    def random_datagram(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(4)
        if kind == 0:
            return self.junk(rng.randrange(0, 64))
        if kind == 1:  # a plausible header: version 1, any type, any token length
            head = bytes([0x40 | rng.randrange(0x40), rng.getrandbits(8)]) + self.junk(2)
            return head + self.junk(rng.randrange(0, 200))
        if kind == 2:  # a CON POST to /authz-info with a nasty or random payload
            payload = rng.choice(NASTY_CBOR) if rng.random() < 0.5 else self.junk(80)
            return _post(["authz-info"], payload, rng.getrandbits(16))
        return self.junk(rng.randrange(0, 1300))

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        out = bytearray(data)
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(9)
            if not out:
                out.extend(self.junk(4))
            pos = rng.randrange(len(out))
            if op == 0:
                out[pos] ^= 1 << rng.randrange(8)
            elif op == 1:
                out[pos] = rng.getrandbits(8)
            elif op == 2:
                out[pos:pos] = self.junk(rng.randrange(1, 16))
            elif op == 3:
                del out[pos : pos + rng.randrange(1, 16)]
            elif op == 4:
                del out[pos:]
            elif op == 5:
                end = min(len(out), pos + rng.randrange(1, 32))
                out[pos:pos] = out[pos:end]
            elif op == 6 and len(out) >= 2:  # header: type, token length, code
                out[rng.randrange(2)] = rng.getrandbits(8)
            elif op == 7:
                out[pos] = rng.choice((0x00, 0xFF, 0x7F, 0x80, 0x18, 0x19, 0x1B, 0x5B, 0x9F))
            else:  # replace the payload with a nasty CBOR item
                marker = out.find(0xFF)
                if marker > 0:
                    out[marker + 1 :] = rng.choice(NASTY_CBOR)
        out[2:4] = rng.getrandbits(16).to_bytes(2, "big") if len(out) >= 4 else out[2:4]
        return bytes(out)


def _post(path: list[str], payload: bytes, mid: int) -> bytes:
    message = aiocoap.Message(code=aiocoap.POST, uri_path=path, payload=payload, content_format=19)
    message.mtype = aiocoap.CON
    message.mid = mid
    message.token = os.urandom(2)
    return bytes(message.encode())


def rs_seeds(fleet: Fleet) -> list[bytes]:
    """Valid datagrams for the RS: /authz-info posts and OSCORE requests."""
    seeds = []
    for i in range(3):
        mat = material()
        seeds.append(authz_info_datagram(fleet.mint(mat), os.urandom(8), bytes([i + 1]), 100 + i))
    context, _ = establish_raw(fleet, b"\x99")
    for mid in range(200, 203):
        seeds.append(protect(context, aiocoap.Message(code=aiocoap.GET, uri_path=["temp"]), mid))
    seeds.append(coap_get("temp", 300))
    return seeds


def as_seeds(fleet: Fleet, context: Any) -> list[bytes]:
    """Valid OSCORE /token requests (and unprotected ones) for the AS."""
    seeds = [token_request_datagram(context, 400 + i) for i in range(3)]
    seeds.append(token_request_datagram(context, 403, NO_CLOCK_AUDIENCE))
    seeds.append(_post(["token"], cbor2.dumps({5: CLOCK_AUDIENCE, 9: "read"}), 404))
    return seeds


# ---- exchanging and judging ---------------------------------------------------------------


def exchange(port: int, datagrams: Sequence[bytes], *, wait: float = 1.0) -> list[bytes | None]:
    """Send each datagram from its own socket; collect the first reply to each."""
    sockets = []
    replies: list[bytes | None] = [None] * len(datagrams)
    try:
        for data in datagrams:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(sock)
            sock.bind((LOCALHOST, 0))
            sock.setblocking(False)
            with contextlib.suppress(OSError):  # e.g. a datagram larger than allowed
                sock.sendto(data, (LOCALHOST, port))
        pending = {sock.fileno(): index for index, sock in enumerate(sockets)}
        deadline = time.monotonic() + wait
        quiet_until = time.monotonic() + min(wait, 0.3)
        while pending and time.monotonic() < min(deadline, quiet_until):
            timeout = max(0.0, min(deadline, quiet_until) - time.monotonic())
            ready, _, _ = select.select(list(pending), [], [], timeout)
            for fileno in ready:
                index = pending.pop(fileno)
                with contextlib.suppress(OSError):
                    replies[index] = sockets[index].recv(65535)
                quiet_until = time.monotonic() + 0.2
    finally:
        for sock in sockets:
            sock.close()
    return replies


def reply_problem(reply: bytes) -> str | None:
    """Why ``reply`` is not an acceptable answer to hostile input (None: it is)."""
    try:
        message = aiocoap.Message.decode(reply)
    except Exception as exc:  # aiocoap raises several types for malformed input
        return f"the reply does not decode: {exc!r}"
    code = int(message.code)
    if code == 0:
        return None if not message.payload else "an empty message with a payload"
    if message.code.is_request():
        return f"a request code in a reply: {message.code}"
    if code >> 5 == 5:
        return f"a server error: {message.code}"
    if code >> 5 == 4 and message.opt.content_format == CONTENT_FORMAT_ACE_CBOR:
        try:
            body = cbor2.loads(message.payload)
        except Exception as exc:  # cbor2 raises several types
            return f"a Content-Format 19 error that is not CBOR: {exc!r}"
        # an error map (error 30) or AS Request Creation Hints (AS 1) on 4.01
        if not isinstance(body, dict) or not ({30, 1} & set(body)):
            return f"a Content-Format 19 error without an error map: {body!r}"
    return None


@dataclass
class FuzzStats:
    sent: int = 0
    replies: int = 0
    codes: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def judge(self, datagrams: Sequence[bytes], replies: Sequence[bytes | None]) -> None:
        for data, reply in zip(datagrams, replies, strict=True):
            self.sent += 1
            if reply is None:
                continue
            self.replies += 1
            problem = reply_problem(reply)
            if problem is not None:
                self.problems.append(f"{problem} for input {data.hex()}")
                continue
            code = int(aiocoap.Message.decode(reply).code)
            name = f"{code >> 5}.{code & 31:02d}"
            self.codes[name] = self.codes.get(name, 0) + 1

    def summary(self) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.codes.items()))
        return f"{self.sent} datagrams, {self.replies} replies ({codes}), {len(self.problems)} bad"


def fuzz_batch(rng: random.Random, seeds: Sequence[bytes], size: int) -> list[bytes]:
    mutator = Mutator(rng)
    batch = []
    for _ in range(size):
        if rng.random() < 0.3:
            batch.append(mutator.random_datagram())
        else:
            batch.append(mutator.mutate(rng.choice(seeds)))
    return batch


# ---- the long modes ----------------------------------------------------------------------


def run_fuzz(count: int, seconds: float, seed: int, batch: int = 200) -> int:
    """Fuzz a running AS and RS; print the figures; return the number of failed properties."""
    rng = random.Random(seed)
    failures = 0
    with contextlib.ExitStack() as stack:
        fleet = stack.enter_context(running_fleet())
        rs, as_ = fleet.servers[0:2][::-1]
        context = fleet.client_context("client-1")
        targets = [
            (rs, fleet.rs_port, rs_seeds(fleet)),
            (as_, fleet.as_port, as_seeds(fleet, context)),
        ]
        stats = {"rs": FuzzStats(), "as": FuzzStats()}
        rss_start = {server.name: server.rss_kib() for server, _, _ in targets}
        rss_peak = dict(rss_start)
        started = time.monotonic()
        while sum(s.sent for s in stats.values()) < count and time.monotonic() - started < seconds:
            for server, port, seeds in targets:
                datagrams = fuzz_batch(rng, seeds, batch)
                stats[server.name].judge(datagrams, exchange(port, datagrams))
                rss_peak[server.name] = max(rss_peak[server.name], server.rss_kib())
        elapsed = time.monotonic() - started
        for server, _, _ in targets:
            s = stats[server.name]
            print(f"{server.name}: {s.summary()}; RSS {rss_start[server.name]} -> "
                  f"peak {rss_peak[server.name]} KiB")  # fmt: skip
            for problem in s.problems[:10]:
                print(f"  {problem}")
            failures += len(s.problems)
            if not server.alive():
                print(f"{server.name}: the process died")
                failures += 1
            for line in log_problems(server.log_text())[:10]:
                print(f"{server.name} log: {line}")
                failures += 1
        try:
            asyncio.run(asyncio.wait_for(legitimate_flow(fleet), 30))
            print("a legitimate client completed its flow afterwards")
        except Exception as exc:  # any failure of the flow is a finding
            print(f"the legitimate flow failed afterwards: {exc!r}")
            failures += 1
        total = sum(s.sent for s in stats.values())
        print(
            f"{total} inputs in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.0f}/s), seed {seed}"
        )
    return failures


async def load(fleet: Fleet, clients: int, requests: int) -> tuple[int, float]:
    """``clients`` concurrent clients, each its own token and ``requests`` OSCORE GETs."""
    errors = 0

    async def one(index: int) -> int:
        client = await aiocoap.Context.create_client_context()
        bad = 0
        try:
            mat = material()
            await establish(client, fleet, fleet.mint(mat), mat, index.to_bytes(3, "big"))
            for _ in range(requests):
                request = aiocoap.Message(code=aiocoap.GET, uri=f"{fleet.rs_base}/temp")
                try:
                    response = await asyncio.wait_for(client.request(request).response, 30)
                    bad += int(int(response.code) != _CONTENT)
                except (TimeoutError, aiocoap.error.Error):
                    bad += 1
        finally:
            await client.shutdown()
        return bad

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(clients)))
    errors = sum(results)
    return errors, time.monotonic() - started


def run_soak(clients: int, requests: int, kills: int, seconds: float) -> int:
    """The load test, then SIGKILLs of the RS during a stream of requests."""
    failures = 0
    deadline = time.monotonic() + seconds
    with running_fleet(capacity=max(1000, clients + 10)) as fleet:
        rs = fleet.servers[1]
        errors, elapsed = asyncio.run(load(fleet, clients, requests))
        total = clients * requests
        print(f"load: {clients} clients x {requests} requests, {errors} errors, "
              f"{total / elapsed:.0f} requests/s, RS RSS {rs.rss_kib()} KiB")  # fmt: skip
        failures += int(errors != 0)
        contexts = [establish_raw(fleet, bytes([0x70 + i]))[0] for i in range(4)]
        mid = 1000
        seen: set[tuple[bytes, bytes]] = set()
        survived = 0
        for kill in range(kills):
            if time.monotonic() > deadline:
                break
            for _ in range(5):
                for index, context in enumerate(contexts):
                    mid += 1
                    if not get_with_recovery(fleet, context, mid):
                        print(f"kill {kill}: client {index} did not recover")
                        failures += 1
            for context in contexts:
                for piv in context.response_pivs:
                    if (context.recipient_id, piv) in seen:
                        print(f"response Partial IV {piv.hex()} repeated")
                        failures += 1
                    seen.add((context.recipient_id, piv))
                context.response_pivs.clear()
            rs.kill()
            rs.start(lambda: _answers(fleet.rs_port))
            survived += 1
        print(f"soak: {survived} SIGKILLs survived, {len(seen)} distinct response Partial IVs")
        failures += sum(1 for _ in log_problems(rs.log_text()))
    return failures


def get_with_recovery(fleet: Fleet, context: RecordingContext, mid: int) -> bool:
    """One OSCORE GET; after a restart the RS answers with Echo, which is sent back once."""
    plain = aiocoap.Message(code=aiocoap.GET, uri_path=["temp"])
    for attempt in range(3):
        datagram, request_id = protect_with_id(context, plain, mid * 4 + attempt)
        reply = probe(fleet.rs_port, datagram, timeout=3)
        if reply is None:
            continue
        message = aiocoap.Message.decode(reply)
        if message.opt.oscore is None:
            return False
        message.direction = Direction.INCOMING
        inner, _ = context.unprotect(message, request_id)
        if int(inner.code) == _CONTENT:
            return True
        if inner.opt.echo is not None:
            plain = aiocoap.Message(code=aiocoap.GET, uri_path=["temp"], echo=inner.opt.echo)
    return False


def run_codec(count: int, seconds: float, seed: int) -> int:
    """Differential runs of the codec (tests/helpers/codec_diff.py) in batches of 10,000
    inputs, each batch from its own seed, until ``count`` inputs or ``seconds`` have passed."""
    from tests.helpers import codec_diff  # the reference codec loads only for this mode

    deadline = time.monotonic() + seconds
    done = cases = failures = 0
    batch = 0
    while done < count and time.monotonic() < deadline:
        size = min(10_000, count - done)
        report = codec_diff.run(size, seed + batch)
        done, cases, batch = done + size, cases + report.cases, batch + 1
        failures += len(report.mismatches)
        for line in report.mismatches[:3]:
            print(f"seed {seed + batch - 1}: {line[:2000]}")
        print(f"{done} inputs, {cases} comparisons, {failures} mismatches", flush=True)
    print(f"codec: seed {seed}, {done} inputs, {cases} comparisons, {failures} mismatches")
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.helpers.soak", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    fuzz = sub.add_parser("fuzz", help="fuzz a running AS and RS with CoAP datagrams")
    fuzz.add_argument("--count", type=int, default=200_000, help="datagrams in all")
    fuzz.add_argument("--seconds", type=float, default=1800.0, help="stop after this long")
    fuzz.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    codec = sub.add_parser("codec", help="the codec against its 0.1.0 reference, in process")
    codec.add_argument("--count", type=int, default=1_000_000, help="decoder inputs in all")
    codec.add_argument("--seconds", type=float, default=1800.0, help="stop after this long")
    codec.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    soak = sub.add_parser("soak", help="load, then SIGKILLs of the RS under traffic")
    soak.add_argument("--clients", type=int, default=200)
    soak.add_argument("--requests", type=int, default=50, help="OSCORE requests per client")
    soak.add_argument("--kills", type=int, default=20, help="SIGKILLs of the RS")
    soak.add_argument("--seconds", type=float, default=1800.0, help="stop after this long")
    args = parser.parse_args(argv)
    if args.mode == "fuzz":
        seed = args.seed if args.seed is not None else random.randrange(1 << 32)
        failures = run_fuzz(args.count, args.seconds, seed)
    elif args.mode == "codec":
        seed = args.seed if args.seed is not None else random.randrange(1 << 32)
        failures = run_codec(args.count, args.seconds, seed)
    else:
        failures = run_soak(args.clients, args.requests, args.kills, args.seconds)
    print("OK" if failures == 0 else f"FAILED: {failures} problem(s)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
