"""Small stand-ins for faults a real peer cannot be made to produce: silence, garbage, hostility.

Everything that a real PACS or Elasticsearch can do is tested against the real thing. The
hostile DIMSE peers speak just enough of PS3.8 (an A-ASSOCIATE-AC built with pynetdicom's own
PDU classes, valid P-DATA-TF C-FIND responses) to get past association set-up, then misbehave.
Every thread they start is named ``fake-…``, and :meth:`_ThreadedListener.fds` says which file
descriptors are theirs, so a test can count the connector's own threads and sockets.

:class:`OutOfProcess` runs any of them in a process of its own, as a hostile PACS runs on a
machine of its own: a fake that floods a connection is CPU-bound Python, and in the test's process
it would take the GIL from the connector under test and bill its own CPU time to the connector.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from io import BytesIO
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any, Self

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_FIND_RSP
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import ImplementationClassUIDNotification, MaximumLengthNotification


class _ThreadedListener:
    """A loopback TCP listener served by one background thread."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, name="fake-listener", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for client in self._clients:
            client.close()
        self._server.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._clients.append(client)
            self.handle(client)

    def handle(self, client: socket.socket) -> None:
        """Do nothing with the connection: it stays open and silent."""

    def fds(self) -> set[int]:
        """The file descriptors this fake holds (its listener and the connections it accepted)."""
        held = {sock.fileno() for sock in [self._server, *self._clients]}
        return held - {-1}


class SilentListener(_ThreadedListener):
    """Accepts connections and never answers (a hung PACS or a black-holing firewall)."""


