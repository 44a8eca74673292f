"""The measuring side of ``keybound bench``: figures, groups and the timer.

A :class:`Figure` is one number with the baseline it is read against, both
taken in the same run. A :class:`Group` declares the stable names of its
figures up front and a ``run`` function that measures them; a group that is
not measured yet carries the reason instead (``pending``).

:class:`Timer` times a function the same way for every figure: garbage
collection off, a warm-up, then samples of a batch of calls each, the batch
sized so that one sample lasts long enough for ``perf_counter_ns`` to be
precise and the samples together fill the time budget. The figure is the
median time per call; the fastest and slowest samples are its range.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

#: Time budget per timed function, in seconds.
QUICK_BUDGET = 0.2
FULL_BUDGET = 1.5
#: Warm-up: this share of the budget, and at least this many calls.
WARMUP_SHARE = 0.15
MIN_WARMUP_CALLS = 3
#: Samples per timed function: at least ``MIN_SAMPLES``, aiming at ``TARGET_SAMPLES``.
MIN_SAMPLES = 5
TARGET_SAMPLES = 25
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


@dataclass(frozen=True)
class Figure:
    """One benchmark figure and its baseline from the same run.

    ``ratio`` is ``value / baseline``: above 1 the figure costs more than its
    baseline (more time, more bytes); for a rate (``tokens/s``, ``requests/s``)
    it is the other way round, below 1 is slower.
    """

    name: str
    value: float
    unit: str
    baseline: float
    baseline_name: str
    min: float
    max: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline

    @classmethod
    def of(
        cls, name: str, measured: Measurement, unit: str, baseline: Measurement, baseline_name: str
    ) -> Figure:
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
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "min": self.min,
            "max": self.max,
        }


@dataclass(frozen=True)
class Skipped:
    """A figure that could not be measured on this machine, and why."""

    name: str
    reason: str


@dataclass
class Runner:
    """What a group's ``run`` gets: the timer, and a place to note progress and skips."""

    timer: Timer
    quick: bool
    on_step: Callable[[str], None] = lambda _name: None
    skipped: list[Skipped] = field(default_factory=list)

    def time(self, name: str, fn: Callable[[], object], *, per: int = 1) -> Measurement:
        """Time ``fn`` and report progress under ``name``: µs per call, or per ``per``-th of one.

        ``per`` is for functions that loop over ``per`` operations themselves, so
        that operations far below a microsecond are not drowned by the call.
        """
        self.on_step(name)
        m = self.timer.measure(fn)
        return Measurement(m.median / per, m.low / per, m.high / per)

    async def rate(
        self, name: str, op: Callable[[], Awaitable[object]], *, concurrency: int = 1
    ) -> Measurement:
        """Operations per second of the coroutine function ``op``, ``concurrency`` in flight."""
        self.on_step(name)
        return await throughput(op, self.timer.budget_ns, concurrency=concurrency)

    def skip(self, name: str, reason: str) -> None:
        self.on_step(name)
        self.skipped.append(Skipped(name, reason))


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
    """Times a function: gc off, warm-up, batches of calls, median per call in µs."""

    def __init__(self, budget: float) -> None:
        if budget <= 0:
            raise ValueError("the time budget must be positive")
        self.budget_ns = int(budget * 1e9)

    def measure(self, fn: Callable[[], object]) -> Measurement:
        gc.collect()
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            per_call = self._warm_up(fn)
            batch = max(1, int(max(MIN_SAMPLE_NS, self.budget_ns / TARGET_SAMPLES) / per_call))
            samples = max(
                MIN_SAMPLES, min(TARGET_SAMPLES, int(self.budget_ns / (batch * per_call)))
            )
            per_call_ns: list[float] = []
            for _ in range(samples):
                start = perf_counter_ns()
                for _ in range(batch):
                    fn()
                per_call_ns.append((perf_counter_ns() - start) / batch)
        finally:
            if was_enabled:
                gc.enable()
        return Measurement(
            statistics.median(per_call_ns) / 1000,
            min(per_call_ns) / 1000,
            max(per_call_ns) / 1000,
        )

    def _warm_up(self, fn: Callable[[], object]) -> float:
        """Run ``fn`` for a share of the budget; return its estimated cost per call (ns)."""
        calls = 0
        start = perf_counter_ns()
        elapsed = 0
        while calls < MIN_WARMUP_CALLS or elapsed < self.budget_ns * WARMUP_SHARE:
            fn()
            calls += 1
            elapsed = perf_counter_ns() - start
        return max(elapsed / calls, 1.0)


async def throughput(
    op: Callable[[], Awaitable[object]],
    budget_ns: int,
    *,
    concurrency: int = 1,
    max_requests: int = MAX_REQUESTS,
) -> Measurement:
    """Rate of ``op`` (per second): ``concurrency`` workers, samples that fill ``budget_ns``.

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
    )


def _length(data: bytes | str) -> int:
    return len(data.encode("ascii")) if isinstance(data, str) else len(data)


__all__ = [
    "BYTES",
    "FULL_BUDGET",
    "MAX_REQUESTS",
    "MICROSECONDS",
    "MILLISECONDS",
    "QUICK_BUDGET",
    "REQUESTS_PER_SECOND",
    "TOKENS_PER_SECOND",
    "WARMUP_REQUESTS",
    "Figure",
    "Group",
    "Measurement",
    "Runner",
    "Skipped",
    "Timer",
    "size_figure",
    "throughput",
]
