"""One HTTP/1.1 connection of the lean client: llhttp (httptools) parses what the event loop reads.

The exchange's bounds live here: the response head is capped at 64 KiB, the body at the caller's
cap on every read (before and after gzip decompression), and a request target or header that
could split the request is refused. The pool (``connectors.http11``) reuses these connections.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn, cast

import httptools

from federation.errors import SourceProtocolError, SourceTimeout, SourceUnreachable
from federation.tls import tls_failure

MAX_HEAD_BYTES = 64 * 1024
"""Largest response head (status line and headers) accepted."""
Headers = list[tuple[bytes, bytes]]


class ConnectionBroken(SourceProtocolError):
    """The connection broke during an exchange; ``fresh`` when it was opened for this request."""

    def __init__(self, message: str, *, fresh: bool, answered: bool) -> None:
        super().__init__(message)
        self.fresh = fresh
        self.answered = answered
        """Some of the answer had arrived: the request must not be sent again."""


class BodyTooLarge(SourceProtocolError):
    """The answer is larger than the cap the caller set."""


@dataclass(frozen=True, slots=True)
class Http11Response:
    """One complete answer: status, headers (lower-case names, repeated ones joined) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    http_version: str = "HTTP/1.1"


class Exchange:
    """The state of one request on a connection: what has arrived, and who waits for it."""

    __slots__ = (
        "answered",
        "body",
        "cap",
        "complete",
        "error",
        "framed",
        "gunzip",
        "head_size",
        "headers",
        "received",
        "status",
        "waiter",
    )

    def __init__(self, waiter: asyncio.Future[Http11Response], cap: int) -> None:
        self.waiter = waiter
        self.cap = cap
        self.status = 0
        self.headers: dict[str, str] = {}
        self.head_size = 0
        self.body = bytearray()
        self.received = 0
        self.gunzip: zlib._Decompress | None = None
        self.framed = False
        """The body's end is announced (Content-Length, chunked, or no body): not ended by closing."""
        self.answered = False
        """Some of the answer has arrived."""
        self.complete = False
        self.error: Exception | None = None

    def take(self, data: bytes) -> bool:
        """Add a piece of the body (decompressed when gzip); False once it passes the cap."""
        self.received += len(data)
        if self.gunzip is not None:
            data = self.gunzip.decompress(data, self.cap + 1 - len(self.body))
            if self.gunzip.unconsumed_tail:
                return False
        self.body += data
        return len(self.body) <= self.cap and self.received <= self.cap

    def finish_body(self) -> None:
        """The end of the body: a gzip stream must be complete."""
        if self.gunzip is not None:
            self.body += self.gunzip.flush()
            if not self.gunzip.eof:
                raise SourceProtocolError("the gzip-compressed answer is truncated")


