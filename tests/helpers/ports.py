"""Ports from the OS for test servers: never a fixed one."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux: 32768 unless changed)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port on 127.0.0.1 that the OS lets us bind right now, not handed out before.

    It is taken below the kernel's ephemeral range: the client sockets that every test
    opens (aiocoap, httpx, subprocesses) get their ports from that range, so one of them
    can never take a server's port between this call and the server's bind. Two servers
    of one test asking in a row never get the same port either.
    """
    high = _ephemeral_low()
    low = max(1024, high - 16384)
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def free_udp_port() -> int:
    """A free UDP port on 127.0.0.1 (see :func:`free_port`)."""
    return free_port(socket.SOCK_DGRAM)
