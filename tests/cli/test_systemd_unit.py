"""``keybound rs install-service``: the unit systemd accepts, for this installation."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from keybound.tools.resource_server.systemd_unit import render_unit
from tests.helpers.paths import BIN, ROOT
from tests.helpers.ports import free_udp_port
from tests.helpers.processes import run_keybound
from tests.helpers.require import require

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def systemd_analyze() -> str:
    """The tool, or a skip; with KEYBOUND_REQUIRE_ALL=1 (CI) a missing tool is a failure."""
    require(SYSTEMD_ANALYZE, "systemd-analyze is not installed (apt-get install systemd)")
    assert SYSTEMD_ANALYZE is not None
    return SYSTEMD_ANALYZE


def rs_config(root: Path, *, state: str = "/var/lib/keybound/rs-state.db") -> Path:
    db = f"sqlite:///{root / 'as.db'}"
    for args in (
        ("as", "init", "--db", db, "--issuer", "coap://127.0.0.1:5683"),
        ("as", "rs", "add", "temp-rs", "--db", db, "--audience", "coap://127.0.0.1:5685",
         "--scope", "temp.read", "--out", str(root / "rs-bundle.json")),
    ):  # fmt: skip
        proc = run_keybound(*args, cwd=root)
        assert proc.returncode == 0, proc.stderr
    config = root / "rs.toml"
    config.write_text(
        f'bundle = "rs-bundle.json"\nlisten = "127.0.0.1:{free_udp_port()}"\n'
        f'state = "{state}"\n[resources."/temp"]\nGET = ["temp.read"]\n'
    )
    return config


def test_generated_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    config = rs_config(tmp_path)
    unit = tmp_path / "out" / "keybound-rs.service"
    unit.parent.mkdir()
    proc = run_keybound("rs", "install-service", "--config", str(config), "--output", str(unit))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the state sits in the state directory: no warning
    assert "systemctl daemon-reload && systemctl enable --now keybound-rs" in proc.stdout
    assert sorted(p.name for p in unit.parent.iterdir()) == ["keybound-rs.service"]
    text = unit.read_text()
    assert f"ExecStart={BIN / 'keybound'} rs serve --config {config}\n" in text
    for line in ("Type=notify", "User=keybound", "StateDirectory=keybound", "UMask=0077"):
        assert f"\n{line}\n" in text
    assert "@" not in text
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_systemd_analyze_refuses_a_unit_whose_keybound_is_missing(tmp_path: Path) -> None:
    """The check above can fail: the shipped unit once named a /usr/local/bin/keybound."""
    analyze = systemd_analyze()
    unit = tmp_path / "keybound-rs.service"
    missing = tmp_path / "no-venv" / "bin" / "python"
    unit.write_text(render_unit(tmp_path / "rs.toml", executable=str(missing)))
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode != 0
    assert str(missing) in verify.stdout + verify.stderr


def test_dry_run_prints_the_unit_and_writes_nothing(tmp_path: Path) -> None:
    config = rs_config(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    target = tmp_path / "never.service"
    proc = run_keybound(
        "rs", "install-service", "--config", str(config), "--dry-run", "--output", str(target)
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# systemd unit for the keybound CoAP Resource Server")
    assert f"--config {config}\n" in proc.stdout
    assert sorted(tmp_path.rglob("*")) == before


def test_relative_config_becomes_absolute(tmp_path: Path) -> None:
    rs_config(tmp_path)
    proc = run_keybound("rs", "install-service", "--config", "rs.toml", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"--config {tmp_path / 'rs.toml'}\n" in proc.stdout


def test_state_outside_the_state_directory_is_warned_about(tmp_path: Path) -> None:
    config = rs_config(tmp_path, state="rs-state.db")
    proc = run_keybound("rs", "install-service", "--config", str(config), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert 'set state = "/var/lib/keybound/rs-state.db"' in proc.stderr


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_keybound("rs", "install-service", "--config", str(tmp_path / "none.toml"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("keybound: cannot read")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unwritable_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = rs_config(tmp_path)
    target = tmp_path / "no-such-dir" / "keybound-rs.service"
    proc = run_keybound("rs", "install-service", "--config", str(config), "--output", str(target))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"keybound: cannot write {target}")
    assert not target.parent.exists()


def test_a_virtualenv_under_home_stays_readable() -> None:
    """ProtectHome=true would hide a venv in /home from the service (systemd.exec(5))."""
    home = render_unit(Path("/etc/keybound/rs.toml"), executable="/home/pi/kb/bin/python")
    assert "\nProtectHome=read-only\n" in home
    opt = render_unit(Path("/etc/keybound/rs.toml"), executable="/opt/keybound/bin/python")
    assert "\nProtectHome=true\n" in opt
    assert "ExecStart=/opt/keybound/bin/python -m keybound.tools.cli.app rs serve" in opt


def test_the_wheel_carries_the_unit_template_and_the_license(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("keybound-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "keybound/tools/resource_server/keybound-rs.service" in names
    licenses = [n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n]
    assert licenses, names
    text = zipfile.ZipFile(wheel).read(licenses[0]).decode()
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


def test_rs_serve_help_points_to_the_config_reference() -> None:
    proc = run_keybound("rs", "serve", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "README.md, section 'rs.toml reference'" in proc.stdout
    assert "#### rs.toml reference" in (ROOT / "README.md").read_text()
