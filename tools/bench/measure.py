"""The measuring side of ``keybound bench``: figures, groups and the timer.

A :class:`Figure` is one number with the baseline it is read against, both
taken in the same run. A :class:`Group` declares the stable names of its
figures up front and a ``run`` function that measures them; a group that is
not measured yet carries the reason instead (``pending``).

Timed figures are measured in *paired rounds* (:meth:`Timer.compare`,
:func:`compare_rates`): after a warm-up of both, each round times a batch of
the figure's work and a batch of its baseline's, one right after the other
(the order alternating from round to round), so that a change of load hits
both sides of a round alike. Work done in this thread is timed on its CPU
clock (:func:`time.thread_time_ns`); loopback exchanges, where client and
servers share the process, on the process's CPU clock
(:func:`time.process_time_ns`). The figure's ``ratio`` is the median of the
same-round ratios, ``ratio_min`` and ``ratio_max`` their spread; ``value`` and
``baseline`` are the medians of the two sides. The load average at the end of
each figure and the share of wall time the measured thread got the CPU are
recorded with it, and :func:`busy_reason` says when they, or a wide spread,
make the figure meaningless.
"""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from time import perf_counter_ns
from typing import Any

#: Time budget per timed function (or per pair of figure and baseline), in seconds.
QUICK_BUDGET = 0.2
FULL_BUDGET = 1.5
#: Warm-up: this share of the budget, and at least this many calls.
WARMUP_SHARE = 0.15
MIN_WARMUP_CALLS = 3
#: Samples per timed function: at least ``MIN_SAMPLES``, aiming at ``TARGET_SAMPLES``.
MIN_SAMPLES = 5
TARGET_SAMPLES = 25
#: Paired rounds per figure and baseline, quick and full.
QUICK_ROUNDS = 7
FULL_ROUNDS = 21
#: A sample (one batch of calls) lasts at least this long, for the clock's sake.
MIN_SAMPLE_NS = 200_000

MICROSECONDS = "µs"
MILLISECONDS = "ms"
BYTES = "bytes"
#: Rates: for these units a ratio below 1 means slower than the baseline.
TOKENS_PER_SECOND = "tokens/s"
REQUESTS_PER_SECOND = "requests/s"
#: Loopback throughput: warm-up requests, and a cap on the requests of one figure.
WARMUP_REQUESTS = 20
MAX_REQUESTS = 20_000

#: The clock a figure was taken on.
THREAD_CPU = "thread_cpu"
PROCESS_CPU = "process_cpu"
WALL = "wall"
EXACT = "exact"
CLOCKS = (THREAD_CPU, PROCESS_CPU, WALL, EXACT)

#: A figure is marked busy when its thread got the CPU for less than this share
#: of the wall time, when the same-round ratios spread wider than this share of
#: their median (between the quartiles), or when the load average exceeds the CPUs.
MIN_CPU_SHARE = 0.85
MAX_RELATIVE_SPREAD = 0.25


def load_average() -> tuple[float, float, float] | None:
    """``os.getloadavg()``, or None where the system does not report one."""
    try:
        return os.getloadavg()
    except OSError:
        return None


@dataclass(frozen=True)
class Measurement:
    """A median with its range, in the unit of the figure it feeds."""

    median: float
    low: float
    high: float

    @classmethod
    def exact(cls, value: float) -> Measurement:
        """A count, not a timing: median, minimum and maximum are the same."""
        return cls(value, value, value)

    @classmethod
    def of_samples(cls, samples: list[float]) -> Measurement:
        return cls(statistics.median(samples), min(samples), max(samples))

    def per_second(self) -> Measurement:
        """This time per operation (µs) as operations per second; the range turns over."""
        return Measurement(1e6 / self.median, 1e6 / self.high, 1e6 / self.low)

    def scaled(self, factor: float) -> Measurement:
        return Measurement(self.median * factor, self.low * factor, self.high * factor)


