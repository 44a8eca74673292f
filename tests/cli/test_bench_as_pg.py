"""``keybound bench --only as_pg``: two AS processes on one PostgreSQL against one.

The group runs as a user runs it (``--quick --json``), on the suite's PostgreSQL
(``KEYBOUND_TEST_PG_URL``, skipped without it) and on a throwaway cluster of its
own; a server that does not answer leaves the figures skipped with the reason.
No timing is asserted, only that the figures are there, positive, against their
baselines, and that nothing is left behind.
"""

from __future__ import annotations

import glob
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from keybound.tools.bench.as_postgres import (
    FIGURES,
    PG_URL_VARIABLE,
    Unavailable,
    find_pg_bin,
    machine_busy_seconds,
    postgres_server,
)
from tests.helpers.pg import pg_base_url
from tests.helpers.require import require

KEYBOUND = Path(sys.executable).parent / "keybound"
RATE, NO_CLOCK, CPUS, LOAD, MACHINE = FIGURES


def _bench(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [str(KEYBOUND), "bench", "--quick", "--json", "--only", "as_pg", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _check_measured(report: dict[str, Any]) -> None:
    assert "skipped" not in report, report.get("skipped")
    figures = {f["name"]: f for f in report["figures"]}
    assert list(figures) == list(FIGURES)
    rate = figures[RATE]
    assert rate["unit"] == "tokens/s"
    assert rate["baseline_name"] == "as_pg.coap_token_rps_1_process"
    assert rate["clock"] == "wall"
    no_clock = figures[NO_CLOCK]
    assert no_clock["unit"] == "tokens/s"
    assert no_clock["baseline_name"] == "as_pg.coap_token_rps_1_process_no_clock"
    assert no_clock["clock"] == "wall"
    cpus = figures[CPUS]
    assert cpus["unit"] == "CPUs"
    assert cpus["baseline_name"] == "as_pg.as_cpus_1_process"
    assert cpus["clock"] == "process_cpu"
    load = figures[LOAD]
    assert load["unit"] == "µs"
    assert load["baseline_name"] == "as_pg.as_cpu_per_token"
    assert load["clock"] == "process_cpu"
    assert load["cpu_share"] > 0
    machine = figures[MACHINE]
    assert machine["unit"] == "CPUs"
    assert machine["baseline_name"] == "as_pg.machine_cpus_1_process"
    assert machine["clock"] == "process_cpu"
    # the whole machine's busy CPUs include the AS processes' own, and no more CPUs than it has
    cpus_here = len(os.sched_getaffinity(0))
    assert cpus["value"] * 0.9 <= machine["value"] <= cpus_here * 1.05
    assert cpus["baseline"] * 0.9 <= machine["baseline"] <= cpus_here * 1.05
    for f in (rate, no_clock, cpus, load, machine):
        assert f["value"] > 0, f["name"]
        assert f["baseline"] > 0, f["name"]
        assert f["min"] <= f["value"] <= f["max"], f["name"]
        # paired rounds: the median of the same-round ratios, with their range
        assert f["rounds"] == 7, f["name"]
        assert f["ratio_min"] <= f["ratio"] <= f["ratio_max"], f["name"]
        assert f["load"] is None or f["load"] >= 0, f["name"]


def _bench_schemas(url: str) -> set[str]:
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT schema_name FROM information_schema.schemata "
                    "WHERE schema_name LIKE 'keybound_bench_%'"
                )
            )
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_two_processes_against_one_on_the_suites_postgresql() -> None:
    url = pg_base_url()
    before = _bench_schemas(url)
    _check_measured(_bench("--postgres", url))
    assert _bench_schemas(url) == before  # its schema is dropped


def test_the_server_can_come_from_the_environment() -> None:
    url = pg_base_url()
    env = {**os.environ, PG_URL_VARIABLE: url}
    _check_measured(_bench(env=env))


