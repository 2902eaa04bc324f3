"""Progressive results at scale: the subscription to its FINAL event against the one-shot query.

N simulated DICOMweb PACS (``bench._qido_server``, each answering after L) hold the demo
patient's studies; pacsfed asks them LIVE with the same rich selection (exams with their
locations, every source's status) once as ``patientHistory`` over HTTP and once as
``patientHistoryUpdates`` over a WebSocket (graphql-transport-ws, driven in process), alternating;
with ``--delta``, a third time as ``patientHistoryUpdates(delta: true)`` in the same rounds.
Printed per N and variant: p50 of each divided by L, the first event's p50 / L, FINAL / one-shot,
the events per subscription (p50), and CPU ms per query with its ratio to the one-shot's.

SOURCE events that come while the previous one is still being executed and sent are coalesced,
and each merges only the studies it touched; without delta, each still carries the whole history
merged so far, so the GraphQL work per event grows with N; with delta, only the exams it changed.
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
PROGRESSIVE = f"subscription {{ patientHistoryUpdates({ARGUMENTS}) {{ phase answeredSources {{ id }} history {SELECTION} }} }}"
DELTA = (
    f"subscription {{ patientHistoryUpdates({ARGUMENTS}, delta: true)"
    f" {{ phase answeredSources {{ id }} history {SELECTION} }} }}"
)


async def _subscribe(app: Any, query: str) -> tuple[float, float, int]:
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
    subscribe = {"id": "1", "type": "subscribe", "payload": {"query": query}}
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
        update = message["payload"]["data"]["patientHistoryUpdates"]
        if update["phase"] == "FINAL" and not update["history"]["complete"]:
            raise SystemExit("a source did not answer the subscription; the machine is overloaded")
    elapsed = time.perf_counter() - started
    await inbox.put({"type": "websocket.disconnect", "code": 1000})
    await serving
    return first, elapsed, events


async def _measure(n_sources: int, url: str, runs: int, variants: dict[str, str]) -> dict[str, Any]:
    sources = [{"id": f"src-{i:03d}", "kind": "dicomweb", "url": url} for i in range(n_sources)]
    app = bench_app(settings_from_mapping({"cache": {"backend": "memory"}, "sources": sources}))
    one_shot: list[float] = []
    final: dict[str, list[float]] = {name: [] for name in variants}
    first: dict[str, list[float]] = {name: [] for name in variants}
    events: dict[str, list[int]] = {name: [] for name in variants}
    cpu = dict.fromkeys(["one-shot", *variants], 0.0)
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
                for name, query in variants.items():
                    cpu_started = time.process_time()
                    to_first, to_final, count = await _subscribe(manager.app, query)
                    if run >= 2:
                        first[name].append(to_first)
                        final[name].append(to_final)
                        events[name].append(count)
                        cpu[name] += time.process_time() - cpu_started
    return {
        "one_shot": statistics.median(one_shot),
        "final": {name: statistics.median(values) for name, values in final.items()},
        "first": {name: statistics.median(values) for name, values in first.items()},
        "events": {name: statistics.median(values) for name, values in events.items()},
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
    parser.add_argument(
        "--delta", action="store_true", help="also measure patientHistoryUpdates(delta: true), same rounds"
    )
    args = parser.parse_args()
    variants = {"progressive": PROGRESSIVE, **({"delta": DELTA} if args.delta else {})}
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
            f"{'sources':>8} {'variant':>12} {'one-shot':>9} {'first event':>12} {'FINAL':>7}"
            f" {'FINAL/one-shot':>15} {'events':>7} {'CPU ms one-shot':>16} {'CPU ms':>8} {'CPU ratio':>10}"
        )
        for n in args.sources:
            m = asyncio.run(_measure(n, url, args.runs, variants))
            for name in variants:
                print(
                    f"{n:>8} {name:>12} {m['one_shot'] / latency:>9.2f} {m['first'][name] / latency:>12.2f}"
                    f" {m['final'][name] / latency:>7.2f} {m['final'][name] / m['one_shot']:>15.2f}"
                    f" {m['events'][name]:>7.0f} {m['cpu']['one-shot'] * 1000:>16.1f}"
                    f" {m['cpu'][name] * 1000:>8.1f} {m['cpu'][name] / m['cpu']['one-shot']:>10.2f}"
                )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
