"""uvicorn as pacsfed runs it: slow or idle clients cannot hold connections for ever."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeadTimeoutH11Protocol(H11Protocol):
    """HTTP/1.1 that closes a connection whose request head is not complete within ``head_timeout_s``.

    uvicorn has no such timeout: a client sending its headers at one byte a second (slowloris)
    would keep a socket and its buffers as long as it liked.
    """

    head_timeout_s = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head timer with the connection."""
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        if getattr(self, "_head_timer", None) is not None:
            self._head_timer.cancel()  # type: ignore[union-attr]
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        """Stop the timer once a whole request head has arrived."""
        super().handle_events()
        if self.conn.their_state is not h11.IDLE and self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def on_response_complete(self) -> None:
        """A kept-alive connection gets the same time for its next request head."""
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)


def protocol_with_head_timeout(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class to give uvicorn (``http=``), closing slow heads after ``seconds``."""
    return type("PacsfedH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout_s": seconds})


def uvicorn_options(head_timeout_s: float) -> dict[str, Any]:
    """uvicorn settings shared by ``serve`` and ``demo``: bounded heads, short keep-alive, no access log."""
    return {
        "http": protocol_with_head_timeout(head_timeout_s),
        "h11_max_incomplete_event_size": 16 * 1024,
        "timeout_keep_alive": 5,
        "backlog": 2048,
        "access_log": False,  # access logs would carry query strings, which may hold patient ids
        "server_header": False,
    }
