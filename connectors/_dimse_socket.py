"""Socket-level guards on a DICOM association: bounded PDU reads and prompt acknowledgements.

Both are installed by the association's EVT_CONN_OPEN handler (``AssociationWatch.handlers``),
before the first PDU is read.
"""

from __future__ import annotations

import contextlib
import socket
import time
import weakref
from typing import Any

from pynetdicom.association import Association

MAX_PDU_BYTES = 4 * 1024 * 1024
"""Largest PDU read from a peer. We announce a 16 KiB maximum (PS3.8 D.1), so a bigger P-DATA-TF
breaks the protocol; pynetdicom would read whatever length a PDU header announces (2 GiB)."""
READ_SLICE_S = 0.1
"""How often a PDU read that is waiting for bytes checks whether its association was abandoned."""
READ_FAULTS: weakref.WeakKeyDictionary[Association, str] = weakref.WeakKeyDictionary()
"""Why a PDU read was refused, per association, to name the fault in the source's error."""


def guard_reads(event: Any) -> None:
    """Bound every PDU read of the association: its announced size, its duration, an abandon.

    pynetdicom 3 clears the socket timeout once connected, then reads as many bytes as a PDU
    header announces, however slowly they come: a peer that stalls mid-PDU held the reactor
    thread — and ``abort()``, which waits for it — forever, and one that drips a byte every
    100 ms never lets a timeout run out. Here a PDU longer than ``MAX_PDU_BYTES`` is refused
    before it is read, a PDU must arrive whole within the network timeout, and a read notices
    within ``READ_SLICE_S`` that its association was aborted. A refused read closes the
    connection, which pynetdicom reports as a lost connection (PS3.8 9.2, Evt17).
    """
    with contextlib.suppress(AttributeError):
        assoc = event.assoc
        association_socket = assoc.dul.socket
        raw = association_socket.socket

        def guarded_recv(nr_bytes: int) -> bytearray:
            if nr_bytes > MAX_PDU_BYTES:
                READ_FAULTS[assoc] = f"the peer announced a {nr_bytes}-byte PDU (at most {MAX_PDU_BYTES})"
                raise OSError(READ_FAULTS[assoc])
            network_timeout = assoc.network_timeout or 60.0
            was_established = assoc.is_established
            ends = time.monotonic() + network_timeout
            data = bytearray()
            try:
                while len(data) < nr_bytes:
                    left = ends - time.monotonic()
                    if left <= 0:
                        READ_FAULTS[assoc] = f"a PDU took longer than {network_timeout:.1f} s to arrive"
                        raise TimeoutError(READ_FAULTS[assoc])
                    if was_established and not assoc.is_established:
                        raise TimeoutError("association abandoned during a PDU read")
                    raw.settimeout(min(left, READ_SLICE_S))
                    try:
                        chunk = raw.recv(min(nr_bytes - len(data), 65536))
                    except TimeoutError:
                        continue
                    if not chunk:
                        break  # the peer closed the connection: pynetdicom sees a short PDU
                    data.extend(chunk)
            finally:
                with contextlib.suppress(OSError):
                    raw.settimeout(network_timeout)  # also bounds our writes to a peer that stops reading
            return data

        association_socket.recv = guarded_recv


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
