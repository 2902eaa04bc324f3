"""Slow clients against a real `pacsfed serve`: bodies trickling at one byte a second are cut off
after ``server.body_timeout_s`` and do not keep a normal query waiting; connections past
``server.max_connections`` are answered 503."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx

from pacsfed.demo.signer import DemoSigner

TRICKLERS = 200
BODY_TIMEOUT_S = 5.0
QUERY = "query($id: String!) { patientHistory(patient: {id: $id}) { complete } }"


async def _trickle(port: int, seconds: int, started: asyncio.Event, opened: list[int]) -> bytes | None:
    """POST a head promising 1000 bytes, then send one byte a second for at most ``seconds``.

    Returns what the server answered once it closed the connection, or None if it never did.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    )
    writer.write(head.encode())
    await writer.drain()
    opened.append(1)
    if len(opened) == TRICKLERS:
        started.set()
    answer = asyncio.ensure_future(_answer(reader))
    try:
        for _ in range(seconds):
            if answer.done():
                return answer.result()
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
                await writer.drain()
            await asyncio.sleep(1)
        return answer.result() if answer.done() else None
    finally:
        answer.cancel()
        writer.close()


async def _answer(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes; RESET if it reset the connection instead."""
    try:
        return await reader.read()
    except ConnectionResetError:
        return b"RESET"


async def _run(url: str, port: int, token: str) -> tuple[list[bytes | None], httpx.Response, float]:
    started = asyncio.Event()
    opened: list[int] = []
    bound = int(BODY_TIMEOUT_S) + 12  # each trickler stops by itself
    tricklers = [asyncio.create_task(_trickle(port, bound, started, opened)) for _ in range(TRICKLERS)]
    await asyncio.wait_for(started.wait(), 30)
    async with httpx.AsyncClient(timeout=30) as client:  # generous: it must merely not wait for them
        begun = time.monotonic()
        response = await client.post(
            f"{url}/graphql",
            json={"query": QUERY, "variables": {"id": "PA-001"}},
            headers={"authorization": f"Bearer {token}"},
        )
        elapsed = time.monotonic() - begun
    still_trickling = sum(not task.done() for task in tricklers)
    assert still_trickling > TRICKLERS // 2, "the query was meant to run while the bodies trickle"
    answers = await asyncio.gather(*tricklers)
    return answers, response, elapsed


def test_trickling_bodies_are_cut_off_and_do_not_delay_a_normal_query(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_c: Any,
) -> None:
    server = pacsfed_server(
        serve_config(
            [{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}],
            server={"body_timeout_s": BODY_TIMEOUT_S, "max_connections": 400},
        )
    )
    answers, response, elapsed = asyncio.run(_run(server.url, server.port, signer.token()))
    print(f"normal query while {TRICKLERS} bodies trickle: HTTP {response.status_code} in {elapsed:.2f} s")
    assert response.status_code == 200 and response.json()["data"]["patientHistory"]["complete"]
    never_closed = sum(answer is None for answer in answers)
    assert never_closed == 0, f"{never_closed} trickling connections were never closed"
    kinds = {(a or b"")[:12] for a in answers}
    assert kinds == {b"HTTP/1.1 408"}, kinds  # answered, then closed (not reset under their writes)
    assert server.running


def test_connections_past_max_connections_are_answered_503(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    orthanc_c: Any,
) -> None:
    server = pacsfed_server(
        serve_config(
            [{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}],
            server={"max_connections": 3},
        )
    )
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        time.sleep(0.5)  # let the server take them
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 503
    finally:
        for connection in idle:
            connection.close()
    for _ in range(50):  # the server notices the closes by itself
        if httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the server still refuses after the idle connections closed")
