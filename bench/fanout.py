"""Fan-out benchmark: one GraphQL patientHistory over N simulated sources that each answer after L.

Prints, for N = 10, 50, 200, the p50 and p99 of the whole query divided by L (measured in this
run), next to the sequential baseline N×L that logging into each system one by one costs, and
next to two floors measured in the same run: N bare requests through pacsfed's own HTTP/1.1
client (``connectors.http11``, one pool per source) and through N bare httpx clients, each
sending the same QIDO request and parsing the JSON, nothing else.
The sources are DICOMweb PACS served by a separate, lean process, so pacsfed has its own core;
that process busy-polls between requests so that each source answers after L, not after L plus
the time an idle CPU takes to wake up (see ``bench/_qido_server.py``).
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
from connectors.http11 import Http11Pool
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


async def _bare_lean(n_sources: int, url: str, runs: int) -> tuple[list[float], float]:
    """N lean HTTP/1.1 pools (pacsfed's own client), one GET each, concurrently: its floor."""
    target = httpx.URL(f"{url}/studies", params={"PatientID": "DEMO-001", "limit": 100, "offset": 0})
    headers = [(b"host", target.netloc), (b"accept", b"application/dicom+json")]
    pools = [Http11Pool(target.host, target.port or 80) for _ in range(n_sources)]

    async def one(pool: Http11Pool) -> None:
        response = await pool.get(target.raw_path, headers, within_s=30, max_body=1 << 24)
        json.loads(response.body)

    timings: list[float] = []
    cpu = 0.0
    try:
        for run in range(runs + 3):
            started, cpu_started = time.perf_counter(), time.process_time()
            await asyncio.gather(*(one(p) for p in pools))
            if run >= 3:
                timings.append(time.perf_counter() - started)
                cpu += time.process_time() - cpu_started
    finally:
        for pool in pools:
            await pool.aclose()
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
    parser.add_argument(
        "--sim-sleeps-when-idle",
        action="store_true",
        help="let the simulated PACS sleep between requests (on this VM it then reads them ~2 ms late)",
    )
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    port = _free_port()
    simulator = [sys.executable, "-m", "bench._qido_server", "--port", str(port), "--latency", str(latency)]
    if args.sim_sleeps_when_idle:
        simulator.append("--sleep-when-idle")
    server = subprocess.Popen(simulator)
    try:
        _wait_for(port)
        url = f"http://127.0.0.1:{port}/dicom-web"
        print(f"fan-out: whole GraphQL query / L (L = {args.latency_ms:.0f} ms, {args.runs} runs each)")
        print(
            f"{'sources':>8} {'p50/L':>7} {'p99/L':>7} {'sequential/L':>13}"
            f" {'client p50/L':>13} {'httpx p50/L':>12} {'CPU ms/query':>13}"
            f" {'client CPU ms':>14} {'httpx CPU ms':>13}"
        )
        for n in args.sources:
            timings, cpu = asyncio.run(_measure(n, url, args.runs))
            lean, lean_cpu = asyncio.run(_bare_lean(n, url, args.runs))
            floor, floor_cpu = asyncio.run(_bare_httpx(n, url, args.runs))
            p50, p99 = statistics.median(timings) / latency, _p(timings, 99) / latency
            client, bare = statistics.median(lean) / latency, statistics.median(floor) / latency
            print(
                f"{n:>8} {p50:>7.2f} {p99:>7.2f} {n:>13.0f} {client:>13.2f} {bare:>12.2f}"
                f" {cpu * 1000:>13.1f} {lean_cpu * 1000:>14.1f} {floor_cpu * 1000:>13.1f}"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
