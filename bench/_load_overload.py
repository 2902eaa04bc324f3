"""The overload run of ``bench.load``: 400 clients for a while, then only the two probes; a timeline.

Two probe clients run throughout (a physician opening a new patient, default freshness, and
one reopening a cached patient): alone for a few seconds first (the baseline), then among the
load, then alone again. The load: LIVE-ish clients on new patients (default freshness: every
source is asked) and cached clients on patients whose answers were cached just before the run
(default freshness and ``CACHE_ONLY``, alternately). /readyz is read twice a second.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench._load_processes import collect, start_clients

_CACHED_SHARE = 0.25
"""Of the load's clients, the share reading cached patients."""


@dataclass(frozen=True)
class OverloadPlan:
    """How long each phase lasts and how many clients load the server."""

    clients: int = 400
    before_s: float = 4.0
    load_s: float = 20.0
    after_s: float = 30.0


def _group(name: str, clients: int, start: float, stop: float, **more: Any) -> dict[str, Any]:
    return {"name": name, "clients": clients, "start_at": start, "stop_at": stop, **more}


def _specs(
    url: str, plan: OverloadPlan, t0: float, pool: tuple[int, int], first_id: int
) -> list[dict[str, Any]]:
    """Two client processes: the probes and half the load in one, the other half in the other."""
    load_at, load_end, end = (
        t0 + plan.before_s,
        t0 + plan.before_s + plan.load_s,
        t0 + plan.before_s + plan.load_s + plan.after_s,
    )
    cached = round((plan.clients - 2) * _CACHED_SHARE)
    live = plan.clients - 2 - cached
    specs = []
    for index in range(2):
        groups = []
        if index == 0:
            groups += [
                _group("probe-live", 1, t0, end, first_id=first_id),
                _group("probe-cached", 1, t0, end, pool=list(pool)),
            ]
        share = (live + index) // 2, (cached + index) // 2
        groups += [
            _group("live", share[0], load_at, load_end, first_id=first_id + (index + 1) * 1_000_000),
            _group("cached", share[1] - share[1] // 2, load_at, load_end, pool=list(pool)),
            _group("cached", share[1] // 2, load_at, load_end, pool=list(pool), freshness="CACHE_ONLY"),
        ]
        specs.append({"url": url, "groups": [g for g in groups if g["clients"]], "timeout_s": 60.0})
    return specs


async def _watch_readyz(
    url: str, until: float, reasons: list[tuple[float, str]]
) -> list[tuple[float, int, str]]:
    """(time, breakers not CLOSED, status) twice a second until UNTIL; REASONS gains why degraded."""
    seen: list[tuple[float, int, str]] = []
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                body = (await client.get(f"{url}/readyz")).json()
                circuits = body.get("circuits") or {}
                opened = sum(1 for state in circuits.values() if state != "CLOSED")
                seen.append((started, opened, str(body.get("status"))))
                if body.get("status") != "ready":
                    cache = body.get("cache") or {}
                    why = body.get("reason") or f"cache {cache.get('status')}: {cache.get('detail')}"
                    reasons.append((started, str(why)))
            except (httpx.HTTPError, ValueError):
                seen.append((started, -1, "no answer"))
            await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))
    return seen


def run_overload(url: str, plan: OverloadPlan, pool: tuple[int, int], first_id: int) -> dict[str, Any]:
    """Run the plan against URL; the records, the /readyz readings and the phase times."""
    t0 = time.monotonic() + 2.0  # the client processes import httpx meanwhile
    processes = [start_clients(spec) for spec in _specs(url, plan, t0, pool, first_id)]
    end = t0 + plan.before_s + plan.load_s + plan.after_s
    reasons: list[tuple[float, str]] = []
    readyz = asyncio.run(_watch_readyz(url, end, reasons))
    records = [record for process in processes for record in collect(process)]
    load_at = t0 + plan.before_s
    return {
        "records": records,
        "readyz": readyz,
        "reasons": reasons,
        "load_at": load_at,
        "load_end": load_at + plan.load_s,
    }


def _is_cached(record: dict[str, Any]) -> bool:
    return str(record["g"]).endswith("cached")


def _all_skipped(record: dict[str, Any]) -> bool:
    statuses = record.get("statuses") or {}
    return record.get("exams") == 0 and bool(statuses) and set(statuses) == {"SKIPPED"}


def _none_answered(record: dict[str, Any]) -> bool:
    """0 exams and no source answered (each SKIPPED, BUSY or TIMEOUT): a useless answer, however honest."""
    statuses = record.get("statuses") or {}
    return record.get("exams") == 0 and bool(statuses) and set(statuses) <= {"SKIPPED", "BUSY", "TIMEOUT"}


def _overloaded(record: dict[str, Any]) -> bool:
    return record["http"] == 503 or record["code"] == "OVERLOADED"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}" if whole else "    -"


