"""``keybound bench`` group ``as_pg``: two AS processes on one PostgreSQL against one.

An operator whose AS runs out of CPU starts a second ``keybound as serve`` on the
same database. ``as_pg.coap_token_rps_2_processes`` is how many tokens per second
two such processes issue together, against ``as_pg.coap_token_rps_1_process``: one
of them alone, under the same offered load, in paired rounds of one run.

The path is the one devices use and an operator would scale: POST ``/token`` over
CoAP+OSCORE (RFC 9200 §5.8, RFC 9203 §3.1), each request from its own provisioned
client-AS context, for an RS with a clock. Each token the AS issues goes through
the real database: the durable token record (group commit), the
configuration-version reads behind the record cache, the OSCORE sequence rows of
each context as it is first derived. ``as_pg.coap_token_rps_2_processes_no_clock``
is the same (same processes, rounds of their own after those) for an RS without a
clock, against ``as_pg.coap_token_rps_1_process_no_clock``: each token also takes
the audience's next ``exi`` sequence number (RFC 9200 §5.10.3), one committed
``UPDATE`` of one row that both processes share.

The AS processes are real ``keybound as serve --coap 127.0.0.1:PORT --db URL``
children of this process, started on free ports, read once they print their ready
line, and stopped (SIGTERM, by their id) at the end. Both run through every round;
in a 1-process round the second gets no requests.

The load generator is :data:`IN_FLIGHT` workers in this process's event loop,
each keeping one request outstanding (at most :data:`IN_FLIGHT` in all, each
waited for at most :data:`RESPONSE_TIMEOUT` seconds): in a 2-process round half
of them send to each process, in a 1-process round all to the first. It builds
the OSCORE messages with aiocoap's security contexts and sends them as
non-confirmable CoAP, each worker on a UDP socket of its own, without aiocoap's
request machinery, so that it costs a small part of what the AS spends per token:
``as_pg.load_generator_cpu_per_token`` is this process's CPU time per token in the
2-process rounds against ``as_pg.as_cpu_per_token``, the two AS processes' CPU
time per token (from ``/proc``) in the same rounds; its ``cpu_share`` is the load
generator's share of one CPU.

``as_pg.as_cpus_2_processes`` is the CPU time the two AS processes got together
per second of wall time in the 2-process rounds, against
``as_pg.as_cpus_1_process``, the one process's in the 1-process rounds: when the
token rate grows by the same ratio as the CPU the processes got, the processes do
not wait for each other (row locks, commits); they wait for a CPU.

``as_pg.machine_cpus_2_processes`` is how many CPUs of the whole machine were busy
(``/proc/stat``: the AS processes, PostgreSQL's backends, the load generator, the
kernel, and anything else running) per second of wall time in the 2-process rounds,
against ``as_pg.machine_cpus_1_process`` in the 1-process rounds. Next to the
machine's CPU count it says whether the second process found idle CPUs: when the
2-process rounds keep every CPU busy, the token rate cannot grow further whatever
the AS does, short of less CPU per token. On a machine running other work the
figure counts that work too.

Rates are per second of wall time (the figure is about using more CPUs, which a
CPU clock cannot show). Each round runs a batch of each side, the order turning
round by round; the ratio is the median of the same-round ratios. The recorded
load average is the one-minute value *before* the rounds start: the figure's own
processes keep about two CPUs busy by design, so the load average after them
would always exceed this machine's CPUs and say nothing about other work.

Where the PostgreSQL server comes from, in this order:

1. ``keybound bench --postgres URL`` or the environment variable
   :data:`PG_URL_VARIABLE` (``postgresql+psycopg://user@host:port/db``);
2. else a throwaway cluster: ``initdb`` and ``pg_ctl`` from ``PATH``, else the
   newest ``/usr/lib/postgresql/*/bin``, in a temporary directory, listening on
   a free port of 127.0.0.1 only, stopped and removed at the end. initdb refuses
   to run as root: then the cluster is run as the ``postgres`` user (through
   ``runuser``) when there is one.

On a given server the figures work in a schema of their own, dropped at the end.
When no server can be had, the figures are skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiocoap
import cbor2
from aiocoap.message import Direction
from aiocoap.oscore import RequestIdentifiers
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from keybound.coap.oscore_contexts import DurableSecurityContext
from keybound.core.numbers.ace_parameters import AceParameter
from keybound.tools.authz_server.provision import add_clients, add_resource_server, init_issuer
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bench.authz_server import (
    AS_SCOPE,
    NO_CLOCK_AUDIENCE,
    client_security_context,
)
from keybound.tools.bench.fixtures import AUDIENCE, HOST, ISSUER, free_udp_port
from keybound.tools.bench.measure import (
    MAX_REQUESTS,
    MICROSECONDS,
    PROCESS_CPU,
    TOKENS_PER_SECOND,
    WALL,
    Figure,
    Group,
    Measurement,
    Paired,
    Runner,
    Skipped,
    load_average,
)
from keybound.tools.server_ready import READY_PREFIX

RATE = "as_pg.coap_token_rps_2_processes"
RATE_BASELINE = "as_pg.coap_token_rps_1_process"
NO_CLOCK = "as_pg.coap_token_rps_2_processes_no_clock"
NO_CLOCK_BASELINE = "as_pg.coap_token_rps_1_process_no_clock"
CPUS = "as_pg.as_cpus_2_processes"
CPUS_BASELINE = "as_pg.as_cpus_1_process"
LOAD = "as_pg.load_generator_cpu_per_token"
LOAD_BASELINE = "as_pg.as_cpu_per_token"
MACHINE = "as_pg.machine_cpus_2_processes"
MACHINE_BASELINE = "as_pg.machine_cpus_1_process"
FIGURES = (RATE, NO_CLOCK, CPUS, LOAD, MACHINE)
#: The unit of ``as_pg.as_cpus_*``: CPU seconds of the AS processes per second of wall time.
CPUS_UNIT = "CPUs"
#: ``keybound bench --postgres URL`` reads its default from this variable.
PG_URL_VARIABLE = "KEYBOUND_BENCH_PG_URL"
#: Where PostgreSQL's server binaries are looked for after ``PATH`` (Debian's layout).
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: AS processes of the candidate side (the baseline is the first of them alone).
PROCESSES = 2
#: Requests outstanding at once, on both sides: the load is bounded by this. Enough that
#: one process is saturated (its CPU, not the requests' round trips, bounds its rate):
#: with 16, one process's rounds kept 0.93 CPUs of it busy and 1.2 of the machine's two,
#: and two processes split the same 16 requests, so the figure came out near 1.0 by
#: construction (a closed loop's rate is its requests in flight over their latency).
IN_FLIGHT = 64
#: Seconds one token request may take before the figure fails.
RESPONSE_TIMEOUT = 10.0
#: Seconds for an AS process to print its ready line, or for PostgreSQL to start.
START_TIMEOUT = 60.0
#: Wall time of one side's batch in one round (full run, ``--quick``).
FULL_BATCH_S = 1.0
QUICK_BATCH_S = 0.25
#: Requests per worker before the rounds (each context derived, the caches filled).
WARMUP_PER_WORKER = 4
ACE_CBOR = 19


class Unavailable(Exception):
    """No PostgreSQL server can be had: the figures are skipped with this reason."""


# ---- where the server comes from ---------------------------------------------------------


def find_pg_bin(path: str | None = None, pattern: str = PG_BIN_GLOB) -> Path | None:
    """The directory with ``initdb`` and ``pg_ctl``: from ``path`` (default ``PATH``),
    else the newest match of ``pattern``; None when there is none."""
    initdb = shutil.which("initdb", path=path)
    if initdb is not None:
        where = Path(initdb).resolve().parent
        if (where / "pg_ctl").exists():
            return where
    candidates = [Path(d) for d in glob.glob(pattern)]
    candidates = [d for d in candidates if (d / "initdb").exists() and (d / "pg_ctl").exists()]
    if not candidates:
        return None
    return max(candidates, key=lambda d: [int(n) for n in re.findall(r"\d+", str(d))])


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as_postgres_user() -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a user initdb accepts."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable(
            "initdb refuses to run as root and there is no postgres user to run it as; "
            f"give --postgres URL or {PG_URL_VARIABLE}"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise Unavailable(
            "initdb refuses to run as root and runuser is missing; "
            f"give --postgres URL or {PG_URL_VARIABLE}"
        )
    return [runuser, "-u", "postgres", "--"]


def _pg_tool(prefix: Sequence[str], tool: Path, *args: str) -> None:
    """Run one of PostgreSQL's tools; a failure is :class:`Unavailable` with its last line."""
    done = subprocess.run(  # noqa: S603 - PostgreSQL's own tools on our own directory
        [*prefix, str(tool), *args],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
        raise Unavailable(f"{tool.name} failed: {' '.join(last)}")


@contextlib.contextmanager
def throwaway_cluster(bin_dir: Path) -> Iterator[str]:
    """A PostgreSQL cluster of ``bin_dir`` in a temporary directory, on a free port of
    127.0.0.1; yields its URL, then stops it and removes the directory."""
    prefix = _run_as_postgres_user()
    tmp = Path(tempfile.mkdtemp(prefix="keybound-bench-pg-"))
    data = tmp / "data"
    pg_ctl = bin_dir / "pg_ctl"
    made = False
    try:
        if prefix:
            shutil.chown(tmp, user="postgres")
        _pg_tool(
            prefix, bin_dir / "initdb", "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        made = True
        port = _free_tcp_port()
        options = f"-p {port} -k {tmp} -c listen_addresses={HOST}"
        log = str(tmp / "log")
        timeout = str(int(START_TIMEOUT))
        _pg_tool(
            prefix, pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "-t", timeout, "start"
        )
        yield f"postgresql+psycopg://postgres@{HOST}:{port}/postgres"
    finally:
        if made:  # also after a failed start: a server may be up all the same
            subprocess.run(  # noqa: S603 - pg_ctl on the cluster made here
                [*prefix, str(pg_ctl), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=START_TIMEOUT,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def bench_schema(base_url: str) -> Iterator[str]:
    """A URL whose connections work in a new schema of the server ``base_url`` names;
    the schema is dropped on exit. A server that cannot be reached is :class:`Unavailable`."""
    url = make_url(base_url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if not url.drivername.startswith("postgresql"):
        raise Unavailable(f"{url.drivername} is not PostgreSQL")
    schema = f"keybound_bench_{secrets.token_hex(6)}"
    try:
        admin = create_engine(url, pool_pre_ping=True)
    except ImportError as err:  # the driver is an extra
        raise Unavailable(f"{err.name or err}: pip install keybound[postgres]") from None
    try:
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        except SQLAlchemyError as err:
            cause = err.orig if isinstance(err, DBAPIError) else err
            lines = str(cause).strip().splitlines() or [type(cause).__name__]
            where = url.render_as_string(hide_password=True)
            raise Unavailable(f"PostgreSQL at {where}: {lines[0]}") from None
        try:
            scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
            yield scoped.render_as_string(hide_password=False)
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        admin.dispose()


@contextlib.contextmanager
def postgres_server(
    given: str | None, *, path: str | None = None, pattern: str = PG_BIN_GLOB
) -> Iterator[str]:
    """The server's URL: ``given``, else a throwaway cluster (see the module's text) of
    the binaries :func:`find_pg_bin` finds on ``path`` or by ``pattern``."""
    if given:
        yield given
        return
    bin_dir = find_pg_bin(path, pattern)
    if bin_dir is None:
        raise Unavailable(
            f"no PostgreSQL: give --postgres URL or {PG_URL_VARIABLE}, or install the server "
            f"(initdb and pg_ctl on PATH or in {PG_BIN_GLOB})"
        )
    with throwaway_cluster(bin_dir) as url:
        yield url


# ---- the AS processes -------------------------------------------------------------------


def keybound_argv() -> list[str]:
    """``keybound`` next to this interpreter, else its entry point run by this interpreter."""
    script = Path(sys.executable).parent / "keybound"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from keybound.tools.cli.app import main; main()"]


@dataclass
class AsProcess:
    process: asyncio.subprocess.Process
    port: int
    errors: Path

    def cpu_seconds(self) -> float | None:
        """User and system CPU time of the process and its threads so far (``/proc``)."""
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


async def start_as(url: str, where: Path, index: int) -> AsProcess:
    """``keybound as serve`` on a free CoAP port of 127.0.0.1, once it says it is ready."""
    port = free_udp_port()
    errors = where / f"as-{index}.stderr"
    with errors.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *keybound_argv(),
            "as",
            "serve",
            "--coap",
            f"{HOST}:{port}",
            "--db",
            url,
            "--state-dir",
            str(where / f"state-{index}"),
            "--log-level",
            "warning",
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            stdin=asyncio.subprocess.DEVNULL,
        )
    running = AsProcess(process, port, errors)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT)
    except TimeoutError:
        line = b""
    if not line.decode(errors="replace").startswith(READY_PREFIX):
        await stop_as(running)
        tail = errors.read_text(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"keybound as serve did not start: {' '.join(tail) or line!r}")
    return running


async def stop_as(running: AsProcess) -> None:
    """SIGTERM to the process started here, by its id; SIGKILL if it does not end."""
    process = running.process
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), START_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()


# ---- the load generator ------------------------------------------------------------------


class _Responses(asyncio.DatagramProtocol):
    """Hands each datagram to the request waiting for its CoAP token."""

    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[aiocoap.Message]] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        try:
            message = aiocoap.Message.decode(data)
        except ValueError:
            return
        future = self.waiting.pop(message.token, None)
        if future is not None and not future.done():
            future.set_result(message)


class Sender:
    """One worker of the load generator: token requests over OSCORE on a UDP socket of
    its own, so that its Message IDs (one per request) are its own too and never come
    round within the run (a peer drops a repeated Message ID as a duplicate for
    EXCHANGE_LIFETIME, RFC 7252 §4.5): a worker sends at most ``MAX_REQUESTS /
    IN_FLIGHT`` (312) requests per side and audience, about 1,250 in a run, of
    65,536 IDs."""

    def __init__(self, transport: asyncio.DatagramTransport, responses: _Responses) -> None:
        self.transport = transport
        self.responses = responses
        self._mid = secrets.randbelow(0x10000)

    @classmethod
    async def open(cls) -> Sender:
        loop = asyncio.get_running_loop()
        transport, responses = await loop.create_datagram_endpoint(_Responses, local_addr=(HOST, 0))
        return cls(transport, responses)

    def close(self) -> None:
        self.transport.close()

    async def token(self, context: DurableSecurityContext, port: int, body: bytes) -> None:
        """One POST /token with ``body``; raises unless the AS answers 2.01."""
        request = aiocoap.Message(
            code=aiocoap.POST, uri_path=("token",), payload=body, content_format=ACE_CBOR
        )
        request.direction = Direction.OUTGOING
        protected, request_id = context.protect(request)
        assert isinstance(request_id, RequestIdentifiers)
        self._mid = (self._mid + 1) & 0xFFFF
        protected.mtype = aiocoap.NON
        protected.mid = self._mid
        protected.token = secrets.token_bytes(8)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[aiocoap.Message] = loop.create_future()
        self.responses.waiting[protected.token] = future
        # a timer, not asyncio.wait_for: no task per request in the load generator
        timer = loop.call_later(RESPONSE_TIMEOUT, _expire, future)
        self.transport.sendto(protected.encode(), (HOST, port))
        try:
            answer = await future
        finally:
            timer.cancel()
            self.responses.waiting.pop(protected.token, None)
        answer.direction = Direction.INCOMING
        response, _ = context.unprotect(answer, request_id)
        if response.code != aiocoap.CREATED:
            raise RuntimeError(f"/token answered {response.code}: {response.payload!r}")


def _expire(future: asyncio.Future[aiocoap.Message]) -> None:
    if not future.done():
        future.set_exception(TimeoutError(f"no answer to /token in {RESPONSE_TIMEOUT} s"))


@dataclass(frozen=True)
class _Batch:
    tokens: int
    wall: float
    client_cpu: float
    as_cpu: float | None
    #: busy CPU seconds of the whole machine (``/proc/stat``) during the batch
    machine_cpu: float | None


@dataclass(frozen=True)
class Route:
    """Where one worker sends: its socket, the client context it uses, the AS's port."""

    sender: Sender
    context: DurableSecurityContext
    port: int


def _body(audience: str) -> bytes:
    return cbor2.dumps({AceParameter.AUDIENCE.value: audience, AceParameter.SCOPE.value: AS_SCOPE})


async def _batch(
    routes: Sequence[Route], body: bytes, per_worker: int, servers: Sequence[AsProcess]
) -> _Batch:
    """``per_worker`` requests with ``body`` along each route, all routes at once."""

    async def worker(route: Route) -> None:
        for _ in range(per_worker):
            await route.sender.token(route.context, route.port, body)

    as_before, machine_before = _cpu_seconds(servers), machine_busy_seconds()
    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(route) for route in routes))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    as_after, machine_after = _cpu_seconds(servers), machine_busy_seconds()
    as_cpu = None if as_before is None or as_after is None else as_after - as_before
    machine_cpu = (
        None if machine_before is None or machine_after is None else machine_after - machine_before
    )
    return _Batch(per_worker * len(routes), wall, cpu, as_cpu, machine_cpu)


