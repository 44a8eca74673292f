"""The rich consoles keybound prints with: stdout and stderr, made on first use.

Output that is not a terminal is never wrapped (thumbprints and URLs stay whole).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["console", "err_console"]


def _make_console(stderr: bool) -> Console:
    from rich.console import Console  # noqa: PLC0415 - rich costs import time; load on use

    stream = sys.stderr if stderr else sys.stdout
    # Rich wraps at 80 columns when it cannot ask a terminal: never wrap a pipe or a file.
    width = None if stream.isatty() else 1_000_000
    return Console(stderr=stderr, highlight=False, width=width, soft_wrap=width is not None)


class _LazyConsole:
    """A rich Console made on first use, so that commands that print nothing rich start fast."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def _get(self) -> Console:
        if self._console is None:
            self._console = _make_console(self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def __enter__(self) -> Console:
        return self._get().__enter__()

    def __exit__(self, *exc: object) -> None:
        self._get().__exit__(*exc)


console: Console = _LazyConsole(stderr=False)  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]
