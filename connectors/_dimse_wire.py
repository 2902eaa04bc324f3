"""The DICOM Upper Layer on the event loop: whole PDUs (PS3.8 9.3) out of a TCP or TLS stream, bounded.

An ``asyncio.Protocol`` per association, fed by the loop's selector: an idle association costs
no CPU and no thread. Incoming bytes are cut into PDUs here, under the bounds a hostile peer
must not pass: a PDU of no known type (an HTTP or TLS peer, ``not_dicom``) or announcing more
than ``MAX_PDU_BYTES`` closes the connection before it is read; a PDU must arrive whole within the network timeout (the reader checks, ``stalled``); and
reading pauses while the PDUs not yet consumed exceed ``QUEUED_PDUS``, so a flooding peer is
held back by TCP, not by our memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from typing import Any

MAX_PDU_BYTES = 4 * 1024 * 1024
"""Largest PDU read from a peer. We announce a 16 KiB maximum (PS3.8 D.1), so a bigger P-DATA-TF
breaks the protocol; a 2 GiB header is refused before a byte of it is read."""
QUEUED_PDUS = 32
"""PDUs read but not yet consumed before reading pauses (TCP back-pressure on the peer)."""

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

_BUFFER_HIGH = 256 * 1024
"""Bytes read but not yet consumed before reading pauses, while whole PDUs wait for the reader.

