"""``keybound bench`` group ``startup``: CPU ms until a ``keybound`` command has answered.

Each figure runs the installed command in a fresh interpreter, as a shell does:
``keybound --version``, ``keybound --help`` and ``keybound token inspect`` of a
MAC'd CWT with its key. The baseline is the interpreter alone
(``python -c pass``), so the ratio shows what keybound's imports add. Each
round runs the baseline and the three commands, in an order that turns round
by round; the time is the child's CPU time (user and system, from
``resource.getrusage(RUSAGE_CHILDREN)``), and each figure's ratio the median of
its same-round ratios. Command
groups are imported only when they run (:mod:`keybound.tools.cli.app`), and typer converts
text and path options without pydantic (:mod:`keybound.tools.cli.plain_params`).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from keybound.core import cwt
from keybound.core.keys import Key
from keybound.core.token import AccessToken
from keybound.tools.bench.measure import (
    MILLISECONDS,
    PROCESS_CPU,
    Figure,
    Group,
    Measurement,
    Paired,
    Runner,
    load_average,
)
from keybound.tools.keyfiles import write_key

FIGURES = ("startup.version", "startup.help", "startup.token_inspect")
QUICK_RUNS = 5
FULL_RUNS = 11
BASELINE = "python -c pass"


def _keybound() -> str | None:
    beside = Path(sys.executable).with_name("keybound")
    return str(beside) if beside.exists() else shutil.which("keybound")


def _cpu_ms(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """(CPU ms, wall ms) of one run of ``argv`` as a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(  # noqa: S603 - the keybound command and fixed arguments
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
    )
    wall = (time.perf_counter() - start) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return max(cpu, 1e-3), wall


def _rounds(commands: dict[str, list[str]], runs: int) -> dict[str, tuple[list[float], float]]:
    """Per command: its CPU ms in each round (after one untimed warm round) and CPU/wall."""
    env = {**os.environ, "COLUMNS": "100"}
    names = list(commands)
    samples: dict[str, list[float]] = {name: [] for name in names}
    cpu_total = dict.fromkeys(names, 0.0)
    wall_total = dict.fromkeys(names, 0.0)
    for r in range(runs + 1):  # the first round warms the file cache and is not counted
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            cpu, wall = _cpu_ms(commands[name], env)
            if r:
                samples[name].append(cpu)
                cpu_total[name] += cpu
                wall_total[name] += wall
    return {name: (samples[name], cpu_total[name] / wall_total[name]) for name in names}


def run(runner: Runner) -> list[Figure]:
    command = _keybound()
    if command is None:
        for name in FIGURES:
            runner.skip(name, "the keybound command is not installed")
        return []
    runs = QUICK_RUNS if runner.quick else FULL_RUNS
    key = Key.generate_symmetric(32, random_bytes=os.urandom, kid=b"bench")
    token = cwt.encode(AccessToken(iss="bench", aud=("rs",), exp=2**31), cwt.Mac0(key))
    with tempfile.TemporaryDirectory() as tmp:
        key_path = Path(tmp) / "key.jwk"
        write_key(key_path, key)
        runner.on_step("startup.rounds")
        measured = _rounds(
            {
                BASELINE: [sys.executable, "-c", "pass"],
                "startup.version": [command, "--version"],
                "startup.help": [command, "--help"],
                "startup.token_inspect": [
                    command, "token", "inspect", token.hex(), "--key", str(key_path)
                ],
            },
            runs,
        )  # fmt: skip
    base, base_share = measured[BASELINE]
    load = load_average()
    figures = []
    for name in FIGURES:
        samples, share = measured[name]
        pair = Paired(
            Measurement.of_samples(samples),
            Measurement.of_samples(base),
            tuple(a / b for a, b in zip(samples, base, strict=True)),
            PROCESS_CPU,
            min(share, base_share),
            None if load is None else load[0],
        )
        figures.append(Figure.paired(name, pair, MILLISECONDS, BASELINE))
    return figures


GROUP = Group(
    name="startup",
    title="ms until a keybound command answered, against the bare interpreter",
    figures=FIGURES,
    run=run,
    steps=1,
)

__all__ = ["BASELINE", "FIGURES", "GROUP"]
