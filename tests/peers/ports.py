"""Free loopback TCP ports."""

from __future__ import annotations

import socket
import time

LOOPBACK = "127.0.0.1"

_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on *host* right now.

    The kernel picks it (bind to port 0); ports already handed out in this
    process are never returned twice, so two peers started in a row cannot be
    given the same port before the first one has bound it.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("could not find a free loopback port")


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on *host*:*port*."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port_closed(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> bool:
    """Wait until nothing listens on *host*:*port* any more; True if it closed in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not port_open(port, host, timeout=0.2):
            return True
        time.sleep(0.05)
    return False
