"""``keybound bench`` group ``startup``: ms until a ``keybound`` command has answered.

Each figure runs the installed command in a fresh interpreter, as a shell does:
``keybound --version``, ``keybound --help`` and ``keybound token inspect`` of a
MAC'd CWT with its key. The baseline is the interpreter alone
(``python -c pass``), so the ratio shows what keybound's imports add. Command
groups are imported only when they run (:mod:`keybound.tools.cli.app`), and typer converts
text and path options without pydantic (:mod:`keybound.tools.cli.plain_params`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from keybound.core import cwt
from keybound.core.keys import Key
from keybound.core.token import AccessToken
from keybound.tools.bench.measure import MILLISECONDS, Figure, Group, Measurement, Runner
from keybound.tools.keyfiles import write_key

FIGURES = ("startup.version", "startup.help", "startup.token_inspect")
QUICK_RUNS = 3
FULL_RUNS = 11


def _keybound() -> str | None:
    beside = Path(sys.executable).with_name("keybound")
    return str(beside) if beside.exists() else shutil.which("keybound")


def _ms(argv: Sequence[str], runs: int) -> Measurement:
    samples: list[float] = []
    env = {**os.environ, "COLUMNS": "100"}
    for _ in range(runs + 1):  # the first run warms the file cache and is not counted
        start = time.perf_counter()
        subprocess.run(  # noqa: S603 - the keybound command and fixed arguments
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False
        )
        samples.append((time.perf_counter() - start) * 1000)
    samples = samples[1:]
    return Measurement(statistics.median(samples), min(samples), max(samples))


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
        runner.on_step("startup.baseline")
        baseline = _ms([sys.executable, "-c", "pass"], runs)
        measured = {}
        for name, args in (
            ("startup.version", ["--version"]),
            ("startup.help", ["--help"]),
            ("startup.token_inspect", ["token", "inspect", token.hex(), "--key", str(key_path)]),
        ):
            runner.on_step(name)
            measured[name] = _ms([command, *args], runs)
    return [
        Figure.of(name, measured[name], MILLISECONDS, baseline, "python -c pass")
        for name in FIGURES
    ]


GROUP = Group(
    name="startup",
    title="ms until a keybound command answered, against the bare interpreter",
    figures=FIGURES,
    run=run,
    steps=4,
)

__all__ = ["FIGURES", "GROUP"]