def machine_busy_seconds(stat: Path = Path("/proc/stat")) -> float | None:
    """Busy CPU seconds of the whole machine since boot, all CPUs together: every
    state of the first line of ``/proc/stat`` but idle and iowait (guest time is
    already in user time), or None where it cannot be read."""
    try:
        first = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not first or first[0] != "cpu" or len(first) < 9:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _cpu_seconds(servers: Sequence[AsProcess]) -> float | None:
    """The AS processes' CPU time together, or None where one cannot be read."""
    total = 0.0
    for server in servers:
        seconds = server.cpu_seconds()
        if seconds is None:
            return None
        total += seconds
    return total


@dataclass(frozen=True)
class Rounds:
    """Per-round values of both sides."""

    two: list[_Batch]
    one: list[_Batch]
    load: float | None


async def _paired(
    sides: tuple[Sequence[Route], Sequence[Route]],
    audience: str,
    servers: Sequence[AsProcess],
    *,
    rounds: int,
    batch_s: float,
) -> Rounds:
    """Tokens for ``audience``: a warm-up, then ``rounds`` paired rounds of the two sides,
    the order turning round by round."""
    body = _body(audience)
    # every context of both sides derived, records cached, before anything is timed
    for routes in sides:
        await _batch(routes, body, WARMUP_PER_WORKER, servers)
    sizes = []
    for routes in sides:
        probe = await _batch(routes, body, WARMUP_PER_WORKER, servers)
        wanted = int(batch_s * probe.tokens / probe.wall / len(routes))
        cap = MAX_REQUESTS // (rounds * len(routes))
        sizes.append(max(1, min(wanted, cap)))
    before = load_average()
    batches: tuple[list[_Batch], list[_Batch]] = ([], [])
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            batches[side].append(await _batch(sides[side], body, sizes[side], servers))
    return Rounds(batches[0], batches[1], None if before is None else before[0])