@dataclass(frozen=True)
class Paired:
    """A figure's work and its baseline's, timed in the same rounds.

    ``candidate`` and ``baseline`` are per-round values (µs per call, or a rate);
    ``ratios`` are the same-round ratios candidate / baseline; ``cpu_share`` is
    the CPU time of the measured clock over the wall time of the rounds.
    """

    candidate: Measurement
    baseline: Measurement
    ratios: tuple[float, ...]
    clock: str
    cpu_share: float | None
    #: the one-minute load average right after the rounds
    load: float | None = None
    #: the work waits for the disk (fsync), so CPU time falls short of wall time by design
    waits: bool = False

    @property
    def ratio(self) -> Measurement:
        return Measurement.of_samples(list(self.ratios))

    def per_second(self) -> Paired:
        """Times per call (µs) as rates: the values and the ratios turn over."""
        return Paired(
            self.candidate.per_second(),
            self.baseline.per_second(),
            tuple(1 / r for r in self.ratios),
            self.clock,
            self.cpu_share,
            self.load,
            self.waits,
        )

    def scaled(self, factor: float) -> Paired:
        """Both sides divided by the same count (``per`` operations in one call)."""
        return replace(
            self, candidate=self.candidate.scaled(factor), baseline=self.baseline.scaled(factor)
        )


def quartile_spread(samples: tuple[float, ...]) -> float:
    """(third quartile - first quartile) / median of ``samples``; 0 for fewer than 4."""
    if len(samples) < 4:
        return 0.0
    q1, _q2, q3 = statistics.quantiles(samples, n=4)
    return (q3 - q1) / statistics.median(samples)


@dataclass(frozen=True)
class Figure:
    """One benchmark figure and its baseline from the same run.

    ``ratio`` is the median of the same-round ratios ``value / baseline``
    (exactly ``value / baseline`` for counts and for figures timed apart): above
    1 the figure costs more than its baseline (more time, more bytes); for a
    rate (``tokens/s``, ``requests/s``) it is the other way round, below 1 is
    slower. ``ratio_min`` and ``ratio_max`` are the extremes of the rounds,
    ``rounds`` their number, ``clock`` what was timed (:data:`CLOCKS`). ``load``
    is the one-minute load average when the figure was done, ``cpu_share`` the
    share of wall time the measured clock advanced (``waits``: the work waits
    for the disk, so a low share is no sign of a busy machine), and ``busy`` a
    reason why the figure should not be trusted, or None.
    """

    name: str
    value: float
    unit: str
    baseline: float
    baseline_name: str
    min: float
    max: float
    ratio: float = 0.0
    ratio_min: float = 0.0
    ratio_max: float = 0.0
    rounds: int = 1
    clock: str = WALL
    spread: float = 0.0
    load: float | None = None
    cpu_share: float | None = None
    waits: bool = False
    busy: str | None = None

    def __post_init__(self) -> None:
        if self.value <= 0 or self.baseline <= 0:
            raise ValueError(f"{self.name}: a figure and its baseline must be positive")
        if self.clock not in CLOCKS:
            raise ValueError(f"{self.name}: unknown clock {self.clock!r}")
        if self.ratio == 0.0:
            ratio = self.value / self.baseline
            object.__setattr__(self, "ratio", ratio)
            object.__setattr__(self, "ratio_min", ratio)
            object.__setattr__(self, "ratio_max", ratio)

    @classmethod
    def of(
        cls,
        name: str,
        measured: Measurement,
        unit: str,
        baseline: Measurement,
        baseline_name: str,
        *,
        clock: str = WALL,
    ) -> Figure:
        """A figure and a baseline measured apart: the ratio is value / baseline."""
        if measured.median <= 0 or baseline.median <= 0:
            raise ValueError(f"{name}: a figure and its baseline must be positive")
        return cls(
            name=name,
            value=measured.median,
            unit=unit,
            baseline=baseline.median,
            baseline_name=baseline_name,
            min=measured.low,
            max=measured.high,
            clock=clock,
        )

    @classmethod
    def paired(cls, name: str, pair: Paired, unit: str, baseline_name: str) -> Figure:
        """A figure from paired rounds: the ratio is the median same-round ratio."""
        if pair.candidate.median <= 0 or pair.baseline.median <= 0:
            raise ValueError(f"{name}: a figure and its baseline must be positive")
        ratio = pair.ratio
        return cls(
            name=name,
            value=pair.candidate.median,
            unit=unit,
            baseline=pair.baseline.median,
            baseline_name=baseline_name,
            min=pair.candidate.low,
            max=pair.candidate.high,
            ratio=ratio.median,
            ratio_min=ratio.low,
            ratio_max=ratio.high,
            rounds=len(pair.ratios),
            clock=pair.clock,
            spread=quartile_spread(pair.ratios),
            load=pair.load,
            cpu_share=pair.cpu_share,
            waits=pair.waits,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "ratio_min": self.ratio_min,
            "ratio_max": self.ratio_max,
            "rounds": self.rounds,
            "clock": self.clock,
            "min": self.min,
            "max": self.max,
            "load": self.load,
            "cpu_share": self.cpu_share,
            "waits": self.waits,
            "busy": self.busy,
        }


