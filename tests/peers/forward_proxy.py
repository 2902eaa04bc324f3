"""A small forwarding HTTP proxy, as a hospital's egress proxy: squid and tinyproxy are not installed here.

It does what such a proxy does for a client: absolute-form requests (``GET http://host:port/…``,
RFC 9112 3.2.2) are sent on to the origin, one request per connection, and ``CONNECT host:port``
(RFC 9110 9.3.6) opens a tunnel for TLS. It runs on its own event loop in a thread named
``fake-proxy`` and remembers each request's method and authority (never its path: QIDO paths
carry PatientIDs).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit


class ForwardProxy:
    """A loopback forwarding proxy; ``seen`` lists ``(method, "host:port")`` of every request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="fake-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        async with server:
            await self._stop.wait()
        # Tunnels the client left open end with the proxy.
        clients = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                self.seen.append((method, target))
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                try:
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
                finally:
                    # Also when the proxy stops with the tunnel open: the origin must see it end,
                    # or a server waiting for its connections to close (hypercorn) waits its whole
                    # graceful timeout, then fails on its own cancelled gather.
                    up_writer.close()
                return
            url = urlsplit(target)
            self.seen.append((method, url.netloc))
            headers = [
                line
                for line in header_lines
                if line and line.split(":", 1)[0].lower() not in ("connection", "proxy-connection")
            ]
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in headers
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            body = await reader.readexactly(length) if length else b""
            origin_form = url.path + (f"?{url.query}" if url.query else "")
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            forwarded = "\r\n".join(
                [f"{method} {origin_form} {version}", *headers, "Connection: close", "", ""]
            )
            try:
                await self._forward(up_reader, up_writer, writer, forwarded.encode("latin-1") + body)
            finally:
                up_writer.close()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _forward(
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        writer: asyncio.StreamWriter,
        request: bytes,
    ) -> None:
        """Send one request to the origin and copy its answer back, marked as the connection's last."""
        up_writer.write(request)
        # One request a connection: the answer says so, so the client does not send another.
        status_line, *answer_lines = (await up_reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        kept = [line for line in answer_lines if line and not line.lower().startswith("connection:")]
        writer.write("\r\n".join([status_line, *kept, "Connection: close", "", ""]).encode("latin-1"))
        await _pipe(up_reader, writer)  # the origin closes after its answer: so do we


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file, then half-close the other side."""
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
