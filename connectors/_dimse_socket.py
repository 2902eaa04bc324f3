"""Prompt acknowledgements on a pynetdicom association's socket (the report reader's C-GET).

Installed by the association's EVT_CONN_OPEN handler. The C-FIND path tunes its own sockets
(``_dimse_wire.tune``).
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any


def tune_socket(event: Any) -> None:
    """Make the association's socket answer promptly in both directions.

    pynetdicom leaves Nagle on (its C-FIND request is two small PDUs), and Linux delays ACKs:
    against DCMTK peers (Orthanc, dcmqrscp) each C-FIND then waited ~40 ms for a delayed ACK.
    TCP_NODELAY fixes our writes; TCP_QUICKACK, which the kernel clears again after use, is
    re-armed around every read so the peer's multi-part writes are acknowledged at once.
    Measured: 48 → 8 ms per C-FIND against dcmqrscp (docs/PERFORMANCE.md).
    """
    with contextlib.suppress(AttributeError, OSError):
        association_socket = event.assoc.dul.socket
        raw = association_socket.socket
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        quickack = getattr(socket, "TCP_QUICKACK", None)
        if quickack is None:
            return  # not Linux: nothing to re-arm
        read = association_socket.recv

        def recv_with_quick_ack(nr_bytes: int) -> bytearray:
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            data: bytearray = read(nr_bytes)
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, quickack, 1)
            return data

        association_socket.recv = recv_with_quick_ack
