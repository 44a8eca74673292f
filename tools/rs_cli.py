"""``keybound rs``: run the CoAP Resource Server (see :mod:`keybound.tools.rs_daemon`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from keybound.tools.cli_support import LogLevelOption, describe, exit_code_for, fail, setup_logging
from keybound.tools.rs_daemon import ConfigError, load_config, run
from keybound.tools.server_ready import no_port_sharing

app = typer.Typer(
    help="Run the CoAP Resource Server (ACE OSCORE profile).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def rs_callback() -> None:
    """The CoAP Resource Server: /authz-info and OSCORE-protected resources."""


@app.command("serve")
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


if __name__ == "__main__":
    app()
