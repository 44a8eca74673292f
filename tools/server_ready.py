"""Starting a server right: refuse a taken port, then say "ready" once.

Both servers (``keybound as serve`` and ``keybound rs serve``) follow the same
three steps, so that scripts, tests and service managers can rely on them:

1. :func:`no_port_sharing` before binding: aiocoap sets ``SO_REUSEPORT`` on its
   UDP sockets by default (``AIOCOAP_REUSE_PORT``), which lets a second process
   bind the same address and silently take half of the requests. A keybound
   server never shares its port.
2. :func:`check_port_free` for each address: a port that another process holds
   (with or without ``SO_REUSEPORT``) is an :class:`AddressInUse` error naming
   the address, before any state is touched.
3. :func:`announce_ready` once every endpoint is bound: one line on stdout,
   ``keybound: ready URL [URL ...]`` (the listening URLs, separated by single
   spaces, e.g. ``keybound: ready coap://127.0.0.1:5683``), flushed at once; and,
   when ``NOTIFY_SOCKET`` is set (systemd ``Type=notify``), the datagram
   ``READY=1`` on that socket, as ``sd_notify(3)`` describes it.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Final, TextIO

__all__ = [
    "READY_PREFIX",
    "AddressInUse",
    "announce_ready",
    "check_port_free",
    "no_port_sharing",
    "notify_systemd",
    "url_for",
]

READY_PREFIX: Final = "keybound: ready "
"""The ready line starts with this; the listening URLs follow, separated by spaces."""


class AddressInUse(OSError):
    """Another process holds the address; the message names it."""


def url_for(scheme: str, host: str, port: int) -> str:
    """``scheme://host:port``, with an IPv6 literal in brackets."""
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def no_port_sharing(environ: os._Environ[str] | dict[str, str] = os.environ) -> None:
    """Make aiocoap bind without ``SO_REUSEPORT``, so a taken port fails to bind."""
    environ["AIOCOAP_REUSE_PORT"] = "0"


def check_port_free(scheme: str, host: str, port: int, *, stream: bool = False) -> None:
    """Raise :class:`AddressInUse` when ``host:port`` (UDP, or TCP with ``stream``) is taken.

    The probe binds without ``SO_REUSEPORT``: the kernel then refuses it when any
    other socket holds the port, whether or not that one set the option.
    """
    kind = socket.SOCK_STREAM if stream else socket.SOCK_DGRAM
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {url_for(scheme, host, port)}: {exc.strerror}") from None
    family, _, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        if stream:  # as uvicorn does: a port in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AddressInUse(
                    f"cannot listen on {url_for(scheme, host, port)}: "
                    "the address is already in use (is another server running?)"
                ) from None
            raise OSError(
                f"cannot listen on {url_for(scheme, host, port)}: {exc.strerror}"
            ) from None


def notify_systemd(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to ``$NOTIFY_SOCKET``; False when it is not set.

    The socket is a unix datagram socket, named by a path or, with a leading
    ``@``, in the abstract namespace (``sd_notify(3)``).
    """
    target = environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    address = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True


def announce_ready(
    urls: Sequence[str], *, out: TextIO | None = None, environ: Mapping[str, str] = os.environ
) -> str:
    """Print the ready line and notify systemd; returns the line."""
    line = READY_PREFIX + " ".join(urls)
    stream = out if out is not None else sys.stdout
    print(line, file=stream, flush=True)
    notify_systemd("READY=1", environ)
    return line
