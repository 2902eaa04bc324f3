"""A loopback port that counts who connects: proof that a hospital was, or was not, asked."""

from __future__ import annotations

import socket
import threading


class ConnectionCounter:
    """A loopback port that counts the connections made to it: a hospital that must not be asked."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._socket.close()
        self._thread.join(timeout=5)