def busy_reason(figure: Figure, cpu_count: int) -> str | None:
    """Why ``figure`` should not be trusted on this machine, or None.

    A load average above the number of CPUs means threads waited for a CPU;
    a thread that got the CPU for less than :data:`MIN_CPU_SHARE` of the wall
    time was preempted (its CPU time is then inflated by cold caches); and
    same-round ratios that spread wider than :data:`MAX_RELATIVE_SPREAD`
    between their quartiles do not settle on one value.
    """
    if figure.clock == EXACT:
        return None
    reasons = []
    if figure.load is not None and figure.load > cpu_count:
        reasons.append(f"load average {figure.load:.2f} on {cpu_count} CPUs")
    if (
        figure.clock == THREAD_CPU
        and not figure.waits
        and figure.cpu_share is not None
        and figure.cpu_share < MIN_CPU_SHARE
    ):
        reasons.append(f"its thread had the CPU {figure.cpu_share:.0%} of the time")
    if figure.spread > MAX_RELATIVE_SPREAD:
        reasons.append(f"same-round ratios spread {figure.spread:.0%} between quartiles")
    return "; ".join(reasons) or None


def with_conditions(figure: Figure, cpu_count: int) -> Figure:
    """``figure`` with the current load average and its :func:`busy_reason`."""
    load = figure.load
    if load is None and figure.clock != EXACT:
        now = load_average()
        load = None if now is None else now[0]
    noted = replace(figure, load=load)
    return replace(noted, busy=busy_reason(noted, cpu_count))


@dataclass(frozen=True)
class Skipped:
    """A figure that could not be measured on this machine, and why."""

    name: str
    reason: str


