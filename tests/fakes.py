"""Small stand-ins for faults a real peer cannot be made to produce: silence and garbage.

Everything that a real PACS or Elasticsearch can do is tested against the real thing.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class _ThreadedListener:
    """A loopback TCP listener served by one background thread."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port: int = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> _ThreadedListener:
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


def closed_port() -> int:
    """A loopback port with nothing listening on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