async def measure(url: str, where: Path, *, rounds: int, batch_s: float) -> tuple[Rounds, Rounds]:
    """Provision the AS in ``url``, start the processes, run the paired rounds: tokens
    for the RS with a clock, then for the RS without one."""
    store = SqlAuthzStore.init(url)
    try:
        init_issuer(store, ISSUER)
        add_resource_server(store, "bench-rs", AUDIENCE, [AS_SCOPE], has_clock=True)
        add_resource_server(
            store, "bench-rs-no-clock", NO_CLOCK_AUDIENCE, [AS_SCOPE], has_clock=False
        )
        # one client per worker and process: a context only ever meets one process
        ids = [f"bench-client-{i}" for i in range(IN_FLIGHT * PROCESSES)]
        grants = {AUDIENCE: [AS_SCOPE], NO_CLOCK_AUDIENCE: [AS_SCOPE]}
        made = add_clients(store, ids, grants)
    finally:
        store.close()
    contexts = []
    for client in made:
        assert client.oscore is not None
        contexts.append(client_security_context(client.oscore))
    servers: list[AsProcess] = []
    senders: list[Sender] = []
    try:
        for index in range(PROCESSES):
            servers.append(await start_as(url, where, index))
        for _ in range(IN_FLIGHT):
            senders.append(await Sender.open())

        def context(worker: int, process: int) -> DurableSecurityContext:
            return contexts[worker * PROCESSES + process]

        two = [
            Route(senders[w], context(w, w % PROCESSES), servers[w % PROCESSES].port)
            for w in range(IN_FLIGHT)
        ]
        one = [Route(senders[w], context(w, 0), servers[0].port) for w in range(IN_FLIGHT)]
        measured = [
            await _paired((two, one), audience, servers, rounds=rounds, batch_s=batch_s)
            for audience in (AUDIENCE, NO_CLOCK_AUDIENCE)
        ]
        return measured[0], measured[1]
    finally:
        for server in servers:
            await stop_as(server)
        for sender in senders:
            sender.close()


