"""A small HTTP forward proxy for the tests, in a thread of its own, that records what it forwarded.

It takes absolute-form requests (``GET http://host:port/path HTTP/1.1``), as a client sends plain
HTTP through a proxy (RFC 9112 3.2.2), forwards each on a new connection with ``Connection: close``
and relays the answer; ``CONNECT host:port`` (for https://) is tunnelled. One request per
connection: enough for a client, which opens another.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from urllib.parse import urlsplit


class ForwardProxy:
    """``start()`` listens on a loopback port; ``forwarded`` lists ``METHOD target`` of each request."""

    def __init__(self, credentials: str | None = None) -> None:
        self.forwarded: list[str] = []
        self.credentials = credentials
        """``user:password`` the proxy asks for (Basic, RFC 9110 11.7.1); None: anyone may use it."""
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="forward-proxy")

    @property
    def url(self) -> str:
        """The proxy's URL, as a source's ``proxy:`` names it."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ForwardProxy:
        """Listen, and return once listening."""
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop
        )
        self._server = started.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop listening and end the thread."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = line.split(" ", 2)
            if self.credentials is not None and not _authorized(header_lines, self.credentials):
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n")
                writer.write(b'proxy-authenticate: Basic realm="test"\r\ncontent-length: 0\r\n\r\n')
                await writer.drain()
                return
            self.forwarded.append(f"{method} {target}")
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, header_lines, reader, writer)
        except (OSError, ValueError, asyncio.IncompleteReadError):
            with contextlib.suppress(OSError):
                writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        finally:
            writer.close()

    async def _forward(
        self,
        method: str,
        target: str,
        header_lines: list[str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        url = urlsplit(target)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError("not an absolute http:// target")
        headers = [
            h
            for h in header_lines
            if h and not h.lower().startswith(("proxy-", "connection:", "keep-alive:"))
        ]
        length = next(
            (int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0
        )
        body = await reader.readexactly(length) if length else b""
        path = url.path or "/"
        origin = f"{method} {path}{'?' + url.query if url.query else ''} HTTP/1.1"
        upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port or 80)
        try:
            upstream_writer.write(
                "\r\n".join([origin, *headers, "Connection: close", "", ""]).encode("latin-1")
            )
            upstream_writer.write(body)
            await upstream_writer.drain()
            # Relay until the origin is done, or until the client hangs up (then the origin's
            # connection is closed too, as a real proxy does: nothing is left open behind a client).
            relay = asyncio.ensure_future(_relay(upstream_reader, writer))
            client_gone = asyncio.ensure_future(reader.read(1))
            await asyncio.wait({relay, client_gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in (relay, client_gone):
                task.cancel()
            await asyncio.gather(relay, client_gone, return_exceptions=True)
        finally:
            upstream_writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))


async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while chunk := await source.read(65536):
        sink.write(chunk)
        await sink.drain()


def _authorized(header_lines: list[str], credentials: str) -> bool:
    expected = "basic " + base64.b64encode(credentials.encode()).decode()
    return any(
        name.strip().lower() == "proxy-authorization" and value.strip().lower() == expected.lower()
        for name, _, value in (line.partition(":") for line in header_lines)
    )