class StaticHttpServer(_ThreadedListener):
    """Answers every HTTP request with the same status and body (e.g. malformed JSON)."""

    def __init__(
        self, body: bytes, status: str = "200 OK", content_type: str = "application/dicom+json"
    ) -> None:
        super().__init__()
        self.response = (
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii") + body

    def handle(self, client: socket.socket) -> None:
        """Read the request head, send the canned response, close."""
        client.settimeout(2)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = client.recv(4096)
                if not chunk:
                    break
                data += chunk
            client.sendall(self.response)
        except OSError:
            pass
        finally:
            client.close()


_STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
_PDU_HEADER = struct.Struct(">BBL")


class HostileDimsePeer(_ThreadedListener):
    """Accepts any association, then misbehaves (:meth:`misbehave`), one thread per connection.

    ``requests`` counts the C-FIND requests seen; ``cancelled`` is set when a C-CANCEL arrives.
    """

    def __init__(self) -> None:
        super().__init__()
        self._sessions: list[threading.Thread] = []
        self.requests = 0
        self.cancelled = threading.Event()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for client in list(self._clients):
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for session in self._sessions:
            session.join(timeout=2)
        super().__exit__(*exc)

    def handle(self, client: socket.socket) -> None:
        session = threading.Thread(target=self._session, args=(client,), name="fake-dimse", daemon=True)
        self._sessions.append(session)
        session.start()

    def _session(self, client: socket.socket) -> None:
        client.settimeout(5)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            pdu_type, body = _read_pdu(client)
            if pdu_type != 0x01:
                return
            context_id = _accept(client, body)
            self.misbehave(client, context_id)
        except OSError:
            pass
        finally:
            client.close()

    def misbehave(self, client: socket.socket, context_id: int) -> None:
        """What to do once the association is up (the default: nothing, then hang up)."""

    def wait_for_find(self, client: socket.socket) -> None:
        """Read PDUs until a C-FIND request's identifier has arrived."""
        while not self._stop.is_set():
            pdu_type, body = _read_pdu(client)
            if pdu_type != 0x04:
                raise OSError(f"PDU type 0x{pdu_type:02X} instead of the C-FIND request")
            if any(not is_command and last for is_command, last in _pdv_flags(body)):
                self.requests += 1
                return

    def stall(self) -> None:
        """Keep the connection open and silent until the fake is closed."""
        self._stop.wait()

    def notice_cancel(self, client: socket.socket) -> bool:
        """Read whatever the client sent meanwhile; False once it closed the connection."""
        while select.select([client], [], [], 0)[0]:
            pdu_type, body = _read_pdu(client)
            if pdu_type == 0x04 and any(is_command for is_command, _ in _pdv_flags(body)):
                self.cancelled.set()  # the only command a C-FIND client sends mid-query
            elif pdu_type in (0x05, 0x07):  # A-RELEASE-RQ, A-ABORT
                return False
        return True


class HugePduPeer(HostileDimsePeer):
    """Answers the C-FIND with a P-DATA-TF PDU announcing ``announced`` bytes, sends a little, stalls."""

    def __init__(self, announced: int = 2**31, sent: int = 64 * 1024) -> None:
        super().__init__()
        self.announced = announced
        self.sent = sent

    def misbehave(self, client: socket.socket, context_id: int) -> None:
        self.wait_for_find(client)
        # One PDV item, as long as the PDU says, of which only ``sent`` bytes ever come.
        pdv = struct.pack(">LBB", self.announced - 4, context_id, 0x00)
        client.sendall(_PDU_HEADER.pack(0x04, 0, self.announced) + pdv + b"\0" * (self.sent - len(pdv)))
        self.stall()


class DrippingPeer(HostileDimsePeer):
    """Sends a valid pending C-FIND response one byte every ``interval_s``."""

    def __init__(self, interval_s: float = 0.1) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.dripped = 0

    def misbehave(self, client: socket.socket, context_id: int) -> None:
        self.wait_for_find(client)
        message = find_response(context_id, 0xFF00, study_dataset(0))
        for byte in message:
            if self._stop.wait(self.interval_s):
                return
            client.sendall(bytes([byte]))
            self.dripped += 1
        self.stall()


class PendingFloodPeer(HostileDimsePeer):
    """Answers with ``count`` pending C-FIND responses (one study each), then Success.

    A C-CANCEL does not stop it: it is noticed (``cancelled``) and ignored, as a broken peer would.
    """

    def __init__(self, count: int = 10_000) -> None:
        super().__init__()
        self.count = count
        self.sent = 0

    def misbehave(self, client: socket.socket, context_id: int) -> None:
        self.wait_for_find(client)
        for index in range(self.count):
            if self._stop.is_set() or not self.notice_cancel(client):
                return
            client.sendall(find_response(context_id, 0xFF00, study_dataset(index)))
            self.sent += 1
        client.sendall(find_response(context_id, 0x0000, None))
        self.stall()


class StreamingPeer(HostileDimsePeer):
    """Streams pending C-FIND responses as fast as the socket takes them, deaf to C-CANCEL and A-ABORT.

    The responses (``distinct`` studies, or series with ``level="SERIES"``, cycled) are encoded
    once and written 64 KiB at a time, so, like a PACS with a deep send queue, it outpaces our
    reading. It stops only when the connection breaks; ``cancelled`` and ``aborted`` say what it
    was sent meanwhile.
    """

    def __init__(self, distinct: int = 100, level: str = "STUDY") -> None:
        super().__init__()
        self.distinct = distinct
        self.dataset = series_dataset if level == "SERIES" else study_dataset
        self.aborted = threading.Event()

    def misbehave(self, client: socket.socket, context_id: int) -> None:
        self.wait_for_find(client)
        stream = b"".join(find_response(context_id, 0xFF00, self.dataset(i)) for i in range(self.distinct))
        chunk = stream * (65536 // len(stream) + 1)
        while not self._stop.is_set():
            while select.select([client], [], [], 0)[0]:
                pdu_type, body = _read_pdu(client)
                if pdu_type == 0x04 and any(is_command for is_command, _ in _pdv_flags(body)):
                    self.cancelled.set()
                elif pdu_type == 0x07:
                    self.aborted.set()  # and go on sending
            client.sendall(chunk)


def series_dataset(index: int) -> Dataset:
    """A SERIES-level C-FIND identifier for one made-up series of one made-up study."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES"
    ds.StudyInstanceUID = "2.25.1000.0"
    ds.SeriesInstanceUID = f"2.25.1000.0.{index}"
    ds.Modality = "CT"
    return ds


def study_dataset(index: int) -> Dataset:
    """A STUDY-level C-FIND identifier for one made-up study."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientID = "HOSTILE-1"
    ds.PatientName = "Hostile^Peer"
    ds.StudyInstanceUID = f"2.25.1000.{index}"
    ds.StudyDate = "20240101"
    ds.ModalitiesInStudy = "CT"
    ds.StudyDescription = f"Flood {index}"
    return ds


def find_response(context_id: int, status: int, identifier: Dataset | None) -> bytes:
    """One C-FIND-RSP (PS3.7 9.3.2.2) as P-DATA-TF PDUs in Implicit VR Little Endian."""
    primitive = C_FIND()
    primitive.MessageIDBeingRespondedTo = 1
    primitive.AffectedSOPClassUID = _STUDY_ROOT_FIND
    primitive.Status = status
    if identifier is not None:
        encoded_identifier = encode(identifier, True, True)
        assert encoded_identifier is not None
        primitive.Identifier = BytesIO(encoded_identifier)
    message = C_FIND_RSP()
    message.primitive_to_message(primitive)
    encoded = b""
    for data in message.encode_msg(context_id, 16384):
        pdu = P_DATA_TF()
        pdu.from_primitive(data)
        encoded += pdu.encode()
    return encoded


def _read_exactly(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(min(size - len(data), 65536))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _read_pdu(client: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = _PDU_HEADER.unpack(_read_exactly(client, 6))
    if length > 1024 * 1024:
        raise OSError("the client sent an oversized PDU")
    return pdu_type, _read_exactly(client, length)


def _pdv_flags(body: bytes) -> Iterator[tuple[bool, bool]]:
    """(is a command, is the last fragment) of each PDV item of a P-DATA-TF body (PS3.8 E.2)."""
    offset = 0
    while offset + 6 <= len(body):
        (length,) = struct.unpack(">L", body[offset : offset + 4])
        header = body[offset + 5]
        yield bool(header & 0x01), bool(header & 0x02)
        offset += 4 + length


def _accept(client: socket.socket, body: bytes) -> int:
    """Answer an A-ASSOCIATE-RQ with an AC accepting every context in its first transfer syntax."""
    request = A_ASSOCIATE_RQ()
    request.decode(_PDU_HEADER.pack(0x01, 0, len(body)) + body)
    primitive = request.to_primitive()
    primitive.result = 0x00
    contexts = primitive.presentation_context_definition_list
    for context in contexts:
        context.result = 0x00
        context.transfer_syntax = [context.transfer_syntax[0]]
    primitive.presentation_context_definition_results_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.1"
    primitive.user_information = [max_length, implementation]
    accept = A_ASSOCIATE_AC()
    accept.from_primitive(primitive)
    client.sendall(accept.encode())
    first = contexts[0].context_id
    return int(first) if first is not None else 1


class HugeHttpServer(_ThreadedListener):
    """Streams a ``size``-byte chunked body that starts like a DICOM JSON array, from one reused chunk.

    ``sent`` says how many body bytes went out before the client hung up.
    """

    def __init__(self, size: int = 200 * 1024 * 1024, chunk: int = 64 * 1024) -> None:
        super().__init__()
        self.size = size
        self.chunk = b"[" + b" " * (chunk - 1)
        self.sent = 0

    def handle(self, client: socket.socket) -> None:
        thread = threading.Thread(target=self._stream, args=(client,), name="fake-http", daemon=True)
        thread.start()

    def _stream(self, client: socket.socket) -> None:
        client.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(4096)
                if not chunk:
                    return
                data += chunk
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            framed = f"{len(self.chunk):x}\r\n".encode("ascii") + self.chunk + b"\r\n"
            while self.sent < self.size and not self._stop.is_set():
                client.sendall(framed)
                self.sent += len(self.chunk)
            client.sendall(b"0\r\n\r\n")
        except OSError:
            pass
        finally:
            client.close()


class OutOfProcess:
    """Runs ``factory(**kwargs)``, one of these fakes, in a process of its own, for a ``with`` block.

    The process is ``python tests/fakes.py FD``: a fresh interpreter that imports nothing of the
    test's process (nor its ``__main__``), told over a socket pair (a ``multiprocessing``
    connection, FD) which fake to run. ``port`` is the fake's; its other public attributes are read
    from the running fake over the pipe (``peer.sent``; a ``threading.Event`` reads as an object
    with a live ``is_set()``) and, once the block is left, from the snapshot the process sends
    back when it stops. The test's process holds no thread of the fake, only the pipe (:meth:`fds`).
    The process is stopped on leaving the block, whatever happened in it (terminated, then killed,
    if it does not stop in time), and stops by itself when the pipe closes (the test's process died).
    """

    START_TIMEOUT_S = 30.0
    REPLY_TIMEOUT_S = 10.0

    def __init__(self, factory: type[_ThreadedListener], **kwargs: Any) -> None:
        self._factory = factory.__name__
        self._kwargs = kwargs
        self._final: dict[str, tuple[str, Any]] | None = None
        self.port = 0

    def __enter__(self) -> Self:
        self._conn, theirs = multiprocessing.Pipe()
        try:
            fd = theirs.fileno()
            self._process = subprocess.Popen([sys.executable, __file__, str(fd)], pass_fds=[fd])
        except BaseException:
            self._conn.close()
            raise
        finally:
            theirs.close()
        try:
            self._conn.send((self._factory, self._kwargs))
            kind, value = self._receive(self.START_TIMEOUT_S)
            if kind != "ready":
                raise RuntimeError(f"the {self._factory} fake did not start: {value}")
        except BaseException:
            self._halt(grace_s=0)
            raise
        self.port = int(value)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        grace_s = 0.0  # unless it says it stopped, it is terminated at once
        try:
            self._conn.send(("stop", None))
            kind, value = self._receive(self.REPLY_TIMEOUT_S)
            if kind == "stopped":
                self._final, grace_s = value, self.REPLY_TIMEOUT_S
        except (OSError, RuntimeError, TimeoutError):
            pass  # its attributes are then unknown
        finally:
            self._halt(grace_s)

    def fds(self) -> set[int]:
        """The file descriptor this process holds for the fake: its end of the pipe."""
        if "_conn" not in vars(self) or self._conn.closed:
            return set()
        return {self._conn.fileno()}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        kind, value = self._state(name)
        return _RemoteEvent(self, name) if kind == "event" else value

    def _state(self, name: str) -> tuple[str, Any]:
        if self._final is not None:
            if name not in self._final:
                raise AttributeError(f"the {self._factory} fake (stopped) has no attribute {name!r}")
            return self._final[name]
        if "_conn" not in vars(self) or self._conn.closed:
            raise AttributeError(f"the {self._factory} fake is not running and left no {name!r}")
        self._conn.send(("get", name))
        kind, value = self._receive(self.REPLY_TIMEOUT_S)
        if kind == "error":
            raise AttributeError(value)
        return kind, value

    def _receive(self, timeout_s: float) -> tuple[str, Any]:
        try:
            if not self._conn.poll(timeout_s):
                raise TimeoutError(f"the {self._factory} fake did not answer within {timeout_s} s")
            kind, value = self._conn.recv()
        except EOFError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(1)
            raise RuntimeError(
                f"the {self._factory} fake's process ended (exit code {self._process.returncode})"
            ) from None
        return str(kind), value

    def _halt(self, grace_s: float) -> None:
        """Close the pipe; let the process end within ``grace_s``, else terminate it, else kill it."""
        self._conn.close()
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            try:
                self._process.wait(2)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class _RemoteEvent:
    """A ``threading.Event`` of an :class:`OutOfProcess` fake, as far as a test reads it."""

    def __init__(self, owner: OutOfProcess, name: str) -> None:
        self._owner = owner
        self._name = name

    def is_set(self) -> bool:
        return bool(self._owner._state(self._name)[1])


def _state_of(value: Any) -> tuple[str, Any]:
    if isinstance(value, threading.Event):
        return "event", value.is_set()
    return "value", value


def _serve_out_of_process(conn: Connection) -> None:
    """The fake's process: run the fake it is told, answer attribute reads, stop when told (or orphaned)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the test's process's to handle
    try:
        name, kwargs = conn.recv()
        factory = globals()[name]
        if not (isinstance(factory, type) and issubclass(factory, _ThreadedListener)):
            raise TypeError(f"{name} is not a fake")
        fake = factory(**kwargs)
        fake.__enter__()
    except Exception as exc:
        conn.send(("error", repr(exc)))
        return
    stopped = False
    try:
        conn.send(("ready", fake.port))
        while True:
            try:
                request, name = conn.recv()
            except (EOFError, OSError):
                return  # the test's process is gone
            if request == "stop":
                break
            try:
                conn.send(_state_of(getattr(fake, name)))
            except Exception as exc:
                conn.send(("error", f"{type(fake).__name__}.{name}: {exc!r}"))
        fake.__exit__(None, None, None)
        stopped = True
        final = {
            name: _state_of(value)
            for name, value in vars(fake).items()
            if not name.startswith("_") and isinstance(value, int | float | str | threading.Event)
        }
        conn.send(("stopped", final))
    finally:
        if not stopped:
            fake.__exit__(None, None, None)
        conn.close()


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":  # python tests/fakes.py FD: the process of an OutOfProcess fake
    _serve_out_of_process(Connection(int(sys.argv[1])))
