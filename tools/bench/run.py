"""``keybound bench``: what keybound costs, each figure against a baseline from the same run.

The groups live in their own modules (``bench_size``, ``bench_codec``,
``bench_dpop``, ``bench_httpsig``, ``bench_rs``, ``bench_as``, ``bench_as_pg``, ``bench_oscore``,
``bench_edhoc``, ``bench_trl``, ``bench_firmware``, ``bench_startup``);
:data:`GROUPS` lists them in report order. To add a group, write a module with a
:class:`~keybound.tools.bench.measure.Group` (stable figure names, a ``run``
function) and put it in :data:`GROUPS`, in place of its pending entry if it has one.
The figures and their JSON form are described in :mod:`keybound.tools.bench.measure`.
"""

from __future__ import annotations

import importlib.util
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from keybound.tools.bench import (
    as_postgres as bench_as_pg,
)
from keybound.tools.bench import (
    authz_server as bench_as,
)
from keybound.tools.bench import (
    codec as bench_codec,
)
from keybound.tools.bench import (
    dpop as bench_dpop,
)
from keybound.tools.bench import (
    edhoc as bench_edhoc,
)
from keybound.tools.bench import (
    firmware as bench_firmware,
)
from keybound.tools.bench import (
    http_sig as bench_httpsig,
)
from keybound.tools.bench import (
    oscore as bench_oscore,
)
from keybound.tools.bench import (
    resource_server as bench_rs,
)
from keybound.tools.bench import (
    size as bench_size,
)
from keybound.tools.bench import (
    startup as bench_startup,
)
from keybound.tools.bench import (
    trl as bench_trl,
)
from keybound.tools.bench.measure import (
    FULL_BUDGET,
    FULL_ROUNDS,
    QUICK_BUDGET,
    QUICK_ROUNDS,
    Figure,
    Group,
    Runner,
    Skipped,
    Timer,
    load_average,
    with_conditions,
)

GROUPS: tuple[Group, ...] = (
    bench_size.GROUP,
    bench_codec.GROUP,
    bench_dpop.GROUP,
    bench_httpsig.GROUP,
    bench_rs.GROUP,
    bench_as.GROUP,
    bench_as_pg.GROUP,
    bench_oscore.GROUP,
    bench_edhoc.GROUP,
    bench_trl.GROUP,
    bench_firmware.GROUP,
    bench_startup.GROUP,
)

#: Distributions whose versions go with the figures.
LIBRARIES = (
    "keybound",
    "cbor2",
    "cryptography",
    "joserfc",
    "aiocoap",
    "lakers-python",
    "cwt",
    "pycose",
)


def group_names() -> tuple[str, ...]:
    return tuple(g.name for g in GROUPS)


def select(names: Sequence[str] | None) -> list[Group]:
    """The groups named (all of them for ``None`` or an empty list), in report order."""
    if not names:
        return list(GROUPS)
    unknown = sorted(set(names) - set(group_names()))
    if unknown:
        raise ValueError(
            f"unknown benchmark group {', '.join(unknown)}; choose from {', '.join(group_names())}"
        )
    return [g for g in GROUPS if g.name in names]


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model from ``/proc/cpuinfo`` (x86 ``model name``, Arm ``Model``), else platform's."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for wanted in ("model name", "Model", "Hardware", "cpu model", "Processor"):
        for line in text.splitlines():
            label, _, value = line.partition(":")
            if label.strip() == wanted and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def _library_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Where the figures were taken: interpreter, system, CPU, library versions."""
    from cryptography.hazmat.backends.openssl.backend import backend  # noqa: PLC0415

    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "libraries": {name: _library_version(name) for name in LIBRARIES},
        "openssl": backend.openssl_version_text(),
        "cbor2_c_extension": importlib.util.find_spec("_cbor2") is not None,
    }


@dataclass
class Report:
    """The figures of one run, with the machine and its load average at start and end."""

    machine: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    pending: list[Group] = field(default_factory=list)
    load_start: tuple[float, float, float] | None = None
    load_end: tuple[float, float, float] | None = None

    @property
    def busy(self) -> list[Figure]:
        """The figures measured while the machine was too busy for them to mean much."""
        return [f for f in self.figures if f.busy is not None]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "machine": self.machine,
            "load_average": {
                "start": None if self.load_start is None else list(self.load_start),
                "end": None if self.load_end is None else list(self.load_end),
            },
            "figures": [f.to_json() for f in self.figures],
        }
        if self.skipped:
            out["skipped"] = [{"name": s.name, "reason": s.reason} for s in self.skipped]
        if self.pending:
            out["pending"] = [{"group": g.name, "reason": g.pending} for g in self.pending]
        return out


def run(
    groups: Sequence[Group],
    *,
    quick: bool = False,
    on_step: Callable[[str], None] = lambda _name: None,
    postgres: str | None = None,
) -> Report:
    """Measure ``groups``; every declared figure is measured or skipped with a reason.

    ``postgres`` is the URL of a PostgreSQL server for the figures that need one
    (``as_pg``; without it they start a throwaway cluster, see
    :mod:`keybound.tools.bench.as_postgres`).

    Each figure carries the load average at its end (or its group's) and, when
    the machine was too busy for it, the reason (:func:`~keybound.tools.bench.measure.busy_reason`).
    """
    timer = Timer(
        QUICK_BUDGET if quick else FULL_BUDGET, rounds=QUICK_ROUNDS if quick else FULL_ROUNDS
    )
    runner = Runner(timer, quick, on_step, postgres=postgres)
    report = Report(machine_info(), load_start=load_average())
    cpus = os.cpu_count() or 1
    for group in groups:
        if group.run is None:
            report.pending.append(group)
            continue
        before = len(runner.skipped)
        figures = group.run(runner)
        names = [f.name for f in figures] + [s.name for s in runner.skipped[before:]]
        if sorted(names) != sorted(group.figures):
            raise RuntimeError(f"group {group.name} measured {names}, not {list(group.figures)}")
        order = {name: i for i, name in enumerate(group.figures)}
        noted = [with_conditions(f, cpus) for f in figures]
        report.figures.extend(sorted(noted, key=lambda f: order[f.name]))
    report.skipped = runner.skipped
    report.load_end = load_average()
    return report


def total_steps(groups: Sequence[Group]) -> int:
    return sum(g.steps for g in groups if g.run is not None)


__all__ = [
    "GROUPS",
    "LIBRARIES",
    "Report",
    "cpu_model",
    "group_names",
    "machine_info",
    "run",
    "select",
    "total_steps",
]
