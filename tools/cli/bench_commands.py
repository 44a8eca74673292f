"""``keybound bench``: run the benchmark groups and show the figures (table, JSON or plot)."""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from keybound.tools.bench import run as bench
from keybound.tools.bench.as_postgres import PG_URL_VARIABLE
from keybound.tools.bench.measure import BYTES, MICROSECONDS, Figure
from keybound.tools.cli.support import clean_errors, console, err_console, fail

PLOT_HINT = "pip install keybound[plot]"
TABLE_WIDTH = 132


def _split_groups(only: Sequence[str] | None, extra: Sequence[str] | None) -> list[str]:
    """``--only a b``, ``--only a --only b`` and ``--only a,b`` all name groups a and b."""
    names: list[str] = []
    for value in [*(only or ()), *(extra or ())]:
        names.extend(part for part in value.replace(",", " ").split() if part)
    return names


@contextmanager
def _progress(total: int) -> Iterator[Callable[[str], None]]:
    """Progress on stderr: a bar on a terminal, one line per step otherwise."""
    if not err_console.is_terminal:

        def note(name: str) -> None:
            err_console.print(f"keybound bench: {name}", markup=False, highlight=False)

        yield note
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("bench", total=total)
        started = False

        def step(name: str) -> None:
            nonlocal started
            if started:
                progress.advance(task)
            started = True
            progress.update(task, description=name)

        yield step


def _number(value: float, unit: str) -> str:
    if unit in (BYTES, "bytes/token"):
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _load_text(load: Sequence[float] | None) -> str:
    return "unknown" if load is None else " ".join(f"{value:.2f}" for value in load)


def load_line(report: bench.Report) -> str:
    """The load average at the start and the end of the run, and the busy figures' count."""
    line = (
        f"load average {_load_text(report.load_start)} at the start, "
        f"{_load_text(report.load_end)} at the end ({report.machine['cpu_count']} CPUs)"
    )
    busy = report.busy
    if busy:
        line += f"; {len(busy)} figure(s) marked busy (!): the machine was too busy for them"
    return line


def _ratio_text(figure: Figure) -> str:
    if figure.rounds == 1:
        return f"{figure.ratio:.2f}"
    return f"{figure.ratio:.2f} ({figure.ratio_min:.2f}–{figure.ratio_max:.2f})"