class _Stop(Exception):
    """Raised in a parser callback to stop parsing: the exchange's ``error`` says why."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: llhttp (httptools) parses what the event loop reads."""

    def __init__(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._exchange: Exchange | None = None
        self.closed = False
        self._keep_alive = True
        self.fresh = True
        self.idle_since = 0.0
        """When it was last given back to its pool (the loop's clock)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    @property
    def alpn(self) -> str | None:
        """The protocol the TLS peer selected by ALPN (None on plain TCP)."""
        assert self._transport is not None
        ssl_object = self._transport.get_extra_info("ssl_object")
        return ssl_object.selected_alpn_protocol() if ssl_object is not None else None

    @property
    def reusable(self) -> bool:
        """Open, and ready for a new request."""
        return not self.closed and self._keep_alive and self._exchange is None

    def request(self, target: bytes, headers: Headers, cap: int) -> asyncio.Future[Http11Response]:
        """Send a GET; the future gets the whole answer, or the error that ended the exchange."""
        assert self._transport is not None
        assert self._exchange is None
        waiter: asyncio.Future[Http11Response] = asyncio.get_running_loop().create_future()
        self._exchange = Exchange(waiter, cap)
        self._transport.write(request_bytes(target, headers))
        return waiter

    def abort(self) -> None:
        """Drop the connection at once (an abandoned exchange leaves it in an unknown state)."""
        self.closed = True
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        """Close the connection politely."""
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def expire(self) -> None:
        """The exchange's time is up: fail it (naming how far it got) and drop the connection."""
        exchange = self._exchange
        if exchange is not None and not exchange.waiter.done():
            message = "answer still arriving at the deadline" if exchange.answered else "request timed out"
            self._fail(SourceTimeout(message))

    def give_up(self) -> None:
        """The caller stopped waiting (deadline, cancellation, failure): drop the connection."""
        self._exchange = None
        self.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:
            self.abort()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        exchange.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if exchange.complete and exchange.error is None:
                # Bytes after a complete answer: keep the answer, not the connection.
                self._keep_alive = False
                self._finish(exchange)
            elif isinstance(exc, httptools.HttpParserCallbackError):
                self._fail(exchange.error or SourceProtocolError("the answer could not be read"))
            elif isinstance(exc, httptools.HttpParserUpgrade):
                self._fail(SourceProtocolError("the peer switched protocols"))
            else:
                self._fail(SourceProtocolError("the answer is not valid HTTP/1.1"))
            return
        if exchange.complete:
            self._finish(exchange)

    def eof_received(self) -> bool:
        exchange = self._exchange
        if exchange is not None and exchange.status and not exchange.framed and not exchange.complete:
            self._complete(exchange)  # a body delimited by closing the connection (HTTP/1.0 style)
            self._keep_alive = False
            if exchange.error is None:
                self._finish(exchange)
            else:
                self._fail(exchange.error)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        exchange, self._exchange = self._exchange, None
        if exchange is not None and not exchange.waiter.done():
            reason = tls_failure(exc) if exc is not None else None
            if reason:
                exchange.waiter.set_exception(SourceUnreachable(reason))
                return
            exchange.waiter.set_exception(self._broken(exchange))

    # -- llhttp callbacks (an exception raised here surfaces as HttpParserCallbackError) ------
    def on_status(self, status: bytes) -> None:
        exchange = self._current()
        exchange.head_size += len(status)

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self._current()
        exchange.head_size += len(name) + len(value) + 4
        if exchange.head_size > MAX_HEAD_BYTES:
            self._stop(exchange, SourceProtocolError("the answer's head is larger than 64 KiB"))
        key = name.decode("ascii", "replace").lower()
        text = value.decode("iso-8859-1")
        headers = exchange.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        exchange = self._current()
        status = self._parser.get_status_code()
        if status < 200:
            exchange.headers = {}  # 1xx: informational, the answer follows
            exchange.head_size = 0
            return
        exchange.status = status
        headers = exchange.headers
        length = headers.get("content-length", "")
        exchange.framed = bool(length) or "transfer-encoding" in headers or status in (204, 304)
        if length.isdigit() and int(length) > exchange.cap:
            self._stop(exchange, BodyTooLarge("answer larger than the limit"))
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            exchange.gunzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding != "identity":
            self._stop(exchange, SourceProtocolError("the answer's Content-Encoding is not gzip"))

    def on_body(self, body: bytes) -> None:
        exchange = self._current()
        try:
            within_cap = exchange.take(body)
        except zlib.error:
            self._stop(exchange, SourceProtocolError("the gzip-compressed answer is corrupt"))
        if not within_cap:
            self._stop(exchange, BodyTooLarge("answer larger than the limit"))

    def on_message_complete(self) -> None:
        exchange = self._current()
        if exchange.status:  # not the end of a 1xx
            self._complete(exchange)
            self._keep_alive = self._parser.should_keep_alive()

    # -- helpers -----------------------------------------------------------------------------
    def _current(self) -> Exchange:
        """The exchange a callback is about; parsing stops at anything after its answer."""
        exchange = self._exchange
        if exchange is None or exchange.complete:
            raise _Stop
        return exchange

    @staticmethod
    def _stop(exchange: Exchange, error: Exception) -> NoReturn:
        exchange.error = error
        raise _Stop

    @staticmethod
    def _complete(exchange: Exchange) -> None:
        exchange.complete = True
        try:
            exchange.finish_body()
        except zlib.error:
            exchange.error = SourceProtocolError("the gzip-compressed answer is corrupt")
        except SourceProtocolError as exc:
            exchange.error = exc

    def _finish(self, exchange: Exchange) -> None:
        if exchange.error is not None:
            self._fail(exchange.error)
            return
        self._exchange = None
        response = Http11Response(exchange.status, exchange.headers, bytes(exchange.body))
        if not self._keep_alive:
            self.close()  # "Connection: close", HTTP/1.0, or a body ended by closing
        if not exchange.waiter.done():
            exchange.waiter.set_result(response)

    def _fail(self, error: Exception) -> None:
        exchange, self._exchange = self._exchange, None
        self.abort()
        if exchange is not None and not exchange.waiter.done():
            exchange.waiter.set_exception(error)

    def _broken(self, exchange: Exchange) -> ConnectionBroken:
        return ConnectionBroken(
            "the connection was closed before the answer was complete",
            fresh=self.fresh,
            answered=exchange.answered,
        )


def request_bytes(target: bytes, headers: Headers) -> bytes:
    """The GET request's bytes; a target or header that could split the request is refused."""
    if _UNSAFE.search(target):
        raise ValueError("request target with whitespace or control characters")
    lines = [b"GET ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if _UNSAFE_VALUE.search(value) or not _TOKEN.fullmatch(name):
            raise ValueError("header with control characters")
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


_UNSAFE = re.compile(rb"[\x00-\x20\x7f]")
_UNSAFE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
