"""Fan-out benchmark: one GraphQL patientHistory over N simulated sources that each answer after L.

Prints, for N = 10, 50, 200, the p50 and p99 of the whole query divided by L (measured in this
run), next to the sequential baseline N×L that logging into each system one by one costs.
The sources are DICOMweb PACS served by a separate process, so pacsfed has its own core.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time

import httpx
from asgi_lifespan import LifespanManager

from federation.app import create_app
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


async def _measure(n_sources: int, url: str, runs: int) -> list[float]:
    sources = [{"id": f"src-{i:03d}", "kind": "dicomweb", "url": url} for i in range(n_sources)]
    settings = settings_from_mapping({"cache": {"backend": "memory"}, "sources": sources})
    app = create_app(settings)
    timings: list[float] = []
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=30) as client:
            for run in range(runs + 3):
                started = time.perf_counter()
                response = await client.post("/graphql", json={"query": QUERY})
                elapsed = time.perf_counter() - started
                history = response.json()["data"]["patientHistory"]
                if not history["complete"]:
                    raise SystemExit(f"N={n_sources}: a source did not answer; the machine is overloaded")
                if run >= 3:  # the first runs open the keep-alive connections
                    timings.append(elapsed)
    return timings


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
        print(f"{'sources':>8} {'p50/L':>8} {'p99/L':>8} {'sequential/L':>13}")
        for n in args.sources:
            timings = asyncio.run(_measure(n, url, args.runs))
            p50, p99 = statistics.median(timings) / latency, _p(timings, 99) / latency
            print(f"{n:>8} {p50:>8.2f} {p99:>8.2f} {n:>13.0f}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