def render_table(report: bench.Report) -> Table:
    m = report.machine
    caption = (
        f"{m['python']} · {m['platform']} · {m['cpu_count']} × {m['cpu_model']} · "
        f"{m['openssl']} · cbor2 {m['libraries'].get('cbor2')}"
        + ("" if m["cbor2_c_extension"] else " (pure Python)")
        + f"\n{load_line(report)}"
        + "\nratio: median of the same-round ratios (their range); clock: what was timed"
    )
    table = Table(title="keybound bench", caption=caption, caption_justify="left")
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right")
    table.add_column("unit")
    table.add_column("min – max", justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("baseline name", no_wrap=True)
    table.add_column("ratio (range)", justify="right", no_wrap=True)
    table.add_column("clock", no_wrap=True)
    table.add_column("", no_wrap=True)
    group = None
    for f in report.figures:
        prefix = f.name.split(".", 1)[0]
        if group is not None and prefix != group:
            table.add_section()
        group = prefix
        spread = "" if f.min == f.max else f"{_number(f.min, f.unit)} – {_number(f.max, f.unit)}"
        table.add_row(
            f.name,
            _number(f.value, f.unit),
            f.unit,
            spread,
            _number(f.baseline, f.unit),
            f.baseline_name,
            _ratio_text(f),
            f.clock,
            "!" if f.busy else "",
        )
    return table


def _check_plotting() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise fail(f"--plot needs matplotlib, which is not installed: {PLOT_HINT}")


def write_plot(report: bench.Report, path: Path) -> None:
    """Sizes (bytes against their baselines) and the ratios of the timed figures."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    sizes = [f for f in report.figures if f.unit == BYTES]
    timed = [f for f in report.figures if f.unit == MICROSECONDS]
    panels = [p for p in (sizes, timed) if p]
    if not panels:
        raise ValueError("no figures to plot")
    fig, axes = pyplot.subplots(
        1, len(panels), figsize=(7 * len(panels), 0.35 * max(map(len, panels)) + 2), squeeze=False
    )
    for ax, figures in zip(axes[0], panels, strict=True):
        names = [f.name for f in figures]
        rows = range(len(figures))
        if figures is sizes:
            ax.barh([r + 0.2 for r in rows], [f.value for f in figures], 0.4, label="figure")
            ax.barh([r - 0.2 for r in rows], [f.baseline for f in figures], 0.4, label="baseline")
            ax.set_xlabel("bytes")
            ax.legend()
        else:
            ax.barh(list(rows), [f.ratio for f in figures])
            ax.axvline(1.0, color="black", linewidth=0.8)
            ax.set_xscale("log")
            ax.set_xlabel("ratio to baseline (log)")
        ax.set_yticks(list(rows), names)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path)
    pyplot.close(fig)


def _md_number(value: float) -> str:
    if value >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown_report(data: dict[str, Any]) -> str:
    """A saved ``--json`` result as the Markdown table the README's Performance section shows."""
    machine = data["machine"]
    libraries = ", ".join(f"{k} {v}" for k, v in sorted(machine.get("libraries", {}).items()))
    lines = [
        f"Measured on {machine['cpu_count']} x {machine['cpu_model']}, {machine['python']}, "
        f"{machine['openssl']}; {libraries}.",
    ]
    load = data.get("load_average")
    if load:
        lines.append(
            f"Load average {_load_text(load.get('start'))} at the start, "
            f"{_load_text(load.get('end'))} at the end."
        )
    lines += [
        "",
        "| figure | value | unit | baseline | baseline is | ratio | range |",
        "|---|---:|---|---:|---|---:|---|",
    ]
    busy = []
    for fig in data["figures"]:
        baseline = fig.get("baseline")
        ratio = fig.get("ratio")
        spread = ""
        if fig.get("rounds", 1) > 1:
            spread = f"{fig['ratio_min']:.2f}–{fig['ratio_max']:.2f}"
        mark = ""
        if fig.get("busy"):
            busy.append(f"`{fig['name']}`: {fig['busy']}")
            mark = " (busy)"
        lines.append(
            f"| `{fig['name']}`{mark} | {_md_number(fig['value'])} | {fig['unit']} | "
            f"{_md_number(baseline) if baseline is not None else ''} | "
            f"{fig.get('baseline_name') or ''} | {f'{ratio:.2f}' if ratio is not None else ''} | "
            f"{spread} |"
        )
    if busy:
        lines += ["", "Measured while the machine was too busy for them to mean much:", ""]
        lines += [f"- {line}" for line in busy]
    return "\n".join(lines) + "\n"


@clean_errors
def bench_command(
    quick: Annotated[
        bool, typer.Option("--quick", help="short time budget: all groups in under a minute")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="print one JSON object: machine and figures")
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="GROUP",
            help=f"measure only these groups: {', '.join(bench.group_names())}",
        ),
    ] = None,
    more: Annotated[
        list[str] | None,
        typer.Argument(metavar="[GROUP]...", help="more groups for --only", show_default=False),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help=f"draw sizes and ratios ({PLOT_HINT})"),
    ] = None,
    postgres: Annotated[
        str | None,
        typer.Option(
            "--postgres",
            metavar="URL",
            envvar=PG_URL_VARIABLE,
            help="PostgreSQL server for the as_pg group (postgresql+psycopg://user@host:port/db; "
            "it works in a schema of its own, dropped at the end); default: a throwaway "
            "cluster from initdb and pg_ctl",
        ),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(
            "--markdown",
            metavar="RESULT.json",
            help="print a saved --json result as a Markdown table (measures nothing)",
        ),
    ] = None,
) -> None:
    """Measure what keybound costs: token sizes, codec, DPoP and RS timings against baselines.

    Every timed figure and its baseline are measured in alternating rounds after a
    warm-up, on CPU time where the work is in process; the ratio is the median of
    the same-round ratios, shown with their range. The load average is recorded,
    and figures measured while the machine was too busy are marked.
    """
    if markdown is not None:
        print(markdown_report(json.loads(markdown.read_text())), end="")
        return
    if plot is not None:
        _check_plotting()
    if more and not only:
        raise fail("groups are named with --only GROUP [GROUP...]")
    groups = bench.select(_split_groups(only, more))
    with _progress(bench.total_steps(groups)) as step:
        report = bench.run(groups, quick=quick, on_step=step, postgres=postgres)
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        # a pipe or file gets the whole table, not 80 columns of it
        out = console if console.is_terminal else Console(width=TABLE_WIDTH, highlight=False)
        out.print(render_table(report))
        for figure in report.busy:
            out.print(f"busy {figure.name}: {figure.busy}", markup=False)
        for skipped in report.skipped:
            out.print(f"skipped {skipped.name}: {skipped.reason}", markup=False)
        for group in report.pending:
            out.print(f"pending group {group.name}: {group.pending}", markup=False)
    if plot is not None:
        write_plot(report, plot)
        err_console.print(f"keybound bench: wrote {plot}", markup=False)


if __name__ == "__main__":
    typer.run(bench_command)


__all__ = [
    "PLOT_HINT",
    "bench_command",
    "load_line",
    "markdown_report",
    "render_table",
    "write_plot",
]
