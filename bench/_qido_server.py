"""Simulated DICOMweb PACS in their own process: every QIDO request answered after a fixed latency.

In the field each hospital answers on a machine of its own; here all of them share one core of a
2-core machine with pacsfed. So the simulator must cost close to nothing per request, or the
benchmark measures the simulator: a bare asyncio protocol (no web framework, ~20 µs a request,
where uvicorn + starlette took ~0.4 ms) that answers every request head with the demo patient's
studies at AZ Sint-Jan, as DICOM JSON encoded once at start, after LATENCY seconds (a later page,
``offset`` ≠ 0, at once with ``[]``), to within ~0.1 ms: asyncio's timers alone fired 0.7–1 ms
late. HTTP/1.1 keep-alive; pipelined requests are answered in order.

Between bursts the simulator busy-polls its event loop instead of sleeping in epoll: on this
VM a process woken from idle by an arriving request read it ~2 ms late (measured: with 50
connections the first answer reached the client at L + 2.1 ms; busy-polling, at L + 0.3 ms),
so every source answered after L + 2 ms, not L. ``--sleep-when-idle`` restores the old way.

``--echo-patient-id`` answers each request for the PatientID it names (the same studies, their
StudyInstanceUIDs ending in the id's digits), so that every patient of a load test has exams of
its own: without it, every answer is the demo patient's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import Any, cast

from bench._serving import serve_forever
from pacsfed.demo import demo_studies

_HEAD_END = b"\r\n\r\n"
_EARLY_S = 0.0015
_PATIENT_ID = re.compile(rb"[?&]PatientID=([^& ]*)")
_ID_MARK, _UID_MARK = "@PATIENT-ID@", "@UID-SUFFIX@"


def _response(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )


def _echoed(template: bytes, request_line: bytes) -> bytes:
    """The answer for the PatientID the request names (its UIDs ending in the id's digits)."""
    match = _PATIENT_ID.search(request_line)
    patient_id = match.group(1) if match else b"DEMO-001"
    digits = b"".join(re.findall(rb"[0-9]+", patient_id)) or b"0"
    body = template.replace(_ID_MARK.encode(), patient_id).replace(_UID_MARK.encode(), b".%d" % int(digits))
    return _response(body)


class _SimulatedPacs(asyncio.Protocol):
    """One client connection: answers each GET after the latency, in the order they came."""

    def __init__(self, answer: bytes, empty: bytes, latency: float, template: bytes | None = None) -> None:
        self._answer, self._empty, self._latency = answer, empty, latency
        self._template = template
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        self._writer = asyncio.get_running_loop().create_task(self._write_in_order())

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        loop = asyncio.get_running_loop()
        while _HEAD_END in self._buffer:
            head, _, self._buffer = self._buffer.partition(_HEAD_END)
            request_line = head.split(b"\r\n", 1)[0]
            later_page = b"offset=" in request_line and b"offset=0" not in request_line
            if later_page:
                self._queue.put_nowait((loop.time(), self._empty))
            else:
                answer = self._answer if self._template is None else _echoed(self._template, request_line)
                self._queue.put_nowait((loop.time() + self._latency, answer))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._writer is not None:
            self._writer.cancel()

    async def _write_in_order(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due, response = await self._queue.get()
            # asyncio's timers fire up to ~1 ms late (epoll waits in whole milliseconds): wake
            # a little early and spin to the due time, so a source answers after L, not L + 1 ms.
            delay = due - loop.time() - _EARLY_S
            if delay > 0:
                await asyncio.sleep(delay)
            while loop.time() < due:
                pass
            assert self._transport is not None
            if self._transport.is_closing():
                return
            self._transport.write(response)


def _template(studies: list[dict[str, Any]]) -> bytes:
    """The studies as DICOM JSON with marks where the PatientID and each UID's suffix go."""
    text = json.dumps(studies).replace('"DEMO-001"', f'"{_ID_MARK}"')
    for study in studies:
        uid = study["0020000D"]["Value"][0]
        text = text.replace(uid, uid + _UID_MARK)
    return text.encode()


async def serve(
    port: int, latency: float, sleep_when_idle: bool = False, echo_patient_id: bool = False
) -> None:
    """Serve on 127.0.0.1:PORT until cancelled."""
    studies = [ds.to_json_dict() for ds in demo_studies("demo-az-sint-jan") if ds.PatientID == "DEMO-001"]
    answer, empty = _response(json.dumps(studies).encode()), _response(b"[]")
    template = _template(studies) if echo_patient_id else None
    await serve_forever(lambda: _SimulatedPacs(answer, empty, latency, template), port, sleep_when_idle)


def main() -> None:
    """Serve on 127.0.0.1:PORT, answering each request after LATENCY seconds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--sleep-when-idle", action="store_true", help="sleep in epoll between requests")
    parser.add_argument("--echo-patient-id", action="store_true", help="answer for the PatientID asked")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.latency, args.sleep_when_idle, args.echo_patient_id))


if __name__ == "__main__":
    main()