@dataclass
class Runner:
    """What a group's ``run`` gets: the timer, a place to note progress and skips, and
    the PostgreSQL server given for the figures that need one."""

    timer: Timer
    quick: bool
    on_step: Callable[[str], None] = lambda _name: None
    skipped: list[Skipped] = field(default_factory=list)
    #: the PostgreSQL server for the figures that need one (``keybound bench --postgres``)
    postgres: str | None = None

    def time(self, name: str, fn: Callable[[], object], *, per: int = 1) -> Measurement:
        """Time ``fn`` alone on this thread's CPU clock: µs per call, or per ``per``-th of one.

        ``per`` is for functions that loop over ``per`` operations themselves, so
        that operations far below a microsecond are not drowned by the call.
        """
        self.on_step(name)
        m = self.timer.measure(fn)
        return Measurement(m.median / per, m.low / per, m.high / per)

    def compare(
        self,
        name: str,
        fn: Callable[[], object],
        baseline: Callable[[], object],
        *,
        per: int = 1,
        max_calls: int | None = None,
        reset: tuple[Callable[[], object] | None, Callable[[], object] | None] = (None, None),
        waits: bool = False,
    ) -> Paired:
        """Time ``fn`` against ``baseline`` in paired rounds (µs per call, thread CPU).

        ``per`` divides both sides (functions that loop ``per`` times themselves);
        ``max_calls`` caps the calls of each side, for work that consumes a
        prepared pool (distinct tokens); ``reset`` puts a side's state back after
        each of its batches, untimed (see :meth:`Timer.compare`); ``waits`` says
        that the work waits for the disk.
        """
        self.on_step(name)
        pair = self.timer.compare(fn, baseline, max_calls=max_calls, reset=reset)
        pair = replace(pair.scaled(1 / per), waits=waits)
        return _loaded(pair)

    async def compare_rates(
        self,
        name: str,
        op: Callable[[], Awaitable[object]],
        baseline: Callable[[], Awaitable[object]],
        *,
        concurrency: int = 1,
        waits: bool = False,
    ) -> Paired:
        """Operations per CPU second of ``op`` against ``baseline``, in paired rounds."""
        self.on_step(name)
        pair = await compare_rates(
            op, baseline, self.timer.budget_ns, rounds=self.timer.rounds, concurrency=concurrency
        )
        return _loaded(replace(pair, waits=waits))

    async def rate(
        self, name: str, op: Callable[[], Awaitable[object]], *, concurrency: int = 1
    ) -> Measurement:
        """Operations per second of the coroutine function ``op``, ``concurrency`` in flight."""
        self.on_step(name)
        return await throughput(op, self.timer.budget_ns, concurrency=concurrency)

    def skip(self, name: str, reason: str) -> None:
        self.on_step(name)
        self.skipped.append(Skipped(name, reason))


def _loaded(pair: Paired) -> Paired:
    load = load_average()
    return pair if load is None else replace(pair, load=load[0])


@dataclass(frozen=True)
class Group:
    """A group of figures, selected with ``keybound bench --only NAME``.

    ``figures`` are the stable names ``run`` returns (or skips), in report order;
    ``steps`` is how many progress steps ``run`` takes (timed functions), for the
    progress bar. A group without ``run`` is listed with its ``pending`` reason.
    """

    name: str
    title: str
    figures: tuple[str, ...]
    run: Callable[[Runner], list[Figure]] | None = None
    steps: int = 0
    pending: str | None = None

    def __post_init__(self) -> None:
        if (self.run is None) == (self.pending is None):
            raise ValueError(f"group {self.name}: give either run or a pending reason")
        for figure in self.figures:
            if not figure.startswith(f"{self.name}."):
                raise ValueError(f"figure {figure} must be named {self.name}.*")


