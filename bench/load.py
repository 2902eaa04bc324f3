"""Load benchmark: ``pacsfed serve`` under many clients, and what happens past its limit.

Every part runs in a process of its own, as in the field: ``pacsfed serve --insecure-dev``
(Elasticsearch cache: ELASTICSEARCH_URL, or the test node of tests/peers), N = 20 simulated
DICOMweb hospitals answering after L = 100 ms (``bench._qido_server``, one process, each
patient's own exams), and the clients (``bench._load_client``: asyncio + httpx, two processes
from 50 clients on, so the client is not the bottleneck). Printed:

- throughput: LIVE (a new patient each query, every source asked) and cached (``CACHE_ONLY`` on
  patients cached before) with 1, 10, 50 and 200 concurrent clients, with ``--workers 1`` and 2
  (n/a when this pacsfed's ``serve`` has no ``--workers``): answers per second (LIVE: complete
  ones), p50 and p99, and the CPU per answer of the server's processes (and of Elasticsearch);
- concurrent physicians: 10 and 50 clients each querying 50 sources LIVE, p50 and p99 against
  one client's;
- the overload run (``bench._load_overload``): 400 clients for 20 s, then the load stops; a
  timeline per second and how long until latency and answers are back to the baseline.

``--code DIR`` runs ``pacsfed serve`` from another tree (a branch's worktree) with this tree's
simulator and clients: a before/after in one sitting. ``PACSFED_*`` environment variables reach
``pacsfed serve`` as they would any (``PACSFED_SERVER__MAX_PENDING_QUERIES=60``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._load_client import QUERY_FRESHNESS, patient_id
from bench._load_overload import OverloadPlan, run_overload, summary, timeline
from bench._load_processes import (
    Server,
    collect,
    elasticsearch,
    hospitals,
    java_pid_listening,
    served_from,
    start_clients,
    supports_workers,
    tree_cpu_s,
)

LATENCY_S = 0.1
CACHED_POOL = (1, 201)
"""Patients cached before the throughput runs (ids LOAD1 to LOAD200)."""
OVERLOAD_POOL = (1001, 1201)
"""Patients cached just before the overload run (fresh: younger than the sources' ttl_s)."""


@dataclass(frozen=True)
class Cell:
    """One throughput measurement: its figures."""

    answers_per_s: float
    complete_share: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    es_cpu_ms: float | None
    failed: int


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def _warm(url: str, pool: tuple[int, int], concurrency: int = 8) -> None:
    """Ask each patient of POOL LIVE until every source's answer for it reads back from the cache.

    On a loaded machine a cache write may time out: such a patient is asked again (3 rounds).
    """
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def ask(number: int, freshness: str) -> bool:
            async with limit:
                variables = {"id": patient_id(number), "f": freshness}
                body = (
                    await client.post("/graphql", json={"query": QUERY_FRESHNESS, "variables": variables})
                ).json()
            history = (body.get("data") or {}).get("patientHistory")
            return bool(history and history["complete"] and history["exams"])

        missing = list(range(*pool))
        for _ in range(3):
            await asyncio.gather(*(ask(n, "LIVE") for n in missing))
            await asyncio.sleep(1.5)  # the cache's refresh interval: written answers become readable
            read = await asyncio.gather(*(ask(n, "CACHE_ONLY") for n in missing))
            missing = [n for n, cached in zip(missing, read, strict=True) if not cached]
            if not missing:
                return
    raise SystemExit(f"warming the cache: {len(missing)} patients still not cached after 3 rounds")


class Runner:
    """Runs cells against one server; hands out patient ids nobody asked before."""

    def __init__(
        self, server: Server, es_pid: int | None, warm_s: float, measure_s: float, first_id: int = 0
    ) -> None:
        self.server, self.es_pid = server, es_pid
        self.warm_s, self.measure_s = warm_s, measure_s
        self._next_id = first_id + 10_000_000

    def fresh_ids(self) -> int:
        """A first id of a block of ten million unused ones."""
        self._next_id += 10_000_000
        return self._next_id

    def cell(self, clients: int, freshness: str) -> Cell:
        """CLIENTS concurrent callers for warm_s + measure_s; the figures of the measured part."""
        processes = 1 if clients < 50 else 2
        t0 = time.monotonic() + 2.0
        start, stop = t0 + self.warm_s, t0 + self.warm_s + self.measure_s
        specs = []
        for index in range(processes):
            group: dict[str, Any] = {
                "name": freshness,
                "clients": (clients + index) // processes,
                "start_at": t0,
                "stop_at": stop,
                "freshness": freshness,
            }
            if freshness == "CACHE_ONLY":
                group["pool"] = list(CACHED_POOL)
            else:
                group["first_id"] = self.fresh_ids()
            specs.append({"url": self.server.url, "groups": [group], "timeout_s": 60.0})
        running = [start_clients(spec) for spec in specs]
        time.sleep(max(0.0, start - time.monotonic()))
        cpu, es_cpu = self.server.cpu_s(), tree_cpu_s(self.es_pid) if self.es_pid else 0.0
        time.sleep(max(0.0, stop - time.monotonic()))
        cpu, es_cpu = self.server.cpu_s() - cpu, (tree_cpu_s(self.es_pid) if self.es_pid else 0.0) - es_cpu
        records = [r for process in running for r in collect(process)]
        window = [r for r in records if start <= r["t1"] < stop]
        answered = [r for r in window if r["http"] == 200 and "exams" in r]
        good = [r for r in answered if r["complete"]] if freshness == "LIVE" else answered
        latencies = [r["t1"] - r["t0"] for r in good] or [float("nan")]
        return Cell(
            answers_per_s=len(good) / self.measure_s,
            complete_share=len([r for r in answered if r["complete"]]) / len(window) if window else 0.0,
            p50_ms=statistics.median(latencies) * 1000,
            p99_ms=_p(latencies, 99) * 1000,
            cpu_ms=cpu / len(window) * 1000 if window else float("nan"),
            es_cpu_ms=es_cpu / len(window) * 1000 if window and self.es_pid else None,
            failed=len(window) - len(answered),
        )


def _row(mode: str, workers: str, clients: int, cell: Cell | None) -> str:
    if cell is None:
        return f"{mode:>10} {workers:>8} {clients:>8} {'n/a':>10}"
    if cell.answers_per_s == 0:
        return f"{mode:>10} {workers:>8} {clients:>8} {0:>10.1f}  no answer within the measured seconds ({cell.failed} failed)"
    es = f"{cell.es_cpu_ms:.1f}" if cell.es_cpu_ms is not None else "-"
    return (
        f"{mode:>10} {workers:>8} {clients:>8} {cell.answers_per_s:>10.1f} {100 * cell.complete_share:>10.1f}"
        f" {cell.p50_ms:>8.0f} {cell.p99_ms:>8.0f} {cell.cpu_ms:>13.2f} {es:>12} {cell.failed:>7}"
    )


HEADER = (
    f"{'mode':>10} {'workers':>8} {'clients':>8} {'q/s':>10} {'complete%':>10} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'CPU ms/query':>13} {'ES CPU ms/q':>12} {'failed':>7}"
)


def _throughput(args: argparse.Namespace, es_url: str, qido: str, prefix: str, es_pid: int | None) -> None:
    """Each row with each worker count in turn (one server each, all started first): the machine is noisy."""
    print(
        f"throughput: {args.sources} sources answering after {LATENCY_S * 1000:.0f} ms;"
        f" {args.warm_s:.0f} s warm-up + {args.measure_s:.0f} s measured per row; {_load()}"
    )
    print("  LIVE q/s counts complete answers only; failed = HTTP errors, GraphQL errors, client timeouts")
    print(HEADER)
    has_workers = supports_workers(args.code)
    runnable = [w for w in args.workers if w == 1 or has_workers]
    with contextlib.ExitStack() as servers:
        runners: dict[int, Runner] = {}
        for index, workers in enumerate(runnable):
            server = Server(es_url, prefix, qido, args.sources, workers, args.code)
            servers.callback(server.close)
            runners[workers] = Runner(
                server, es_pid, args.warm_s, args.measure_s, first_id=index * 1_000_000_000
            )
        for mode in ("CACHE_ONLY", "LIVE"):  # LIVE last: 200 clients may open breakers
            for clients in args.clients:
                for workers in args.workers:
                    cell = runners[workers].cell(clients, mode) if workers in runners else None
                    print(_row(mode, str(workers), clients, cell), flush=True)


def _physicians(args: argparse.Namespace, es_url: str, qido: str, prefix: str, es_pid: int | None) -> None:
    """1, 10 and 50 clients over 50 sources, each worker count in turn; p50 and p99 against one client's."""
    print(f"\nconcurrent physicians: each client queries 50 sources LIVE; {_load()}")
    print(HEADER + f" {'p50/1':>6} {'p99/1':>6}")
    runnable = [w for w in args.workers if w == 1 or supports_workers(args.code)]
    with contextlib.ExitStack() as servers:
        runners: dict[int, Runner] = {}
        for index, workers in enumerate(runnable):
            server = Server(es_url, prefix, qido, 50, workers, args.code)
            servers.callback(server.close)
            runners[workers] = Runner(
                server, es_pid, args.warm_s, args.measure_s, first_id=index * 1_000_000_000
            )
        single: dict[int, Cell] = {}
        for clients in (1, 10, 50):
            for workers in args.workers:
                if workers not in runners:
                    print(_row("LIVE", str(workers), clients, None))
                    continue
                cell = runners[workers].cell(clients, "LIVE")
                one = single.setdefault(workers, cell)
                ratios = (
                    f" {cell.p50_ms / one.p50_ms:>6.2f} {cell.p99_ms / one.p99_ms:>6.2f}"
                    if cell.answers_per_s and one.answers_per_s
                    else ""
                )
                print(_row("LIVE", str(workers), clients, cell) + ratios, flush=True)


def _overload(args: argparse.Namespace, es_url: str, qido: str, prefix: str) -> None:
    plan = OverloadPlan(clients=args.overload_clients, load_s=args.overload_s, after_s=args.after_s)
    print(
        f"\noverload: {plan.clients} clients for {plan.load_s:.0f} s ({args.sources} sources, --workers 1),"
        f" then only the 2 probes for {plan.after_s:.0f} s; t = seconds since the load started; {_load()}"
    )
    server = Server(es_url, prefix, qido, args.sources, 1, args.code)
    try:
        asyncio.run(_warm(server.url, OVERLOAD_POOL))
        run = run_overload(server.url, plan, OVERLOAD_POOL, first_id=500_000_000)
    finally:
        server.close()
    if args.records is not None:
        args.records.write_text(json.dumps(run))
    print("\n".join(timeline(run)))
    print("\n".join(summary(run)))


def _load() -> str:
    """The machine's load average now: the figures move with it (it is shared)."""
    return "load average " + " ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    """Parse the options; run the parts asked for; print their tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs: 1+3 s rows, a 10 s overload, 15 s after"
    )
    parser.add_argument("--parts", nargs="+", default=["throughput", "physicians", "overload"])
    parser.add_argument("--code", type=Path, help="run pacsfed serve from this tree (PYTHONPATH) instead")
    parser.add_argument("--sources", type=int, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50, 200])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warm-s", type=float, default=None, help="warm-up per row (default 2, quick 1)")
    parser.add_argument("--measure-s", type=float, default=None, help="measured per row (default 8, quick 3)")
    parser.add_argument("--overload-clients", type=int, default=400)
    parser.add_argument("--overload-s", type=float, default=None, help="default 20, quick 10")
    parser.add_argument("--after-s", type=float, default=None, help="default 30, quick 15")
    parser.add_argument("--records", type=Path, help="write the overload run's records here (JSON)")
    args = parser.parse_args()
    # Stopped by `timeout` or kill: unwind, so that every server, simulator and node started here stops too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.warm_s = args.warm_s or (1.0 if args.quick else 2.0)
    args.measure_s = args.measure_s or (3.0 if args.quick else 8.0)
    args.overload_s = args.overload_s or (10.0 if args.quick else 20.0)
    args.after_s = args.after_s or (15.0 if args.quick else 30.0)
    print(f"pacsfed serve from: {served_from(args.code)}; {_load()}")
    with elasticsearch() as es_url, hospitals(LATENCY_S) as qido:
        es_pid = java_pid_listening(httpx.URL(es_url).port or 9200)
        prefix = f"pacsfed-bench-load-{int(time.time())}"
        if "throughput" in args.parts:
            server = Server(es_url, prefix, qido, args.sources, 1, args.code)
            try:
                asyncio.run(_warm(server.url, CACHED_POOL))
            finally:
                server.close()
            _throughput(args, es_url, qido, prefix, es_pid)
        if "physicians" in args.parts:
            _physicians(args, es_url, qido, prefix, es_pid)
        if "overload" in args.parts:
            _overload(args, es_url, qido, prefix)
        print(f"\nat the end: {_load()}")


if __name__ == "__main__":
    main()
