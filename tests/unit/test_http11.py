"""The lean HTTP/1.1 client against scripted servers: framing, keep-alive, caps, timeouts, broken peers.

The DICOMweb tests run it against Orthanc; these fakes do what a real server will not do on
request (close a kept-alive connection at the wrong moment, stall after the head, send a gzip bomb).
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from connectors.http11 import BodyTooLarge, ConnectionBroken, Http11Pool
from federation.errors import SourceProtocolError, SourceTimeout, SourceUnreachable

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
HEADERS = [(b"host", b"127.0.0.1"), (b"accept", b"application/dicom+json")]


class ScriptedServer:
    """A loopback server running *handler* for every request head; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.open_now = 0
        self.most_open = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ScriptedServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                await self.handler(reader, writer, len(self.requests))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.open_now -= 1
            writer.close()


def answer(body: bytes, *extra: bytes) -> bytes:
    headers = b"".join(h + b"\r\n" for h in extra)
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), headers, body)


def replying(data: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(data)
        await writer.drain()

    return handler


@pytest.fixture
async def pools() -> AsyncIterator[list[Http11Pool]]:
    made: list[Http11Pool] = []
    yield made
    for pool in made:
        await pool.aclose()


def pool_for(server: ScriptedServer, made: list[Http11Pool], **options: object) -> Http11Pool:
    pool = Http11Pool("127.0.0.1", server.port, **options)  # type: ignore[arg-type]
    made.append(pool)
    return pool


async def get(pool: Http11Pool, within_s: float = 2.0, max_body: int = 1 << 20) -> bytes:
    response = await pool.get(b"/studies?PatientID=X", list(HEADERS), within_s=within_s, max_body=max_body)
    assert response.status == 200
    return response.body


async def test_keep_alive_reuses_one_connection(pools: list[Http11Pool]) -> None:
    async with ScriptedServer(replying(answer(b"[1]"))) as server:
        pool = pool_for(server, pools)
        assert [await get(pool) for _ in range(3)] == [b"[1]"] * 3
    assert server.connections == 1
    assert pool.connections_made == 1
    assert server.requests[0].startswith(b"GET /studies?PatientID=X HTTP/1.1\r\n")


async def test_chunked_and_close_delimited_bodies(pools: list[Http11Pool]) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n"
    async with ScriptedServer(replying(chunked)) as server:
        assert await get(pool_for(server, pools)) == b"[1,2]"

    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n[3]")
        writer.close()

    async with ScriptedServer(close_delimited) as server:
        pool = pool_for(server, pools)
        assert await get(pool) == b"[3]"
        assert await get(pool) == b"[3]"  # that connection was spent: a new one
    assert server.connections == 2


async def test_gzip_is_decompressed_and_bounded(pools: list[Http11Pool]) -> None:
    body = b"[" + b"0," * 1000 + b"0]"
    async with ScriptedServer(replying(answer(gzip.compress(body), b"Content-Encoding: gzip"))) as server:
        pool = pool_for(server, pools)
        assert await get(pool) == body
        with pytest.raises(BodyTooLarge):  # a compression bomb stops at the cap, not after inflating
            await get(pool, max_body=1000)

    for bad in (gzip.compress(body)[:-9], b"not gzip at all"):
        async with ScriptedServer(replying(answer(bad, b"Content-Encoding: gzip"))) as server:
            with pytest.raises(SourceProtocolError, match="gzip"):
                await get(pool_for(server, pools))

    async with ScriptedServer(replying(answer(b"x", b"Content-Encoding: br"))) as server:
        with pytest.raises(SourceProtocolError, match="Content-Encoding"):
            await get(pool_for(server, pools))


async def test_an_announced_or_streamed_body_over_the_cap_is_refused(pools: list[Http11Pool]) -> None:
    async with ScriptedServer(replying(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n[")) as server:
        with pytest.raises(BodyTooLarge):
            await get(pool_for(server, pools), max_body=1000)

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(1000):
            writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            await writer.drain()

    async with ScriptedServer(endless) as server:
        with pytest.raises(BodyTooLarge):
            await get(pool_for(server, pools), max_body=10_000)


async def test_a_kept_alive_connection_closed_by_the_peer_is_replaced_once(pools: list[Http11Pool]) -> None:
    async def once_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        # Answers as if keeping the connection, then drops it: the next request finds it dead.
        writer.write(answer(b"[]"))
        await writer.drain()
        writer.close()

    async with ScriptedServer(once_per_connection) as server:
        pool = pool_for(server, pools)
        await get(pool)
        await asyncio.sleep(0.05)  # the close reaches us while idle
        await get(pool)

    async def closes_after_reading(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        if n == 2:
            writer.transport.abort()  # the race: closed just as our second request arrived
        else:
            writer.write(answer(b"[]"))
            await writer.drain()

    async with ScriptedServer(closes_after_reading) as server:
        pool = pool_for(server, pools)
        await get(pool)
        assert await get(pool) == b"[]"
    assert server.connections == 2


async def test_a_connection_broken_mid_answer_is_not_retried(pools: list[Http11Pool]) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n[1,2")
        await writer.drain()
        writer.close()

    async with ScriptedServer(half) as server:
        with pytest.raises(ConnectionBroken) as raised:
            await get(pool_for(server, pools))
    assert raised.value.answered
    assert len(server.requests) == 1


async def test_timeouts_name_how_far_the_exchange_got(pools: list[Http11Pool]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(10)

    async def stalls_after_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n[")
        await writer.drain()
        await asyncio.sleep(10)

    async with ScriptedServer(silent) as server:
        with pytest.raises(SourceTimeout, match="^request timed out"):
            await get(pool_for(server, pools), within_s=0.2)
    async with ScriptedServer(stalls_after_head) as server:
        with pytest.raises(SourceTimeout, match="still arriving"):
            await get(pool_for(server, pools), within_s=0.2)


async def test_garbage_informational_answers_and_refusals(pools: list[Http11Pool]) -> None:
    async with ScriptedServer(replying(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")) as server:
        with pytest.raises(SourceProtocolError, match="not valid HTTP/1.1"):
            await get(pool_for(server, pools))
    continued = b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"[7]", b"Warning: 299 - a", b"Warning: 299 - b")
    async with ScriptedServer(replying(continued)) as server:
        response = await pool_for(server, pools).get(b"/", list(HEADERS), within_s=2, max_body=100)
    assert response.body == b"[7]"
    assert response.headers["warning"] == "299 - a, 299 - b"

    async with ScriptedServer(replying(b"")) as server:
        port = server.port
    refused = Http11Pool("127.0.0.1", port)
    with pytest.raises(SourceUnreachable, match="refused"):
        await refused.get(b"/", list(HEADERS), within_s=2, max_body=100)


async def test_a_cancelled_request_drops_its_connection_and_the_pool_goes_on(pools: list[Http11Pool]) -> None:
    async def slow_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 1:
            await asyncio.sleep(10)
        writer.write(answer(b"[]"))
        await writer.drain()

    async with ScriptedServer(slow_first) as server:
        pool = pool_for(server, pools, max_connections=1)
        first = asyncio.ensure_future(get(pool))
        await asyncio.sleep(0.1)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await get(pool) == b"[]"  # its slot was given back, on a new connection
    assert server.connections == 2


async def test_connections_are_bounded_and_idle_ones_expire(pools: list[Http11Pool]) -> None:
    async def slowish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(0.05)
        writer.write(answer(b"[]"))
        await writer.drain()

    async with ScriptedServer(slowish) as server:
        pool = pool_for(server, pools, max_connections=2, idle_s=0.2)
        await asyncio.gather(*(get(pool) for _ in range(6)))
        assert server.most_open == 2
        await asyncio.sleep(0.5)
        assert server.open_now == 0  # closed by us after idle_s
        await get(pool)
    assert server.connections == 3


async def test_bytes_on_an_idle_connection_retire_it(pools: list[Http11Pool]) -> None:
    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(answer(b"[]"))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(answer(b"[0]"))  # nobody asked: the connection cannot be trusted
        await writer.drain()

    async with ScriptedServer(chatty) as server:
        pool = pool_for(server, pools)
        assert await get(pool) == b"[]"
        await asyncio.sleep(0.1)
        assert await get(pool) == b"[]"
    assert server.connections == 2


async def test_bytes_right_after_an_answer_keep_the_answer_not_the_connection(
    pools: list[Http11Pool],
) -> None:
    trailing = answer(b"[1]") + b"HTTP/1.1 200 OK\r\nX-Injected: yes\r\nContent-Length: 3\r\n\r\n[2]"
    async with ScriptedServer(replying(trailing)) as server:
        pool = pool_for(server, pools)
        first = await pool.get(b"/", list(HEADERS), within_s=2, max_body=100)
        assert (first.body, "x-injected" in first.headers) == (b"[1]", False)
        assert await get(pool) == b"[1]"
    assert server.connections == 2


async def test_requests_that_could_be_split_are_refused(pools: list[Http11Pool]) -> None:
    async with ScriptedServer(replying(answer(b"[]"))) as server:
        pool = pool_for(server, pools)
        for target, headers in [
            (b"/studies?a=1 HTTP/1.1\r\nX: y", HEADERS),
            (b"/", [*HEADERS, (b"authorization", b"Bearer x\r\nX-Evil: 1")]),
            (b"/", [*HEADERS, (b"bad name", b"x")]),
        ]:
            with pytest.raises(ValueError, match="control characters|whitespace"):
                await pool.get(target, list(headers), within_s=2, max_body=100)
        assert await get(pool) == b"[]"
    assert len(server.requests) == 1