class Timer:
    """Times functions on this thread's CPU clock, with gc off and after a warm-up.

    :meth:`measure` times one function (median µs per call over batches);
    :meth:`compare` times a function against its baseline in paired rounds.
    """

    def __init__(self, budget: float, *, rounds: int = FULL_ROUNDS) -> None:
        if budget <= 0:
            raise ValueError("the time budget must be positive")
        if rounds < 1:
            raise ValueError("at least one round")
        self.budget_ns = int(budget * 1e9)
        self.rounds = rounds

    def measure(self, fn: Callable[[], object]) -> Measurement:
        with _gc_off():
            per_call, _calls = _warm_up(fn, self.budget_ns * WARMUP_SHARE)
            batch = max(1, int(max(MIN_SAMPLE_NS, self.budget_ns / TARGET_SAMPLES) / per_call))
            samples = max(
                MIN_SAMPLES, min(TARGET_SAMPLES, int(self.budget_ns / (batch * per_call)))
            )
            per_call_ns = [_batch(fn, batch)[0] / batch for _ in range(samples)]
        return Measurement.of_samples([ns / 1000 for ns in per_call_ns])

    def compare(
        self,
        fn: Callable[[], object],
        baseline: Callable[[], object],
        *,
        max_calls: int | None = None,
        reset: tuple[Callable[[], object] | None, Callable[[], object] | None] = (None, None),
    ) -> Paired:
        """``fn`` and ``baseline`` in :attr:`rounds` paired rounds, µs per call each.

        Both are warmed up, then each round times one batch of each, the order
        turning round by round; each batch is sized to fill its share of the
        budget. The same-round ratios are of the two per-call times. Neither side
        is called more than ``max_calls`` times in all (warm-up included), and
        ``reset`` (for ``fn``, for ``baseline``) runs untimed after each of that
        side's batches, to put its state back.
        """
        rounds = self.rounds
        sides = (fn, baseline)
        share = self.budget_ns / (2 * rounds)
        limit = max_calls if max_calls is not None else 1 << 62
        if limit < MIN_WARMUP_CALLS + rounds:
            raise ValueError(f"max_calls must allow the warm-up and {rounds} rounds")
        with _gc_off():
            batches = []
            for side in (0, 1):
                cost, warm_calls = _warm_up(
                    sides[side], self.budget_ns * WARMUP_SHARE / 2, (limit - rounds) // 2
                )
                _call(reset[side])
                wanted = int(max(MIN_SAMPLE_NS, share) / cost)
                batches.append(max(1, min(wanted, (limit - warm_calls) // rounds)))
            times: tuple[list[float], list[float]] = ([], [])
            cpu = wall = 0
            for r in range(rounds):
                for side in (0, 1) if r % 2 == 0 else (1, 0):
                    spent, elapsed = _batch(sides[side], batches[side])
                    _call(reset[side])
                    times[side].append(spent / batches[side] / 1000)
                    cpu += spent
                    wall += elapsed
        ratios = tuple(a / b for a, b in zip(times[0], times[1], strict=True))
        return Paired(
            Measurement.of_samples(times[0]),
            Measurement.of_samples(times[1]),
            ratios,
            THREAD_CPU,
            cpu / wall if wall else None,
        )


def _call(fn: Callable[[], object] | None) -> None:
    if fn is not None:
        fn()


class _gc_off:  # noqa: N801 - used as a context manager, named like one
    def __enter__(self) -> None:
        gc.collect()
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *_exc: object) -> None:
        if self.was_enabled:
            gc.enable()


def _batch(fn: Callable[[], object], calls: int) -> tuple[int, int]:
    """(thread CPU ns, wall ns) of ``calls`` calls of ``fn``."""
    wall = perf_counter_ns()
    start = time.thread_time_ns()
    for _ in range(calls):
        fn()
    return max(time.thread_time_ns() - start, 1), perf_counter_ns() - wall


def _warm_up(
    fn: Callable[[], object], budget_ns: float, max_calls: int = 1 << 62
) -> tuple[float, int]:
    """Run ``fn`` for ``budget_ns`` of CPU time (at most ``max_calls`` calls).

    Returns its estimated CPU cost per call (ns) and the calls made.
    """
    calls = 0
    start = time.thread_time_ns()
    elapsed = 0
    while calls < MIN_WARMUP_CALLS or (elapsed < budget_ns and calls < max_calls):
        fn()
        calls += 1
        elapsed = time.thread_time_ns() - start
    return max(elapsed / calls, 1.0), calls


async def compare_rates(
    op: Callable[[], Awaitable[object]],
    baseline: Callable[[], Awaitable[object]],
    budget_ns: int,
    *,
    rounds: int,
    concurrency: int = 1,
    max_requests: int = MAX_REQUESTS,
) -> Paired:
    """Operations per second of process CPU time, ``op`` against ``baseline``, paired.

    Each side runs :data:`WARMUP_REQUESTS` calls first; then each round runs a
    batch of each (the order turning round by round), spread over
    ``concurrency`` workers, and gives each side one rate: calls over the CPU
    time the process (client, servers and their threads) spent. No side makes
    more than ``max_requests`` calls.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    sides = (op, baseline)

    async def batch(side: int, count: int) -> tuple[int, int]:
        shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        call = sides[side]

        async def worker(calls: int) -> None:
            for _ in range(calls):
                await call()

        wall = perf_counter_ns()
        start = time.process_time_ns()
        await asyncio.gather(*(worker(calls) for calls in shares if calls))
        return max(time.process_time_ns() - start, 1), perf_counter_ns() - wall

    warm = max(WARMUP_REQUESTS, concurrency)
    sizes = []
    for side in (0, 1):
        per_call = (await batch(side, warm))[0] / warm
        wanted = int(budget_ns / 2 / per_call / rounds)
        sizes.append(max(concurrency, min(wanted, (max_requests - warm) // rounds)))
    rates: tuple[list[float], list[float]] = ([], [])
    cpu = wall = 0
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            spent, elapsed = await batch(side, sizes[side])
            rates[side].append(sizes[side] * 1e9 / spent)
            cpu += spent
            wall += elapsed
    return Paired(
        Measurement.of_samples(rates[0]),
        Measurement.of_samples(rates[1]),
        tuple(a / b for a, b in zip(rates[0], rates[1], strict=True)),
        PROCESS_CPU,
        cpu / wall if wall else None,
    )


async def throughput(
    op: Callable[[], Awaitable[object]],
    budget_ns: int,
    *,
    concurrency: int = 1,
    max_requests: int = MAX_REQUESTS,
) -> Measurement:
    """Rate of ``op`` (per second of wall time): ``concurrency`` workers, ``budget_ns`` filled.

    After :data:`WARMUP_REQUESTS` calls, each sample runs a batch of calls
    spread over the workers and gives one rate; the figure is the median
    rate, the range that of the samples. No more than ``max_requests`` calls
    are made, however fast ``op`` is.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")

    async def batch(count: int) -> float:
        shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]

        async def worker(calls: int) -> None:
            for _ in range(calls):
                await op()

        start = perf_counter_ns()
        await asyncio.gather(*(worker(calls) for calls in shares if calls))
        return max(perf_counter_ns() - start, 1)

    warm = max(WARMUP_REQUESTS, concurrency)
    per_call = await batch(warm) / warm
    samples = MIN_SAMPLES
    wanted = int(budget_ns / per_call / samples)
    size = max(concurrency, min(wanted, (max_requests - warm) // samples))
    rates = [size * 1e9 / await batch(size) for _ in range(samples)]
    return Measurement.of_samples(rates)


def size_figure(name: str, data: bytes | str, baseline: bytes | str, baseline_name: str) -> Figure:
    """A size figure: exact byte counts of ``data`` against ``baseline``."""
    return Figure.of(
        name,
        Measurement.exact(float(_length(data))),
        BYTES,
        Measurement.exact(float(_length(baseline))),
        baseline_name,
        clock=EXACT,
    )


def _length(data: bytes | str) -> int:
    return len(data.encode("ascii")) if isinstance(data, str) else len(data)


__all__ = [
    "BYTES",
    "CLOCKS",
    "EXACT",
    "FULL_BUDGET",
    "FULL_ROUNDS",
    "MAX_REQUESTS",
    "MICROSECONDS",
    "MILLISECONDS",
    "PROCESS_CPU",
    "QUICK_BUDGET",
    "QUICK_ROUNDS",
    "REQUESTS_PER_SECOND",
    "THREAD_CPU",
    "TOKENS_PER_SECOND",
    "WALL",
    "WARMUP_REQUESTS",
    "Figure",
    "Group",
    "Measurement",
    "Paired",
    "Runner",
    "Skipped",
    "Timer",
    "busy_reason",
    "compare_rates",
    "load_average",
    "quartile_spread",
    "size_figure",
    "throughput",
    "with_conditions",
]
