"""The sequence number store over power cuts (RFC 8613 Appendix B.1.1), on the real
MicroPython unix port and its own file systems.

``mp_powercut.py`` formats a RAM block device with ``VfsFat`` or ``VfsLfs2``, uses
sequence numbers through ``oscore.SequenceStore`` and cuts the power at every
block write (and littlefs erase) in turn: the device refuses write k + 1 and all
later ones, the blocks are mounted again, and the next boot must resume above
every number used before. The same harness runs the earlier store (one file
replaced through ``.tmp`` and a rename) as a control: on FAT, where a rename over
a file is a remove and a rename, it restarts at 0.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keybound.tools.device.flash import compile_firmware
from tests.helpers.firmware import MICROPYTHON, MP_TESTS, MPY_CROSS, passed_lines, run_on_port
from tests.helpers.require import require

pytestmark = pytest.mark.micropython
require(MICROPYTHON.exists(), f"the MicroPython unix port is not installed ({MICROPYTHON})")
require(MPY_CROSS.exists(), f"mpy-cross is not installed ({MPY_CROSS})")

#: Numbers used per boot (chunk 4: 40 records, so littlefs compacts its metadata too).
USES = "160"


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("board")
    compile_firmware(out, mpy_cross=str(MPY_CROSS))
    return out


def _summary(lines: list[str]) -> dict[str, str]:
    line = next(line for line in lines if line.startswith("SUMMARY"))
    return dict(word.split("=") for word in line.split()[1:])


def test_the_port_has_both_file_systems(board: Path) -> None:
    proc = run_on_port([board], "mp_powercut.py", "probe")
    assert "VfsFat VfsLfs2" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("cut", ["whole", "torn"])
@pytest.mark.parametrize("fs", ["fat", "lfs2"])
def test_no_number_repeats_over_a_power_cut_at_every_write(board: Path, fs: str, cut: str) -> None:
    """A cut between two block writes, or inside one (half of its bytes land)."""
    proc = run_on_port(
        [board, MP_TESTS], "mp_powercut.py", fs, "two-slot", USES, cut, heap="4M", timeout=300
    )
    lines = passed_lines(proc, 3)
    summary = _summary(lines)
    print(f"\n{fs}, {cut} cut: {summary}")
    assert int(summary["points"]) > 40, summary  # every record write was cut somewhere
    assert summary["reused"] == "0", [line for line in lines if line.startswith("CUT")]
    assert summary["refused"] == "0"


def test_the_harness_catches_the_rename_store_on_fat(board: Path) -> None:
    """The control: the earlier store reuses numbers on FAT, and holds on littlefs."""
    fat = _summary(
        passed_lines(
            run_on_port([board, MP_TESTS], "mp_powercut.py", "fat", "rename", USES, heap="4M"), 1
        )
    )
    lfs = _summary(
        passed_lines(
            run_on_port([board, MP_TESTS], "mp_powercut.py", "lfs2", "rename", USES, heap="4M"), 1
        )
    )
    print(f"\nrename store: FAT {fat}; littlefs {lfs}")
    assert int(fat["reused"]) > 0, fat
    assert lfs["reused"] == "0", lfs


def _start(board: Path, state: Path) -> tuple[int, str]:
    proc = run_on_port([board, MP_TESTS], "mp_seqno.py", str(state), "1", "4", "0")
    assert proc.returncode == 0, proc.stderr
    start = re.search(r"START (\d+)", proc.stdout)
    fp = re.search(r"FP (\w+)", proc.stdout)
    assert start, proc.stdout
    assert fp, proc.stdout
    return int(start.group(1)), fp.group(1)


def test_a_file_of_the_earlier_format_is_read(board: Path, tmp_path: Path) -> None:
    """An upgraded board keeps its numbers: "<fingerprint> <limit>" at the path, or left
    in ``.tmp`` by a FAT rename the power cut stopped half-way."""
    _, fp = _start(board, tmp_path / "probe.seq")
    (tmp_path / "a.seq").write_text(f"{fp} 96\n")
    assert _start(board, tmp_path / "a.seq")[0] == 96
    (tmp_path / "b.seq.tmp").write_text(f"{fp} 160\n")  # the rename's remove happened
    assert _start(board, tmp_path / "b.seq")[0] == 160
    # the next record goes to the other slot; the earlier file stays readable until then
    assert (tmp_path / "b.seq.1").exists()


def test_two_damaged_slots_stop_the_store(board: Path, tmp_path: Path) -> None:
    (tmp_path / "c.seq").write_text("3 00 12 ffffffff\n")
    (tmp_path / "c.seq.1").write_text("garbage\n")
    (tmp_path / "c.seq.tmp").write_text("00 12\n")  # an old, low limit must not win then
    proc = run_on_port([board, MP_TESTS], "mp_seqno.py", str(tmp_path / "c.seq"), "1", "4", "0")
    assert proc.returncode != 0
    assert "corrupt sequence number files" in proc.stdout + proc.stderr, proc.stdout
