"""``keybound rs``: run the CoAP Resource Server.

The daemon itself is :mod:`keybound.tools.resource_server.daemon`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from keybound.tools.cli.support import (
    LogLevelOption,
    console,
    describe,
    err_console,
    exit_code_for,
    fail,
    setup_logging,
)
from keybound.tools.resource_server.daemon import ConfigError, load_config, run
from keybound.tools.resource_server.systemd_unit import (
    DEFAULT_UNIT_PATH,
    STATE_DIRECTORY,
    render_unit,
    state_outside_state_directory,
)
from keybound.tools.server_ready import no_port_sharing

app = typer.Typer(
    help="Run the CoAP Resource Server (ACE OSCORE profile).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def rs_callback() -> None:
    """The CoAP Resource Server: /authz-info and OSCORE-protected resources."""


CONFIG_REFERENCE = (
    "Every rs.toml setting is described in README.md, section 'rs.toml reference' "
    "(also: python -m pydoc keybound.tools.resource_server.daemon)."
)


@app.command("serve", epilog=CONFIG_REFERENCE)
def serve(
    config: Annotated[Path, typer.Option("--config", "-c", help="the rs.toml file")],
    log_level: LogLevelOption = "info",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="--log-level debug")] = False,
) -> None:
    """Serve until SIGTERM or Ctrl-C; state is flushed on every change.

    Once listening, prints ``keybound: ready coap://HOST:PORT`` on stdout and
    notifies systemd (``READY=1``) when ``NOTIFY_SOCKET`` is set.
    """
    setup_logging("debug" if verbose else log_level)
    no_port_sharing()
    try:
        loaded = load_config(config)
        asyncio.run(run(loaded))
    except ConfigError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(describe(exc), exit_code_for(exc)) from None
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled by the loop
        pass


@app.command("install-service", epilog=CONFIG_REFERENCE)
def install_service(
    config: Annotated[Path, typer.Option("--config", "-c", help="the rs.toml the service serves")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="where to write the unit")
    ] = DEFAULT_UNIT_PATH,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the unit instead of writing it")
    ] = False,
) -> None:
    """Write the systemd unit that runs this installation's keybound (Type=notify).

    The unit runs as the system user keybound (create it first: useradd --system
    --home-dir /var/lib/keybound --shell /usr/sbin/nologin keybound) with its state in
    /var/lib/keybound. Nothing but the unit file is written.
    """
    config = config.absolute()
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        unit = render_unit(config)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if state_outside_state_directory(loaded.state):
        err_console.print(
            f"warning: the state file {loaded.state} is outside {STATE_DIRECTORY}, the only "
            f'place the service may write; set state = "{STATE_DIRECTORY}/rs-state.db"',
            markup=False,
            soft_wrap=True,
        )
    if dry_run:
        console.print(unit, end="", markup=False, soft_wrap=True)
        return
    try:
        output.write_text(unit, encoding="utf-8")
        output.chmod(0o644)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror} (--dry-run prints the unit)") from None
    console.print(f"wrote {output}", markup=False, soft_wrap=True)
    if output.name.endswith(".service"):
        console.print(
            f"next: systemctl daemon-reload && systemctl enable --now {output.stem}",
            markup=False,
            soft_wrap=True,
        )


if __name__ == "__main__":
    app()