def timeline(run: dict[str, Any]) -> list[str]:
    """One line per second, from the baseline to the end: what the answers were that second.

    Open breakers: the most /readyz listed as not CLOSED that second (``?``: /readyz did not
    answer within 5 s); none answered: 0 exams and every source SKIPPED, BUSY or TIMEOUT (the
    shares are of that second's answers); errors: answers without a history, not 503/OVERLOADED.
    """
    records: Sequence[dict[str, Any]] = run["records"]
    load_at = run["load_at"]
    lines = [
        f"{'t (s)':>6} {'answered q/s':>13} {'all SKIPPED 0 exams %':>22} {'none answered %':>16}"
        f" {'503/OVERLOADED %':>17}"
        f" {'cached 0 exams %':>17} {'errors':>7} {'open breakers':>14} {'p50 ms':>8}  readyz"
    ]
    first = int((min(r["t1"] for r in records) - load_at) // 1)
    last = int((max(r["t1"] for r in records) - load_at) // 1)
    for second in range(first, last + 1):
        start = load_at + second
        done = [r for r in records if start <= r["t1"] < start + 1]
        answered = [r for r in done if r["http"] == 200 and "exams" in r]
        cached = [r for r in answered if _is_cached(r)]
        errors = sum(1 for r in done if "exams" not in r and not _overloaded(r))
        polls = [(n, status) for t, n, status in run["readyz"] if start <= t < start + 1]
        opened = max((n for n, _ in polls), default=-1)
        statuses = sorted({status for _, status in polls})
        p50 = statistics.median(r["t1"] - r["t0"] for r in answered) * 1000 if answered else float("nan")
        lines.append(
            f"{second:>6} {len(answered):>13} {_pct(sum(map(_all_skipped, answered)), len(answered)):>22}"
            f" {_pct(sum(map(_none_answered, answered)), len(answered)):>16}"
            f" {_pct(sum(map(_overloaded, done)), len(done)):>17}"
            f" {_pct(sum(1 for r in cached if r['exams'] == 0), len(cached)):>17} {errors:>7}"
            f" {opened if opened >= 0 else '?':>14} {p50:>8.0f}  {','.join(statuses)}"
        )
    return lines


def _took(run: Sequence[dict[str, Any]]) -> list[float]:
    return [r["t1"] - r["t0"] for r in run]


def _good(record: dict[str, Any]) -> bool:
    """A probe's answer as before the load: complete, and with exams for a cached patient."""
    if record.get("exams") is None or not record.get("complete"):
        return False
    return not (_is_cached(record) and record["exams"] == 0)


def _back_after(probes: list[dict[str, Any]], load_end: float, check: Any, window: int = 1) -> float | None:
    """Seconds after the load ended until CHECK holds from then on (None: never within the run).

    CHECK takes a run of WINDOW answers in a row (``window`` > 1: a rolling median, so that one
    slow answer on this shared machine does not stand for the server's state).
    """
    after = sorted((r for r in probes if r["t1"] >= load_end), key=lambda r: r["t0"])
    runs = [after[i : i + window] for i in range(max(0, len(after) - window + 1))]
    if not runs or not check(runs[-1]):
        return None
    index = len(runs)
    while index > 0 and check(runs[index - 1]):
        index -= 1
    return 0.0 if index == 0 else max(0.0, runs[index][0]["t0"] - load_end)


def summary(run: dict[str, Any]) -> list[str]:
    """The goals of issue 16 item 5, read from the run."""
    records: Sequence[dict[str, Any]] = run["records"]
    load_at, load_end = run["load_at"], run["load_end"]
    lines = []
    for kind in ("probe-live", "probe-cached"):
        probes = [r for r in records if r["g"] == kind]
        base = [r["t1"] - r["t0"] for r in probes if r["t1"] < load_at and r.get("complete")]
        if len(base) < 2:
            lines.append(f"{kind}: too few answers before the load for a baseline")
            continue
        p50 = statistics.median(base)
        limit = max(1.5 * p50, statistics.quantiles(base, n=100, method="inclusive")[98])
        latency = _back_after(
            probes, load_end, lambda run, limit=limit: statistics.median(_took(run)) <= limit, window=5
        )
        answers = _back_after(probes, load_end, lambda run: _good(run[0]))
        lines.append(
            f"{kind}: baseline p50 {p50 * 1000:.0f} ms; latency back (median of 5 in a row within"
            f" {limit * 1000:.0f} ms = max(1.5 p50, p99)) {_seconds(latency)} after the load ended;"
            f" every answer complete{' with exams' if kind.endswith('cached') else ''} again {_seconds(answers)} after"
        )
    during = [r for r in records if load_at <= r["t1"] < load_end + 5 and _is_cached(r) and "exams" in r]
    lost = sum(1 for r in during if r["exams"] == 0)
    skipped = [r for r in records if r["t1"] >= load_at and "exams" in r]
    opened = max((n for t, n, _ in run["readyz"] if t >= load_at), default=-1)
    codes = Counter(str(r["code"]) for r in records if r["t1"] >= load_at and "exams" not in r)
    lines.append(
        "answers without a history from the load on: "
        + (", ".join(f"{code} {count}" for code, count in codes.most_common()) or "none")
    )
    lines.append(
        f"cached patients answered with 0 exams, load + 5 s: {lost} of {len(during)} ({_pct(lost, len(during)).strip()} %);"
        f" from the load on, answers all SKIPPED with 0 exams: {sum(map(_all_skipped, skipped))} of {len(skipped)},"
        f" no source answered: {sum(map(_none_answered, skipped))};"
        f" most breakers open at once: {opened if opened >= 0 else '?'} (healthy hospitals: goal 0)"
    )
    after = [(t - load_end, why) for t, why in run.get("reasons", ()) if t >= load_end]
    if after:
        kinds = Counter(re.sub(r"\d+", "N", why) for _, why in after)
        lines.append(
            f"/readyz not ready after the load: {len(after)} readings, the last {after[-1][0]:.1f} s after; "
            + "; ".join(f"{count}x {why!r}" for why, count in kinds.most_common(4))
        )
    else:
        lines.append("/readyz ready at every reading after the load")
    return lines


def _seconds(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "NOT within the run"
