"""Fan-out benchmark: one GraphQL patientHistory over N simulated sources that each answer after L.

Prints, for N = 10, 50, 200, the p50 and p99 of the whole query divided by L (measured in this
run), next to the sequential baseline N×L that logging into each system one by one costs, and
next to the floor of the HTTP client: N bare httpx clients (one pool per source, as pacsfed's
connectors have) each sending the same QIDO request and parsing the JSON, nothing else. The
pacsfed / httpx column is what pacsfed adds over its HTTP client, measured in the same run.
The sources are DICOMweb PACS served by a separate process, so pacsfed has its own core.
CPU ms/query is this process's CPU time per query: unlike wall time it hardly moves when other
work shares the machine, and one event loop cannot answer sooner than L + that (the requests
go out, and the answers are read, one after the other).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

import httpx
from asgi_lifespan import LifespanManager

from bench._app import bench_app
from federation.settings import settings_from_mapping

QUERY = '{ patientHistory(patient: {id: "DEMO-001"}, deadlineMs: 5000, freshness: LIVE) { complete exams { studyInstanceUid } } }'


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/dicom-web/studies", params={"limit": 1}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("the simulated PACS did not start")


async def _measure(n_sources: int, url: str, runs: int) -> tuple[list[float], float]:
    sources = [{"id": f"src-{i:03d}", "kind": "dicomweb", "url": url} for i in range(n_sources)]
    settings = settings_from_mapping({"cache": {"backend": "memory"}, "sources": sources})
    app = bench_app(settings)
    timings: list[float] = []
    cpu = 0.0
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=30) as client:
            for run in range(runs + 3):
                started, cpu_started = time.perf_counter(), time.process_time()
                response = await client.post("/graphql", json={"query": QUERY})
                elapsed = time.perf_counter() - started
                if run >= 3:
                    cpu += time.process_time() - cpu_started
                history = response.json()["data"]["patientHistory"]
                if not history["complete"]:
                    raise SystemExit(f"N={n_sources}: a source did not answer; the machine is overloaded")
                if run >= 3:  # the first runs open the keep-alive connections
                    timings.append(elapsed)
    return timings, cpu / runs


async def _bare_httpx(n_sources: int, url: str, runs: int) -> tuple[list[float], float]:
    """N clients, one GET each, concurrently: the cost of the HTTP client alone."""
    target = httpx.URL(f"{url}/studies", params={"PatientID": "DEMO-001", "limit": 100, "offset": 0})
    clients = [httpx.AsyncClient(timeout=30) for _ in range(n_sources)]

    async def one(client: httpx.AsyncClient) -> None:
        response = await client.get(target)
        json.loads(response.content)

    timings: list[float] = []
    cpu = 0.0
    try:
        for run in range(runs + 3):
            started, cpu_started = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(c) for c in clients))
            if run >= 3:
                timings.append(time.perf_counter() - started)
                cpu += time.process_time() - cpu_started
    finally:
        for client in clients:
            await client.aclose()
    return timings, cpu / runs


def _p(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]
    )


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=30)
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
        print(f"fan-out: whole GraphQL query / L (L = {args.latency_ms:.0f} ms, {args.runs} runs each)")
        print(
            f"{'sources':>8} {'p50/L':>8} {'p99/L':>8} {'sequential/L':>13}"
            f" {'httpx p50/L':>12} {'pacsfed/httpx':>14} {'CPU ms/query':>13} {'httpx CPU ms':>13}"
        )
        for n in args.sources:
            timings, cpu = asyncio.run(_measure(n, url, args.runs))
            floor, floor_cpu = asyncio.run(_bare_httpx(n, url, args.runs))
            p50, p99 = statistics.median(timings) / latency, _p(timings, 99) / latency
            bare = statistics.median(floor) / latency
            print(
                f"{n:>8} {p50:>8.2f} {p99:>8.2f} {n:>13.0f} {bare:>12.2f} {p50 / bare:>14.2f}"
                f" {cpu * 1000:>13.1f} {floor_cpu * 1000:>13.1f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
