"""Progressive results at scale: the subscription to its FINAL event against the one-shot query.

N simulated DICOMweb PACS (``bench._qido_server``, each answering after L) hold the demo
patient's studies; pacsfed asks them LIVE with the same rich selection (exams with their
locations, every source's status) once as ``patientHistory`` over HTTP and once as
``patientHistoryUpdates`` over a WebSocket (graphql-transport-ws, driven in process), alternating.
Printed per N: p50 of each divided by L, the first event's p50 / L, and CPU ms per query.

Every SOURCE event carries the whole history merged so far, so the GraphQL work per query grows
with N²: this shows from which N the subscription's last events come late.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from bench._app import bench_app
from bench.fanout import _free_port, _wait_for
from federation.settings import settings_from_mapping

SELECTION = """{ complete
  exams { studyInstanceUid studyDate modalities description
    locations { source { id name } patientId retrieveUrl } }
  sources { source { id } status latencyMs examCount } }"""
ARGUMENTS = 'patient: {id: "DEMO-001"}, deadlineMs: 10000, freshness: LIVE'
ONE_SHOT = f"query {{ patientHistory({ARGUMENTS}) {SELECTION} }}"
PROGRESSIVE = f"subscription {{ patientHistoryUpdates({ARGUMENTS}) {{ phase history {SELECTION} }} }}"


async def _subscribe(app: Any) -> tuple[float, float, int]:
    """Seconds to the first event and to ``complete``, and the events received, over one WebSocket."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"bench")],
        "subprotocols": ["graphql-transport-ws"],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }
    serving = asyncio.ensure_future(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "websocket.connect"})
    assert (await outbox.get())["type"] == "websocket.accept"
    await inbox.put({"type": "websocket.receive", "text": json.dumps({"type": "connection_init"})})
    await outbox.get()  # connection_ack
    started = time.perf_counter()
    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": PROGRESSIVE}}
    await inbox.put({"type": "websocket.receive", "text": json.dumps(subscribe)})
    first, events = 0.0, 0
    while True:
        message = json.loads((await outbox.get())["text"])
        if message["type"] == "complete":
            break
        if message["type"] != "next" or "errors" in message["payload"]:
            raise SystemExit(f"unexpected message: {message}")
        events += 1
        if events == 1:
            first = time.perf_counter() - started
    elapsed = time.perf_counter() - started
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await serving
    return first, elapsed, events


async def _measure(n_sources: int, url: str, runs: int) -> dict[str, Any]:
    sources = [{"id": f"src-{i:03d}", "kind": "dicomweb", "url": url} for i in range(n_sources)]
    app = bench_app(settings_from_mapping({"cache": {"backend": "memory"}, "sources": sources}))
    one_shot: list[float] = []
    final: list[float] = []
    first: list[float] = []
    cpu = {"one-shot": 0.0, "progressive": 0.0}
    events = 0
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
            for run in range(runs + 2):  # the first two open the keep-alive connections
                started, cpu_started = time.perf_counter(), time.process_time()
                body = (await client.post("/graphql", json={"query": ONE_SHOT})).json()
                if not body["data"]["patientHistory"]["complete"]:
                    raise SystemExit(f"N={n_sources}: a source did not answer; the machine is overloaded")
                if run >= 2:
                    one_shot.append(time.perf_counter() - started)
                    cpu["one-shot"] += time.process_time() - cpu_started
                cpu_started = time.process_time()
                to_first, to_final, events = await _subscribe(manager.app)
                if run >= 2:
                    first.append(to_first)
                    final.append(to_final)
                    cpu["progressive"] += time.process_time() - cpu_started
    return {
        "one_shot": statistics.median(one_shot),
        "final": statistics.median(final),
        "first": statistics.median(first),
        "events": events,
        "cpu": {k: v / runs for k, v in cpu.items()},
    }


def main() -> None:
    """Run the comparison for each N and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--sources", type=int, nargs="+", default=[10, 50, 200])
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench._qido_server", "--port", str(port), "--latency", str(latency)]
    )
    try:
        _wait_for(port)
        url = f"http://127.0.0.1:{port}/dicom-web"
        print(f"progressive results: p50 / L (L = {args.latency_ms:.0f} ms, {args.runs} runs each)")
        print(
            f"{'sources':>8} {'one-shot':>9} {'first event':>12} {'FINAL':>7} {'FINAL/one-shot':>15}"
            f" {'events':>7} {'CPU ms one-shot':>16} {'CPU ms progressive':>19}"
        )
        for n in args.sources:
            m = asyncio.run(_measure(n, url, args.runs))
            print(
                f"{n:>8} {m['one_shot'] / latency:>9.2f} {m['first'] / latency:>12.2f}"
                f" {m['final'] / latency:>7.2f} {m['final'] / m['one_shot']:>15.2f} {m['events']:>7}"
                f" {m['cpu']['one-shot'] * 1000:>16.1f} {m['cpu']['progressive'] * 1000:>19.1f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
