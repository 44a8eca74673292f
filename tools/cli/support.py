"""Shared plumbing for the ``keybound`` commands: consoles (of :mod:`keybound.tools.console`),
logging and clean failures.

Every failure is one line on stderr, ``keybound: <what>: <why>``, and an exit
status: :data:`EXIT_BAD_INPUT` (2) for bad input, configuration or data, and
:data:`EXIT_UNAVAILABLE` (3) when a peer cannot be reached or a port is taken.
Output that is not a terminal is never wrapped (thumbprints and URLs stay whole).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer

from keybound.tools.console import console, err_console

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status for bad input (usage errors, undecodable or unverifiable tokens).
EXIT_BAD_INPUT = 2
#: Exit status when the network or the address is the problem: a peer that does
#: not answer, a port another process holds.
EXIT_UNAVAILABLE = 3

#: The log line format of both servers (AS and RS).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_LEVELS = ("debug", "info", "warning", "error")

LogLevelOption = Annotated[
    str, typer.Option("--log-level", help="debug, info, warning or error", case_sensitive=False)
]


def setup_logging(level: str) -> None:
    """Configure the one log format of the servers; aiocoap's chatter stays at WARNING."""
    import logging  # noqa: PLC0415 - only the servers log: the other commands start faster

    name = level.lower()
    if name not in LOG_LEVELS:
        raise fail(f"--log-level: {level!r} is not one of {', '.join(LOG_LEVELS)}")
    logging.basicConfig(level=name.upper(), format=LOG_FORMAT)
    if name != "debug":
        for noisy in ("coap", "coap-server", "uvicorn", "uvicorn.error"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    line = " ".join(message.split())  # one line, whatever the message held
    print(f"keybound: {line}", file=sys.stderr, flush=True)
    return typer.Exit(code)


def describe(exc: BaseException) -> str:
    """An exception as words for a person: no Python type names, no reprs."""
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror[0].lower() + exc.strerror[1:]
        return f"{exc.filename}: {reason}" if exc.filename else reason
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc).strip()
    if isinstance(exc, ValueError) and "fromhex()" in text:
        return "not a hexadecimal string"
    return text or type(exc).__name__.lower()


def exit_code_for(exc: BaseException) -> int:
    """:data:`EXIT_UNAVAILABLE` for network errors, :data:`EXIT_BAD_INPUT` otherwise."""
    from keybound.tools.server_ready import AddressInUse  # noqa: PLC0415 - small, on error only

    if isinstance(exc, AddressInUse | ConnectionError | TimeoutError):
        return EXIT_UNAVAILABLE
    return EXIT_BAD_INPUT


def clean_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn keybound and OS errors into one stderr line and an exit code, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from keybound.core.errors import KeyboundError  # noqa: PLC0415 - import time

        try:
            return func(*args, **kwargs)
        except (KeyboundError, OSError, ValueError) as exc:
            raise fail(describe(exc), exit_code_for(exc)) from None
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_UNAVAILABLE",
    "LOG_FORMAT",
    "LogLevelOption",
    "clean_errors",
    "console",
    "describe",
    "err_console",
    "exit_code_for",
    "fail",
    "setup_logging",
]
