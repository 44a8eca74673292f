"""Protocol numbers, one module per IANA registry.

Each module's docstring names the registry it mirrors. Values are
``IntEnum`` members; a value that is not registered stays a plain ``int``
(see :func:`lookup`), so nothing an attacker sends creates new members.
"""

from enum import IntEnum
from typing import TypeVar

E = TypeVar("E", bound=IntEnum)


def lookup(enum: type[E], value: int) -> E | int:
    """Return the member of ``enum`` for ``value``, or ``value`` itself if unregistered."""
    try:
        return enum(value)
    except ValueError:
        return value


__all__ = ["lookup"]
