"""Shared plumbing for the ``keybound`` commands: consoles and clean failures."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from keybound.core.errors import KeyboundError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")

#: Exit status for bad input (usage errors, undecodable or unverifiable tokens).
EXIT_BAD_INPUT = 2


def fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one line on stderr and return the exit to raise."""
    err_console.print(f"keybound: {message}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def clean_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn keybound and OS errors into one stderr line and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except KeyboundError as exc:
            raise fail(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise fail(f"{type(exc).__name__}: {exc}") from None
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper


__all__ = ["EXIT_BAD_INPUT", "clean_errors", "console", "err_console", "fail"]
