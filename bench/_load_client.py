"""Load clients in a process of their own: groups of concurrent GraphQL callers, one record per answer.

Run by ``bench.load`` as ``python -m bench._load_client SPEC_JSON``; prints a JSON list of
records on stdout when every group has stopped. Times are ``time.monotonic()`` (CLOCK_MONOTONIC,
the same clock in every process of the machine), so the driver lines them up with its own.

A group: ``clients`` callers, each asking one query after the other from ``start_at`` until
``stop_at`` (a query under way then finishes), with ``freshness`` (None: the API's default) for
patients either ``fresh`` (a new id each query, from ``first_id`` on; no two callers share one)
or drawn at random from ``pool`` (ids ``pool[0]`` to ``pool[1] - 1``). After a 503 a caller
waits as its Retry-After says (at most 5 s), as a well-behaved client does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import httpx

FIELDS = "complete exams { studyInstanceUid } sources { status }"
QUERY = "query($id: String!) { patientHistory(patient: {id: $id}) { " + FIELDS + " } }"
QUERY_FRESHNESS = (
    "query($id: String!, $f: Freshness!) { patientHistory(patient: {id: $id}, freshness: $f) { "
    + FIELDS
    + " } }"
)


def patient_id(number: int) -> str:
    """The patient id the simulated hospitals answer for (their UIDs end in its number)."""
    return f"LOAD{number}"


def _record(group: str, started: float, response: httpx.Response | None, error: str | None) -> dict[str, Any]:
    """One answer: when, HTTP status, error code, exams, complete, and each source status counted."""
    record: dict[str, Any] = {"g": group, "t0": started, "t1": time.monotonic(), "http": 0, "code": error}
    if response is None:
        return record
    record["http"] = response.status_code
    try:
        body = response.json()
    except ValueError:
        record["code"] = record["code"] or "NOT_JSON"
        return record
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        record["code"] = (errors[0].get("extensions") or {}).get("code") or "GRAPHQL_ERROR"
    history = (body.get("data") or {}).get("patientHistory") if isinstance(body, dict) else None
    if history:
        record["exams"] = len(history["exams"])
        record["complete"] = bool(history["complete"])
        record["statuses"] = dict(Counter(s["status"] for s in history["sources"]))
    return record


def _retry_after_s(response: httpx.Response) -> float:
    """The wait a 503 asks for (Retry-After in seconds; 1 s without one), at most 5 s."""
    try:
        return min(5.0, max(0.0, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


async def _caller(
    client: httpx.AsyncClient, group: dict[str, Any], ids: itertools.count[int], out: list[dict[str, Any]]
) -> None:
    """One client: query after query until the group's stop time."""
    freshness = group.get("freshness")
    text = QUERY if freshness is None else QUERY_FRESHNESS
    pool = group.get("pool")
    await asyncio.sleep(max(0.0, group["start_at"] - time.monotonic()))
    while time.monotonic() < group["stop_at"]:
        number = random.randrange(pool[0], pool[1]) if pool else next(ids)  # noqa: S311 - not security
        variables: dict[str, Any] = {"id": patient_id(number)}
        if freshness is not None:
            variables["f"] = freshness
        started = time.monotonic()
        try:
            response = await client.post("/graphql", json={"query": text, "variables": variables})
        except httpx.HTTPError as exc:
            out.append(_record(group["name"], started, None, f"CLIENT_{type(exc).__name__}"))
            continue
        out.append(_record(group["name"], started, response, None))
        if response.status_code == 503:  # as a page would: wait as told (at most 5 s), then ask again
            await asyncio.sleep(_retry_after_s(response))


async def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every group's callers at once, on one connection pool; their records."""
    callers = sum(group["clients"] for group in spec["groups"])
    limits = httpx.Limits(max_connections=callers, max_keepalive_connections=callers)
    out: list[dict[str, Any]] = []
    async with httpx.AsyncClient(
        base_url=spec["url"], limits=limits, timeout=spec.get("timeout_s", 60.0)
    ) as client:
        tasks = []
        for group in spec["groups"]:
            ids = itertools.count(group.get("first_id", 0))
            tasks += [_caller(client, group, ids, out) for _ in range(group["clients"])]
        await asyncio.gather(*tasks)
    return out


def main() -> None:
    """Run the spec given as the only argument; print the records as JSON."""
    spec = json.loads(sys.argv[1])
    json.dump(asyncio.run(run(spec)), sys.stdout)


if __name__ == "__main__":
    main()
