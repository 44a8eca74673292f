"""The systemd unit of the Resource Server: ``keybound rs install-service``.

The template ships in the wheel (``keybound-rs.service``, package data). The unit
runs the ``keybound`` of the interpreter that writes it (a virtualenv such as
``/opt/keybound``, because Debian refuses a system-wide pip install, PEP 668) as the
system user ``keybound``, with its state in ``/var/lib/keybound``
(``StateDirectory=``, systemd.exec(5)) and ``Type=notify`` (sd_notify(3)).
"""

from __future__ import annotations

import shlex
import sys
from importlib import resources
from pathlib import Path

#: Where ``install-service`` writes the unit unless told otherwise.
DEFAULT_UNIT_PATH = Path("/etc/systemd/system/keybound-rs.service")

#: The state directory the unit gives the daemon (``StateDirectory=keybound``).
STATE_DIRECTORY = Path("/var/lib/keybound")

# ProtectHome=true makes these invisible to the service (systemd.exec(5)).
_HOME_TREES = (Path("/home"), Path("/root"), Path("/run/user"))


def unit_template() -> str:
    """The unit template shipped with the package."""
    return (
        resources.files("keybound.tools.resource_server")
        .joinpath("keybound-rs.service")
        .read_text()
    )


def keybound_command(executable: str | None = None) -> list[str]:
    """The command that runs this installation's ``keybound``.

    The ``keybound`` script beside the interpreter (the virtualenv's ``bin/``),
    else the interpreter running the CLI module. The path is not resolved: a
    virtualenv's ``python`` is a link whose target knows nothing of the venv.
    """
    python = Path(executable or sys.executable).absolute()
    script = python.parent / "keybound"
    if script.is_file():
        return [str(script)]
    return [str(python), "-m", "keybound.tools.cli.app"]


def _under_home(path: Path) -> bool:
    return any(path == tree or tree in path.parents for tree in _HOME_TREES)


def render_unit(config: Path, *, executable: str | None = None) -> str:
    """The unit for ``keybound rs serve --config CONFIG`` (an absolute path)."""
    if not config.is_absolute():
        raise ValueError(f"the config path must be absolute: {config}")
    command = keybound_command(executable)
    for part in (*command, str(config)):
        if any(ch in part for ch in "\n\"'\\%$") or part != part.strip():
            raise ValueError(f"a path the unit cannot quote: {part!r}")
    # A virtualenv or config under /home stays readable (but not writable) for the service.
    home = any(_under_home(Path(part)) for part in (command[0], str(config)))
    return (
        unit_template()
        .replace("@EXEC_START@", shlex.join(command))
        .replace("@CONFIG@", shlex.quote(str(config)))
        .replace("@PROTECT_HOME@", "read-only" if home else "true")
    )


def state_outside_state_directory(state: Path) -> bool:
    """Whether the daemon's state file would sit outside ``/var/lib/keybound``.

    Under ``ProtectSystem=strict`` only the state directory is writable.
    """
    return STATE_DIRECTORY not in state.absolute().parents


__all__ = [
    "DEFAULT_UNIT_PATH",
    "STATE_DIRECTORY",
    "keybound_command",
    "render_unit",
    "state_outside_state_directory",
    "unit_template",
]
