"""DIMSE fan-out benchmark: one GraphQL patientHistory over N simulated DIMSE PACS that answer after L.

For N = 30 and 200 (issue 16), prints the p50 and p99 of the whole query divided by L, next to
a floor measured in the same run: a raw asyncio C-FIND client (``bench/_dimse_floor.py``, no
pacsfed code) holding one open association per PACS, sending one C-FIND on each at once and
reading the pending responses until the final one. The ratio pacsfed / floor is printed against
the goals (≤ 1.15 at 30 sources, ≤ 1.3 at 200), with the CPU ms per query of each.

The PACS are one separate, lean process (``bench/_dimse_server.py``): every association is
accepted, each C-FIND answered with the demo patient's 3 studies as pending responses then
success, after L to within ~0.1 ms, busy-polling between queries so that the time an idle CPU
takes to wake up is not charged to pacsfed. The sources use the connector's defaults (its
association pool: the first runs, not counted, open the associations, later runs reuse them).
For each N, half the floor's runs come before pacsfed's (in a fresh app), half after it, so that
both see the same machine; CPU ms/query is this process's CPU time per query, every thread
included. A run where some source did not answer within the 10 s deadline counts its whole
time and is counted as incomplete.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time

from bench._dimse_bench import (
    CALLED_AE,
    WARM_UP_DEADLINE_MS,
    dimse_sources,
    graphql_client,
    os_threads,
    patient_history,
    settle,
    simulator,
)
from bench._dimse_floor import FloorAssociation, study_identifier

GOALS = {30: 1.15, 200: 1.3}
_WARM_UP = 3


async def _pacsfed(n_sources: int, port: int, runs: int) -> tuple[list[float], float, int]:
    """The timings and CPU per query of the whole GraphQL query, and how many runs were incomplete."""
    timings: list[float] = []
    cpu = 0.0
    incomplete = 0
    async with graphql_client(dimse_sources(n_sources, port)) as client:
        for _ in range(_WARM_UP):  # the first runs open the associations
            await patient_history(client, WARM_UP_DEADLINE_MS)
        for _ in range(runs):
            started, cpu_started = time.perf_counter(), time.process_time()
            complete = await patient_history(client)
            timings.append(time.perf_counter() - started)
            cpu += time.process_time() - cpu_started
            incomplete += not complete
    return timings, cpu / runs, incomplete


async def _floor(n_sources: int, port: int, runs: int) -> tuple[list[float], float]:
    """N kept associations, one C-FIND each, concurrently: the cost of the protocol alone."""
    associations = [await FloorAssociation.open("127.0.0.1", port, CALLED_AE) for _ in range(n_sources)]
    timings: list[float] = []
    cpu = 0.0
    try:
        for run in range(runs + _WARM_UP):
            started, cpu_started = time.perf_counter(), time.process_time()
            identifier = study_identifier("DEMO-001")
            answers = await asyncio.gather(*(a.find(identifier) for a in associations))
            if run >= _WARM_UP:
                timings.append(time.perf_counter() - started)
                cpu += time.process_time() - cpu_started
            if any(len(studies) != 3 for studies in answers):
                raise SystemExit("the floor client did not get the 3 studies from every PACS")
    finally:
        for association in associations:
            await association.release()
    return timings, cpu / max(runs, 1)


def p99(values: list[float]) -> float:
    """The 99th percentile (inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each (at least 2)")
    parser.add_argument("--sources", type=int, nargs="+", default=[30, 200])
    parser.add_argument(
        "--sim-sleeps-when-idle",
        action="store_true",
        help="let the simulated PACS sleep between queries (on this VM it then reads them ~2 ms late)",
    )
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    baseline_threads = os_threads()
    with simulator(latency, args.sim_sleeps_when_idle) as port:
        print(f"DIMSE fan-out: whole GraphQL query / L (L = {args.latency_ms:.0f} ms, {args.runs} runs each)")
        print(
            f"{'sources':>8} {'p50/L':>7} {'p99/L':>7} {'floor p50/L':>12} {'floor p99/L':>12}"
            f" {'p50 ratio':>10} {'goal':>12} {'CPU ms/query':>13} {'floor CPU ms':>13} {'incomplete':>11}"
        )
        for n in args.sources:
            # Half the floor's runs before pacsfed's, half after: both see the machine's load of the moment.
            before, before_cpu = asyncio.run(_floor(n, port, args.runs // 2))
            timings, cpu, incomplete = asyncio.run(_pacsfed(n, port, args.runs))
            settle(baseline_threads)  # the app's released associations end their threads
            after, after_cpu = asyncio.run(_floor(n, port, args.runs - args.runs // 2))
            floor = before + after
            floor_cpu = (before_cpu * len(before) + after_cpu * len(after)) / len(floor)
            p50, floor_p50 = statistics.median(timings) / latency, statistics.median(floor) / latency
            goal = f"{GOALS[n]:.2f}" if n in GOALS else "-"
            if n in GOALS and p50 / floor_p50 > GOALS[n]:
                goal += " MISSED"
            print(
                f"{n:>8} {p50:>7.2f} {p99(timings) / latency:>7.2f} {floor_p50:>12.2f}"
                f" {p99(floor) / latency:>12.2f} {p50 / floor_p50:>10.2f} {goal:>12}"
                f" {cpu * 1000:>13.1f} {floor_cpu * 1000:>13.1f} {incomplete:>11}"
            )
        print(f"(threads left in this process: {os_threads()}, {threading.active_count()} of them Python's)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (the machine's load moves every figure)")


if __name__ == "__main__":
    main()
