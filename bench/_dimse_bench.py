"""What the DIMSE fan-out and idle benchmarks share: the simulator process, the sources, the query."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from bench._app import bench_app
from federation.settings import settings_from_mapping

CALLED_AE = "SIMPACS"
QUERY = (
    'query($deadline: Int!) { patientHistory(patient: {id: "DEMO-001"}, deadlineMs: $deadline,'
    " freshness: LIVE) { complete exams { studyInstanceUid } } }"
)
DEADLINE_MS = 10_000
WARM_UP_DEADLINE_MS = 60_000
"""The first query opens every association: with a thread per association that takes seconds."""


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def simulator(latency: float, sleep_when_idle: bool = False) -> Iterator[int]:
    """The simulated DIMSE PACS (``bench/_dimse_server.py``) in its own process; yields its port."""
    port = free_port()
    command = [sys.executable, "-m", "bench._dimse_server", "--port", str(port), "--latency", str(latency)]
    if sleep_when_idle:
        command.append("--sleep-when-idle")
    server = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the simulated DIMSE PACS did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


def dimse_sources(n: int, port: int, **options: Any) -> list[dict[str, Any]]:
    """N DIMSE sources, all the simulator, with the connector's defaults unless ``options`` say."""
    return [
        {"id": f"dimse-{i:03d}", "kind": "dimse", "host": "127.0.0.1", "port": port, "called_ae": CALLED_AE}
        | options
        for i in range(n)
    ]


@asynccontextmanager
async def graphql_client(sources: list[dict[str, Any]]) -> AsyncIterator[httpx.AsyncClient]:
    """The app as ``pacsfed serve --insecure-dev`` builds it (memory cache), in process, started."""
    app = bench_app(settings_from_mapping({"cache": {"backend": "memory"}, "sources": sources}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
            yield client


async def patient_history(client: httpx.AsyncClient, deadline_ms: int = DEADLINE_MS) -> bool:
    """One LIVE patientHistory: whether every source answered in time."""
    response = await client.post("/graphql", json={"query": QUERY, "variables": {"deadline": deadline_ms}})
    history = response.json()["data"]["patientHistory"]
    if history["complete"] and len(history["exams"]) != 3:
        raise SystemExit(f"expected the demo patient's 3 studies, got {len(history['exams'])}")
    return bool(history["complete"])


def os_threads() -> int:
    """The threads of this process, as the kernel counts them (pynetdicom's included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads: line in /proc/self/status")


def settle(threads: int, within_s: float = 15.0) -> None:
    """Wait (up to ``within_s``) until the process is back to ``threads`` threads."""
    deadline = time.monotonic() + within_s
    while os_threads() > threads and time.monotonic() < deadline:
        time.sleep(0.1)