def test_a_throwaway_cluster_when_no_server_is_given() -> None:
    require(find_pg_bin() is not None, "PostgreSQL's initdb and pg_ctl are not installed")
    pattern = str(Path(tempfile.gettempdir()) / "keybound-bench-pg-*")
    before = set(glob.glob(pattern))
    env = {k: v for k, v in os.environ.items() if k != PG_URL_VARIABLE}
    _check_measured(_bench(env=env))
    assert set(glob.glob(pattern)) == before  # stopped and removed


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_server_that_does_not_answer_is_reported_not_measured() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_tcp_port()}/nothing"
    report = _bench("--postgres", url)
    assert report["figures"] == []
    skipped = {s["name"]: s["reason"] for s in report["skipped"]}
    assert list(skipped) == list(FIGURES)
    for reason in skipped.values():
        assert reason.startswith("not measured: PostgreSQL at postgresql+psycopg://postgres@")
        assert "nothing" in reason


def test_a_url_that_is_not_postgresql_is_reported_not_measured(tmp_path: Path) -> None:
    report = _bench("--postgres", f"sqlite:///{tmp_path / 'as.db'}")
    assert report["figures"] == []
    reasons = {s["reason"] for s in report["skipped"]}
    assert reasons == {"not measured: sqlite is not PostgreSQL"}


def _tool(where: Path, name: str) -> None:
    where.mkdir(parents=True, exist_ok=True)
    path = where / name
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_initdb_on_the_path_is_found_first(tmp_path: Path) -> None:
    on_path = tmp_path / "path"
    for name in ("initdb", "pg_ctl"):
        _tool(on_path, name)
        _tool(tmp_path / "lib" / "15" / "bin", name)
    found = find_pg_bin(str(on_path), str(tmp_path / "lib" / "*" / "bin"))
    assert found == on_path.resolve()


def test_the_newest_installed_version_is_found_without_initdb_on_the_path(
    tmp_path: Path,
) -> None:
    for version in ("9", "13", "15"):
        for name in ("initdb", "pg_ctl"):
            _tool(tmp_path / "lib" / version / "bin", name)
    _tool(tmp_path / "lib" / "16" / "bin", "initdb")  # no pg_ctl: not a server install
    found = find_pg_bin(str(tmp_path / "empty"), str(tmp_path / "lib" / "*" / "bin"))
    assert found == tmp_path / "lib" / "15" / "bin"


def test_no_postgresql_installed_is_none(tmp_path: Path) -> None:
    assert find_pg_bin(str(tmp_path), str(tmp_path / "lib" / "*" / "bin")) is None


@pytest.mark.parametrize("missing", ["initdb", "pg_ctl"])
def test_half_an_install_on_the_path_is_not_used(tmp_path: Path, missing: str) -> None:
    on_path = tmp_path / "path"
    _tool(on_path, "pg_ctl" if missing == "initdb" else "initdb")
    assert find_pg_bin(str(on_path), str(tmp_path / "lib" / "*" / "bin")) is None


def test_without_a_server_or_binaries_the_reason_names_both_ways(tmp_path: Path) -> None:
    with (
        pytest.raises(Unavailable, match="give --postgres URL or KEYBOUND_BENCH_PG_URL"),
        postgres_server(None, path=str(tmp_path), pattern=str(tmp_path / "*" / "bin")),
    ):
        pytest.fail("no server can be had here")


def test_the_machines_busy_time_leaves_out_idle_and_iowait(tmp_path: Path) -> None:
    stat_file = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat_file.write_text("cpu  100 20 30 5000 400 5 6 7 50 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
    ticks = os.sysconf("SC_CLK_TCK")
    assert machine_busy_seconds(stat_file) == pytest.approx((100 + 20 + 30 + 5 + 6 + 7) / ticks)


def test_the_machines_busy_time_grows_with_work() -> None:
    before = machine_busy_seconds()
    assert before is not None
    deadline = os.times().elapsed + 0.2
    while os.times().elapsed < deadline:
        pass
    after = machine_busy_seconds()
    assert after is not None
    assert after > before


@pytest.mark.parametrize("content", ["", "intr 1 2 3\n", "cpu 1 2 3\n"])
def test_an_unreadable_proc_stat_is_none(tmp_path: Path, content: str) -> None:
    stat_file = tmp_path / "stat"
    stat_file.write_text(content)
    assert machine_busy_seconds(stat_file) is None
    assert machine_busy_seconds(tmp_path / "missing") is None