With no whole PDU waiting, reading goes on until the PDU in progress is complete (at most
``MAX_PDU_BYTES``): memory stays under a few MiB whatever the peer sends."""
_YIELD_EVERY = 16
"""PDUs returned without suspending before ``next_pdu`` lets the loop run (a C-FIND answer is a few PDUs)."""
_HEADER = struct.Struct(">BxL")
_RELEASE_RP = bytes([A_RELEASE_RP, 0, 0, 0, 0, 4, 0, 0, 0, 0])
_ABORT = bytes([A_ABORT, 0, 0, 0, 0, 4, 0, 0, 0, 0])
"""A-ABORT from the DUL service-user, no reason (PS3.8 9.3.8)."""
_RELEASE_RQ = bytes([A_RELEASE_RQ, 0, 0, 0, 0, 4, 0, 0, 0, 0])


def not_dicom(head: bytes) -> str:
    """Why a peer whose first bytes are no PDU type (PS3.8 9.3: 01 to 07) is not a DICOM peer, in its own terms.

    A DICOM source's port given an HTTP server's (it answers ``HTTP/1.1 400``), or a TLS port
    spoken to in the clear (a TLS alert or handshake record), is the usual cause: said so, rather
    than as the PDU length those bytes would announce (``TP/1`` is 1414541105 bytes).
    """
    if head.startswith(b"HTTP/"):
        return "the peer does not speak DICOM: it answered like an HTTP server (is this its HTTP port?)"
    if head.split(b" ", 1)[0] in _HTTP_METHODS:
        return "the peer does not speak DICOM: it sent an HTTP request"
    if head[:1] in (b"\x15", b"\x16") and head[1:2] == b"\x03":
        return "the peer does not speak DICOM in the clear: it answered with TLS (set the source's tls)"
    return f"the peer does not speak DICOM: 0x{head[0]:02X} is no PDU type (PS3.8 9.3)"


_HTTP_METHODS = frozenset((b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"))


class PeerGone(Exception):
    """The connection ended, or the peer broke the PDU framing; ``fault`` names a framing breach."""

    def __init__(self, message: str, fault: bool = False) -> None:
        super().__init__(message)
        self.fault = fault


class DulProtocol(asyncio.Protocol):
    """One association's connection: whole PDUs in a queue, ``next_pdu`` to await the next one."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.idle = False
        """Set while pooled: a PDU arriving then (A-RELEASE-RQ, A-ABORT, anything) ends the association."""
        self.closed: BaseException | None = None
        self.fault: str | None = None
        self._buffer = bytearray()
        self._partial_since: float | None = None
        self._pdus: deque[tuple[int, bytes]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._served = 0
        self._queued_bytes = 0
        self._draining = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        tune(transport)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return  # aborted, waiting for the peer to close: nothing it says matters now
        self._buffer += data
        self._parse()
        quick_ack(self.transport)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = exc or ConnectionResetError("connection closed by the peer")
        self._wake()

    def eof_received(self) -> bool | None:
        return False  # close our side too

    # -- ours ------------------------------------------------------------------------------
    def _parse(self) -> None:
        """Cut whole PDUs out of the buffer, up to ``QUEUED_PDUS`` waiting; pause reading past that."""
        completed = False
        while len(self._pdus) < QUEUED_PDUS and len(self._buffer) >= _HEADER.size:
            pdu_type, length = _HEADER.unpack_from(self._buffer)
            if not A_ASSOCIATE_RQ <= pdu_type <= A_ABORT:
                self.fault = not_dicom(bytes(self._buffer[: _HEADER.size]))
                self._buffer.clear()
                self.abort()
                return
            if length > MAX_PDU_BYTES:
                self.fault = f"the peer announced a {length}-byte PDU (at most {MAX_PDU_BYTES})"
                self._buffer.clear()
                self.abort()
                return
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            pdu = bytes(self._buffer[:end])
            del self._buffer[:end]
            completed = True
            self._received(pdu_type, pdu)
        if not self._buffer or len(self._pdus) >= QUEUED_PDUS:
            self._partial_since = None  # nothing, or whole PDUs waiting for the reader: not a stall
        elif completed or self._partial_since is None:
            self._partial_since = time.monotonic()
        waiting = len(self._buffer) + self._queued_bytes
        full = len(self._pdus) >= QUEUED_PDUS or (bool(self._pdus) and waiting > _BUFFER_HIGH)
        if self.transport is not None and full != self._paused and not self.transport.is_closing():
            self._paused = full
            if full:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def _received(self, pdu_type: int, pdu: bytes) -> None:
        if self.idle:
            # Nothing is asked while pooled: the peer releases or aborts (or misbehaves). Done with it.
            if pdu_type == A_RELEASE_RQ:
                self.send(_RELEASE_RP)
            self.close()
            return
        self._pdus.append((pdu_type, pdu))
        self._queued_bytes += len(pdu)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def open(self) -> bool:
        """The connection is up and not being closed by us."""
        transport = self.transport
        return (
            self.closed is None
            and not self._draining
            and transport is not None
            and not transport.is_closing()
        )

    @property
    def usable(self) -> bool:
        """Open, with nothing unread: what a pooled association must be to be handed out."""
        return (
            self.closed is None
            and not self._draining
            and not self._pdus
            and not self._buffer
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def stalled(self, network_timeout: float) -> bool:
        """A PDU started arriving more than ``network_timeout`` ago and is still incomplete."""
        since = self._partial_since
        return since is not None and time.monotonic() - since > network_timeout

    async def next_pdu(self, within_s: float, network_timeout: float) -> tuple[int, bytes]:
        """The next whole PDU (type, bytes with header); TimeoutError after ``within_s`` without one.

        Raises PeerGone when the connection ends, or when a PDU has been arriving for longer than
        ``network_timeout`` (a peer dripping bytes never lets ``within_s`` run out otherwise).
        """
        ends = time.monotonic() + within_s
        while not self._pdus:
            if self.fault is not None:
                raise PeerGone(self.fault, fault=True)
            if self.closed is not None:
                raise PeerGone(str(self.closed) or type(self.closed).__name__) from self.closed
            if self.stalled(network_timeout):
                self.fault = f"a PDU took longer than {network_timeout:.1f} s to arrive"
                self.abort()
                continue
            left = ends - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if self._partial_since is not None:
                left = min(left, self._partial_since + network_timeout - time.monotonic() + 0.01)
            # A timer, not a nested asyncio.timeout: under Python 3.11 an inner timeout expiring
            # together with the caller's deadline could swallow the deadline's cancellation.
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(max(left, 0.0), self._wake)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        pdu = self._pdus.popleft()
        self._queued_bytes -= len(pdu[1])
        if self._buffer or self._paused:
            self._parse()
        self._served += 1
        if self._served % _YIELD_EVERY == 0:
            # PDUs that were waiting are returned without suspending: let the loop run now and
            # then, so a deadline (asyncio.timeout) lands even while a peer floods us.
            await asyncio.sleep(0)
        return pdu

    def send(self, data: bytes) -> None:
        """Queue bytes for the peer (the transport's buffer; TCP sends them as the peer reads)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def release_request(self) -> None:
        """Send A-RELEASE-RQ (PS3.8 9.3.6)."""
        self.send(_RELEASE_RQ)

    def abort(self, linger_s: float = 0.0) -> None:
        """Send A-ABORT and close: at once, or after ``linger_s`` for what is queued to leave first.

        While lingering, whatever the peer still sends is read and dropped: a peer blocked writing
        to us would otherwise never read our C-CANCEL and A-ABORT. Nothing waits for the peer
        beyond ``linger_s``: one that neither reads nor closes keeps nothing of ours open.
        """
        transport = self.transport
        if transport is None:
            return
        if transport.is_closing():
            if linger_s <= 0:
                transport.abort()
            return
        transport.write(_ABORT)
        if linger_s <= 0:
            transport.abort()
            return
        self._draining = True
        self._pdus.clear()
        self._queued_bytes = 0
        self._buffer.clear()
        if self._paused:
            self._paused = False
            transport.resume_reading()
        asyncio.get_running_loop().call_later(linger_s, transport.abort)

    def close(self) -> None:
        """Close the connection without a word (after A-RELEASE-RP, or when the peer is gone)."""
        if self.transport is not None:
            self.transport.abort()


def tune(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on the association's socket: a C-FIND request is two small PDUs.

    Against DCMTK peers (Orthanc, dcmqrscp), Nagle plus Linux's delayed ACKs made each C-FIND
    wait ~40 ms; TCP_QUICKACK (re-armed after every read, ``quick_ack``) answers their
    multi-part writes at once. Measured: 48 → 8 ms per C-FIND against dcmqrscp (docs/PERFORMANCE.md).
    """
    raw: Any = transport.get_extra_info("socket")
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quick_ack(transport)


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def quick_ack(transport: asyncio.BaseTransport | None) -> None:
    """Re-arm TCP_QUICKACK, which the kernel clears after use (Linux only)."""
    if _QUICKACK is None or transport is None:
        return
    raw: Any = transport.get_extra_info("socket")
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
