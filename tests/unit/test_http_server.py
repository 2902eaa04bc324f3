"""The HTTP server closes slow clients (head and body deadlines), caps connections, and logs no query strings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from federation.settings import ServerSettings
from web.http_server import QueryStringFilter, uvicorn_options


async def _hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"got {len(await request.body())} bytes")


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    with contextlib.suppress(WebSocketDisconnect):
        await websocket.receive_text()


@contextlib.asynccontextmanager
async def _server(head_timeout_s: float = 10.0, **server: Any) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = Starlette(
        routes=[Route("/", _hello), Route("/echo", _echo, methods=["POST"]), WebSocketRoute("/ws", _socket)]
    )
    options = uvicorn_options(ServerSettings(header_timeout_s=head_timeout_s, **server))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2, **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 (uvicorn offers no event to wait on)
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1024), seconds) == b""
    except TimeoutError:
        return False


async def test_a_slow_request_head_is_cut_off_and_a_normal_request_still_answers() -> None:
    async with _server(head_timeout_s=0.5) as port:
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await slow_writer.drain()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
        assert await _closed_within(slow_reader, 3.0)
        writer.close()
        slow_writer.close()


async def test_an_idle_connection_without_any_request_is_closed() -> None:
    async with _server(head_timeout_s=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await _closed_within(reader, 3.0)
        writer.close()


async def test_a_kept_alive_connection_gets_a_new_head_timer() -> None:
    async with _server(head_timeout_s=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b"ok"), 5)
        assert first.startswith(b"HTTP/1.1 200")
        writer.write(b"GET / HTTP/1.1\r\nHo")  # the next head never completes
        await writer.drain()
        assert await _closed_within(reader, 3.0)
        writer.close()


async def test_a_slow_request_body_is_answered_408_and_closed_and_a_whole_one_still_answers() -> None:
    async with _server(body_timeout_s=0.5) as port:
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        await slow_writer.drain()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"got 3 bytes")
        slow_answer = await asyncio.wait_for(slow_reader.read(), 5)  # read() returns at the close
        assert slow_answer.startswith(b"HTTP/1.1 408"), slow_answer
        writer.close()
        slow_writer.close()


async def test_a_body_that_keeps_trickling_is_cut_off_all_the_same() -> None:
    async with _server(body_timeout_s=0.6) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        await writer.drain()
        closed = asyncio.create_task(reader.read())
        for _ in range(40):  # a byte every 0.1 s: each one arrives in time, the whole never does
            if closed.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b"x")
                await writer.drain()
            await asyncio.sleep(0.1)
        assert closed.done()
        assert (await closed).startswith(b"HTTP/1.1 408")
        writer.close()


async def test_a_websocket_lives_past_the_body_deadline() -> None:
    async with _server(body_timeout_s=0.3, head_timeout_s=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_UPGRADE)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101")
        assert not await _closed_within(reader, 1.0)
        writer.close()


_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_connections_past_max_connections_are_answered_503_http_and_websocket_alike() -> None:
    async with _server(max_connections=2) as port:
        first_reader, first = await asyncio.open_connection("127.0.0.1", port)
        first.write(_UPGRADE)
        await first.drain()
        assert (await asyncio.wait_for(first_reader.readuntil(b"\r\n\r\n"), 5)).startswith(b"HTTP/1.1 101")
        _, second = await asyncio.open_connection("127.0.0.1", port)  # idle, but open
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 503")
        writer.close()
        ws_reader, ws_writer = await asyncio.open_connection("127.0.0.1", port)
        ws_writer.write(_UPGRADE)
        await ws_writer.drain()
        assert (await asyncio.wait_for(ws_reader.read(), 5)).startswith(b"HTTP/1.1 503")
        ws_writer.close()
        second.close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        first.close()


def test_log_lines_keep_paths_and_lose_query_strings() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/graphql?patient=MARKER-123&x=1"),
        None,
    )
    assert QueryStringFilter().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /graphql" [accepted]'
