"""``keybound rs``: run the CoAP Resource Server (see :mod:`keybound.tools.rs_daemon`)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

from keybound.tools.cli_support import fail
from keybound.tools.rs_daemon import ConfigError, load_config, run

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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    """Serve until SIGTERM or Ctrl-C; state is flushed on every change."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("coap").setLevel(logging.WARNING)
        logging.getLogger("coap-server").setLevel(logging.WARNING)
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:
        asyncio.run(run(loaded))
    except OSError as exc:
        raise fail(f"cannot serve on {loaded.listen[0]}:{loaded.listen[1]}: {exc}") from None
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled by the loop
        pass


if __name__ == "__main__":
    app()
