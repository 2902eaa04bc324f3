"""The HTTP server closes connections whose request head does not arrive in time (slowloris)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from federation.http_server import uvicorn_options


async def _hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


@contextlib.asynccontextmanager
async def _server(head_timeout_s: float) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = Starlette(routes=[Route("/", _hello)])
    config = uvicorn.Config(app, log_level="warning", lifespan="off", **uvicorn_options(head_timeout_s))
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
