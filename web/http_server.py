"""uvicorn as pacsfed runs it: slow or idle clients cannot hold connections for ever, nor too many.

- A request head must be complete within ``server.header_timeout_s`` (slowloris), and its body
  within ``server.body_timeout_s`` of the head (slow POST): the connection is then answered 408
  (when no answer has started) and closed. uvicorn has neither timeout.
- At most ``server.max_connections`` connections, HTTP and WebSocket alike, are served at once;
  a request or a WebSocket upgrade on one more is answered 503 (uvicorn's ``limit_concurrency``
  counts WebSockets but lets their upgrades through, so the upgrade is checked here).
- WebSockets run on the ``websockets`` library's sans-I/O implementation, named explicitly:
  without the library ``pacsfed serve`` refuses to start instead of answering every upgrade 400.
- Log lines carry paths without their query strings, which may hold patient ids.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import h11
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.h11_impl import H11Protocol

from federation.errors import ConfigError
from federation.settings import ServerSettings

LINGER_S = 2.0
"""How long a connection answered 408 still reads (and drops) the client's bytes before closing."""

WEBSOCKETS = "websockets-sansio"
"""uvicorn's WebSocket implementation: the ``websockets`` library's sans-I/O core (uvicorn's default too)."""


class SlowClientH11Protocol(H11Protocol):
    """HTTP/1.1 with deadlines for the request head and body, and a cap on open connections."""

    head_timeout_s = 10.0
    body_timeout_s = 10.0
    max_connections: int | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head timer with the connection."""
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.conn.their_state is not h11.SEND_BODY or self.transport.is_closing():
            return
        if self.cycle is not None:  # the application sees a disconnect and can answer no more
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self._answer_and_close(408, b"the request body did not arrive in time\n", linger=True)

    def _answer_and_close(self, status: int, text: bytes, *, linger: bool = False) -> None:
        """A short plain-text answer (if none has started yet), then close the connection.

        With ``linger``, the client's further bytes are read and dropped for a moment after the
        answer (a close with unread bytes would reset the connection and could lose the answer).
        """
        answered = False
        if self.conn.our_state is h11.SEND_RESPONSE:
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
            try:
                self.transport.write(self.conn.send(h11.Response(status_code=status, headers=headers)) or b"")
                self.transport.write(self.conn.send(h11.Data(data=text)) or b"")
                self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
                answered = True
            except h11.LocalProtocolError:
                pass
        if linger and answered and self.transport.can_write_eof():
            self._lingering = True
            self.transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)
            return
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        """Drop what arrives after a 408 (lingering close); otherwise parse it."""
        if self._lingering:
            return
        super().data_received(data)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._linger_timer = None

    def handle_events(self) -> None:
        """Stop the head timer once a head has arrived; time its body until that is complete."""
        super().handle_events()
        if self.transport.get_protocol() is not self:  # upgraded: the WebSocket has its own keep-alive
            self._cancel_timers()
            return
        state = self.conn.their_state
        if state is not h11.IDLE and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if state is h11.SEND_BODY:
            if self._body_timer is None and not self.transport.is_closing():
                self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_timed_out)
        elif self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """Upgrade, unless that would open one connection too many (503)."""
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self.logger.warning("Exceeded max_connections: WebSocket upgrade refused.")
            self._answer_and_close(503, b"too many connections\n")
            return
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        """A kept-alive connection gets the same time for its next request head."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timers with the connection."""
        self._cancel_timers()
        super().connection_lost(exc)


def protocol_for(server: ServerSettings) -> type[SlowClientH11Protocol]:
    """The protocol class to give uvicorn (``http=``) with the server's deadlines and cap."""
    return type(
        "PacsfedH11Protocol",
        (SlowClientH11Protocol,),
        {
            "head_timeout_s": server.header_timeout_s,
            "body_timeout_s": server.body_timeout_s,
            "max_connections": server.max_connections,
        },
    )


_QUERY = re.compile(r"(/[^\s?\"']*)\?[^\s\"']*")


def without_query(text: str) -> str:
    """``text`` with the query string of every path in it cut off (``/graphql?x=1`` -> ``/graphql``)."""
    return _QUERY.sub(r"\1", text)


class QueryStringFilter(logging.Filter):
    """Cuts query strings out of uvicorn's log lines (``"WebSocket /graphql?patient=…" [accepted]``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message and arguments; never drop it."""
        if isinstance(record.msg, str):
            record.msg = without_query(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(without_query(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: without_query(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def log_config(*, json_lines: bool = False) -> dict[str, Any]:
    """uvicorn's own logging configuration with :class:`QueryStringFilter` on each of its handlers.

    ``json_lines`` (``logging: {format: json}``): uvicorn's lines are JSON events as pacsfed's are.
    """
    json_formatter = {"()": "web.log_format.JsonFormatter"}
    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        **({"formatters": {"default": json_formatter, "access": json_formatter}} if json_lines else {}),
        "filters": {"no_query_string": {"()": QueryStringFilter}},
        "handlers": {
            name: {**handler, "filters": ["no_query_string"]}
            for name, handler in LOGGING_CONFIG["handlers"].items()
        },
    }
    return config


def websocket_protocol() -> str:
    """The ``ws=`` setting for uvicorn; a ConfigError at start-up when the library is missing."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "the 'websockets' library is missing (GraphQL subscriptions need it): reinstall pacsfed"
        ) from exc
    return WEBSOCKETS


def uvicorn_options(server: ServerSettings) -> dict[str, Any]:
    """uvicorn settings shared by ``serve`` and ``demo``: bounded heads and bodies, capped connections."""
    return {
        "http": protocol_for(server),
        "ws": websocket_protocol(),
        "h11_max_incomplete_event_size": 16 * 1024,
        "timeout_keep_alive": 5,
        "backlog": 2048,
        # uvicorn counts this connection too, and answers 503 from limit_concurrency on: one more.
        "limit_concurrency": server.max_connections + 1,
        "access_log": False,  # access logs would carry query strings, which may hold patient ids
        "log_config": log_config(),
        "server_header": False,
    }
