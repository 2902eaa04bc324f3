"""DIMSE idle-cost benchmark: the CPU and threads of a pacsfed process holding pooled associations.

For N = 30 and 200 simulated DIMSE PACS (``bench/_dimse_server.py``, one separate process), a
fresh process of this module starts the app (as ``pacsfed serve --insecure-dev`` builds it,
memory cache), runs one LIVE patientHistory over the N sources, then sits idle with the
associations pooled for IDLE seconds and reports its own CPU time over that span as a
percentage of one core (goal: under 2 %, issue 16), and its thread count (as the kernel counts
them: pynetdicom's included) before the query, after it, and at the end of the idle span
(goal: threads do not grow with the number of sources). The sources keep their associations
for ``association_idle_s`` = 600 s (default 10 s), as a busy emergency department keeps them
open all day; each N runs in its own process so that no thread of an earlier one is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from bench._dimse_bench import (
    WARM_UP_DEADLINE_MS,
    dimse_sources,
    graphql_client,
    os_threads,
    patient_history,
    simulator,
)

IDLE_GOAL_PERCENT = 2.0
KEEP_ASSOCIATIONS_S = 600


async def _one(n_sources: int, port: int, idle_s: float) -> dict[str, float]:
    """Start the app, query once, idle: the figures of this process."""
    sources = dimse_sources(n_sources, port, association_idle_s=KEEP_ASSOCIATIONS_S)
    async with graphql_client(sources) as client:
        await asyncio.sleep(0.5)
        before = os_threads()
        if not await patient_history(client, WARM_UP_DEADLINE_MS):
            raise SystemExit(f"N={n_sources}: a source did not answer within 60 s; the machine is overloaded")
        after = os_threads()
        await asyncio.sleep(0.5)  # let the query's own follow-up work (cache writes, audit) end
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(idle_s)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return {
            "threads_before": before,
            "threads_after_query": after,
            "threads_idle": os_threads(),
            "idle_cpu_percent": 100 * cpu / wall,
        }


def _measure(n_sources: int, port: int, idle_s: float) -> dict[str, float]:
    """Run ``_one`` in a fresh process of this module."""
    command = [sys.executable, "-m", "bench.dimse_idle", "--child", str(n_sources), "--port", str(port)]
    command += ["--idle-s", str(idle_s)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"N={n_sources}: the measuring process failed:\n{done.stderr[-2000:]}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--sources", type=int, nargs="+", default=[30, 200])
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(_one(args.child, args.port, args.idle_s))))
        return
    with simulator(args.latency_ms / 1000) as port:
        print(
            f"DIMSE idle cost after one query, associations pooled ({args.idle_s:.0f} s idle;"
            f" goal: CPU < {IDLE_GOAL_PERCENT:.0f} % of one core, threads not growing with sources)"
        )
        print(
            f"{'sources':>8} {'idle CPU % of a core':>21} {'threads before':>15}"
            f" {'after query':>12} {'after idle':>11}"
        )
        figures = {n: _measure(n, port, args.idle_s) for n in args.sources}
        for n, f in figures.items():
            print(
                f"{n:>8} {f['idle_cpu_percent']:>21.1f} {f['threads_before']:>15.0f}"
                f" {f['threads_after_query']:>12.0f} {f['threads_idle']:>11.0f}"
            )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    worst = max(f["idle_cpu_percent"] for f in figures.values())
    print(
        f"idle CPU goal (< {IDLE_GOAL_PERCENT:.0f} % of one core): {'met' if worst < IDLE_GOAL_PERCENT else 'MISSED'}"
    )
    if len(figures) > 1:
        idle_threads = [f["threads_idle"] for f in figures.values()]
        grows = max(idle_threads) > min(idle_threads)
        print(f"threads with the number of sources: {'GROW' if grows else 'do not grow'} ({idle_threads})")


if __name__ == "__main__":
    main()