def _cpus(batch: _Batch) -> float:
    """CPU seconds of the AS processes per second of wall time in ``batch``."""
    assert batch.as_cpu is not None
    return batch.as_cpu / batch.wall


def _same_rounds(
    candidate: list[float],
    baseline: list[float],
    clock: str,
    cpu_share: float | None,
    load: float | None,
) -> Paired:
    """Per-round values of both sides as a paired figure: the same-round ratios."""
    return Paired(
        Measurement.of_samples(candidate),
        Measurement.of_samples(baseline),
        tuple(a / b for a, b in zip(candidate, baseline, strict=True)),
        clock,
        cpu_share,
        load,
    )


def _rates(measured: Rounds) -> Paired:
    """Tokens per second of wall time, 2 processes against 1, same rounds."""
    return _same_rounds(
        [b.tokens / b.wall for b in measured.two],
        [b.tokens / b.wall for b in measured.one],
        WALL,
        None,
        measured.load,
    )


def _figures(measured: Rounds, no_clock: Rounds, runner: Runner) -> list[Figure]:
    two, one = measured.two, measured.one
    figures = [
        Figure.paired(RATE, _rates(measured), TOKENS_PER_SECOND, RATE_BASELINE),
        Figure.paired(NO_CLOCK, _rates(no_clock), TOKENS_PER_SECOND, NO_CLOCK_BASELINE),
    ]
    if any(b.as_cpu is None or b.as_cpu <= 0 for b in (*two, *one)):
        for name in (CPUS, LOAD, MACHINE):
            runner.skip(name, "the AS processes' CPU time cannot be read (no /proc)")
        return figures
    used = [_cpus(b) for b in two]
    cpus = _same_rounds(
        used, [_cpus(b) for b in one], PROCESS_CPU, statistics.median(used), measured.load
    )
    figures.append(Figure.paired(CPUS, cpus, CPUS_UNIT, CPUS_BASELINE))
    load = _same_rounds(
        [b.client_cpu / b.tokens * 1e6 for b in two],
        [_cpus(b) * b.wall / b.tokens * 1e6 for b in two],
        PROCESS_CPU,
        sum(b.client_cpu for b in two) / sum(b.wall for b in two),
        measured.load,
    )
    figures.append(Figure.paired(LOAD, load, MICROSECONDS, LOAD_BASELINE))
    busy = {
        side: [b.machine_cpu / b.wall for b in batches if b.machine_cpu]
        for side, batches in (("two", two), ("one", one))
    }
    if len(busy["two"]) != len(two) or len(busy["one"]) != len(one):
        runner.skip(MACHINE, "the machine's CPU time cannot be read (no /proc/stat)")
        return figures
    machine = _same_rounds(
        busy["two"], busy["one"], PROCESS_CPU, statistics.median(busy["two"]), measured.load
    )
    figures.append(Figure.paired(MACHINE, machine, CPUS_UNIT, MACHINE_BASELINE))
    return figures


def run(runner: Runner) -> list[Figure]:
    runner.on_step(RATE)  # one step: both rates come from the same processes
    batch_s = QUICK_BATCH_S if runner.quick else FULL_BATCH_S
    try:
        with (
            postgres_server(runner.postgres) as server,
            bench_schema(server) as url,
            tempfile.TemporaryDirectory(prefix="keybound-bench-") as tmp,
        ):
            measured, no_clock = asyncio.run(
                measure(url, Path(tmp), rounds=runner.timer.rounds, batch_s=batch_s)
            )
    except Unavailable as why:
        for name in FIGURES:
            runner.skipped.append(Skipped(name, f"not measured: {why}"))
        return []
    return _figures(measured, no_clock, runner)


GROUP = Group(
    name="as_pg",
    title="two AS processes on one PostgreSQL against one: tokens per second over CoAP+OSCORE",
    figures=FIGURES,
    run=run,
    steps=1,
)

__all__ = [
    "FIGURES",
    "GROUP",
    "IN_FLIGHT",
    "PG_BIN_GLOB",
    "PG_URL_VARIABLE",
    "PROCESSES",
    "AsProcess",
    "Rounds",
    "Route",
    "Sender",
    "Unavailable",
    "bench_schema",
    "find_pg_bin",
    "keybound_argv",
    "machine_busy_seconds",
    "measure",
    "postgres_server",
    "run",
    "start_as",
    "stop_as",
    "throwaway_cluster",
]
