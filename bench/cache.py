"""Cache benchmark: write-through rate, and a cached patientHistory against the raw reads it makes.

- write-through: exams per second through ``ElasticsearchExamCache.store`` with 64 concurrent
  callers (one call per source answer, as the engine makes them), with bulk coalescing off (one
  ``_bulk`` per answer, as before) and on, alternating on fresh patients in the same run;
- the rest of the index is then filled by a direct loader (parallel ``_bulk`` of the same
  documents, ``refresh_interval: -1`` meanwhile), timed; the comparison waits until the node
  has no merge running (as a cache in service is, nearly always);
- a cached ``patientHistory`` (GraphQL, ``freshness: CACHE_ONLY``) against the two real-time
  ``mget`` calls it performs, made directly with the Elasticsearch client, interleaved: the
  latency ratio (goal ≤ 2.0) per round, and cached queries per second (one sequential client);
  each round again with the audit journal on tmpfs, where its fsync costs nothing: the share of
  the ratio that the durable audit record (fsync'd before any answer leaves) takes.

Uses ELASTICSEARCH_URL, or starts the test node (scripts/install-elasticsearch first) with
``--heap`` (default 1g; 2g from 500,000 exams).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from bench._app import bench_app
from federation.cache.base import document_id
from federation.cache.elasticsearch import ElasticsearchExamCache, answer_id, exam_document
from federation.models import MatchedBy, MatchKind, PatientQuery, SourceInfo, StudyRecord
from federation.settings import settings_from_mapping

SOURCES = [SourceInfo(id=f"hosp-{i}", name=f"Hospital {i}", kind="dicomweb") for i in range(4)]
QUERY = (
    "query($id: String!) { patientHistory(patient: {id: $id}, freshness: CACHE_ONLY)"
    " { complete exams { studyInstanceUid } } }"
)
"""One query text with a variable, as a client sends it (the GraphQL document is the same each time)."""
CONCURRENT_WRITES = 64
MEMORY_FS = Path("/dev/shm")  # noqa: S108 - only ever a fresh TemporaryDirectory (0700) inside
"""A tmpfs: each compare round runs again with the audit journal there, to show what its fsync costs."""


def _body(patient_id: str) -> dict[str, Any]:
    return {"query": QUERY, "variables": {"id": patient_id}}


def _graphql_check_s(runs: int) -> float:
    """Seconds graphql-core takes to parse and validate QUERY (standard rules): paid on every request."""
    from graphql import parse, validate

    from schema.query import build_schema

    schema = build_schema().graphql_schema
    started = time.perf_counter()
    for _ in range(runs):
        assert not validate(schema, parse(QUERY))
    return (time.perf_counter() - started) / runs


def _records(patient: int, source: SourceInfo, per_patient: int) -> list[StudyRecord]:
    pid = f"P{patient:07d}"
    return [
        StudyRecord(
            source_id=source.id,
            study_instance_uid=f"1.2.826.0.1.3680043.10.555.{patient}.{n}",
            patient_id=pid,
            patient_name=f"Patient{patient}^Bench",
            patient_birth_date=dt.date(1950 + patient % 60, 1 + patient % 12, 1 + patient % 28),
            study_date=dt.date(2020, 1, 1) + dt.timedelta(days=n),
            modalities=("CT",),
            description="BENCH",
            matched_by=MatchedBy(kind=MatchKind.LOCAL_ID, value=pid),
        )
        for n in range(per_patient)
    ]


async def _write_through(cache: ElasticsearchExamCache, patients: range, per_patient: int) -> float:
    """Store each (patient, source) answer with CONCURRENT_WRITES callers; return exams per second."""
    limit = asyncio.Semaphore(CONCURRENT_WRITES)

    async def one(patient: int, source: SourceInfo) -> None:
        try:
            await cache.store(source, PatientQuery(patient_id=f"P{patient:07d}"), records)
        finally:
            limit.release()

    started = time.perf_counter()
    tasks = []
    for patient in patients:
        for source in SOURCES:
            records = _records(patient, source, per_patient)
            await limit.acquire()
            tasks.append(asyncio.ensure_future(one(patient, source)))
    await asyncio.gather(*tasks)
    return len(patients) * len(SOURCES) * per_patient / (time.perf_counter() - started)


def _bulk_lines(cache: ElasticsearchExamCache, patient: int, per_patient: int, now: dt.datetime) -> list[str]:
    """The NDJSON lines ``store`` would send for every source's answer for this patient."""
    query = PatientQuery(patient_id=f"P{patient:07d}")
    key = query.cache_key() or ""
    lines = []
    for source in SOURCES:
        records = _records(patient, source, per_patient)
        for record in records:
            doc_id = document_id(source.id, record.study_instance_uid)
            lines.append(json.dumps({"index": {"_index": cache.index, "_id": doc_id}}))
            lines.append(json.dumps(exam_document(source, query, record, now)))
        lines.append(json.dumps({"index": {"_index": cache.answers_index, "_id": answer_id(key, source.id)}}))
        answer = {
            "query_key": key,
            "source_id": source.id,
            "answered_at": now.isoformat(),
            "study_uids": [r.study_instance_uid for r in records],
            "matches": [
                {"uid": r.study_instance_uid, "kind": "LOCAL_ID", "value": query.patient_id} for r in records
            ],
        }
        lines.append(json.dumps(answer))
    return lines


async def _direct_load(cache: ElasticsearchExamCache, patients: range, per_patient: int) -> float:
    """Fill the index with parallel bulk requests, refresh off meanwhile; return the seconds taken."""
    client = cache.client
    slow = client.options(request_timeout=120)
    indices = [cache.index, cache.answers_index]
    await client.indices.put_settings(index=indices, settings={"refresh_interval": "-1"})
    queue: asyncio.Queue[list[str] | None] = asyncio.Queue(maxsize=8)
    now = dt.datetime.now(dt.UTC)
    failures = 0

    async def sender() -> None:
        nonlocal failures
        while (lines := await queue.get()) is not None:
            response = await slow.bulk(operations=lines)  # type: ignore[arg-type]
            if response.get("errors"):
                failures += sum(1 for item in response["items"] if item["index"].get("error"))

    started = time.perf_counter()
    senders = [asyncio.ensure_future(sender()) for _ in range(3)]
    lines: list[str] = []
    for patient in patients:
        lines.extend(_bulk_lines(cache, patient, per_patient, now))
        if len(lines) >= 10_000:
            await queue.put(lines)
            lines = []
    if lines:
        await queue.put(lines)
    for _ in senders:
        await queue.put(None)
    await asyncio.gather(*senders)
    await client.indices.put_settings(index=indices, settings={"refresh_interval": "1s"})
    await client.indices.refresh(index=indices)
    if failures:
        raise SystemExit(f"{failures} documents were refused by the direct loader")
    return time.perf_counter() - started


async def _settle(cache: ElasticsearchExamCache, timeout_s: float = 300.0) -> float:
    """Wait until the node has no merge running on the indices (3 checks in a row); the seconds waited.

    Right after a bulk load the node merges segments for minutes, and reads are slower meanwhile:
    a ratio measured then flatters pacsfed. A cache in service is quiescent nearly all the time.
    """
    started = time.perf_counter()
    quiet = 0
    while quiet < 3 and time.perf_counter() - started < timeout_s:
        stats = await cache.client.indices.stats(index=[cache.index, cache.answers_index], metric="merge")
        quiet = quiet + 1 if stats["_all"]["total"]["merges"]["current"] == 0 else 0
        await asyncio.sleep(1.0)
    return time.perf_counter() - started


async def _compare(
    url: str, prefix: str, patients: int, runs: int, journal_dir: Path | None = None
) -> tuple[list[float], list[float], float]:
    """Interleaved raw mget pairs and cached GraphQL queries; then sequential cached queries/s."""
    sources = [{"id": s.id, "kind": "dicomweb", "url": "http://127.0.0.1:9/unused"} for s in SOURCES]
    mapping: dict[str, Any] = {"cache": {"url": url, "index_prefix": prefix}, "sources": sources}
    if journal_dir is not None:
        mapping["audit"] = {"journal_dir": str(journal_dir)}
    settings = settings_from_mapping(mapping)
    app = bench_app(settings)
    cache = ElasticsearchExamCache(settings.cache)
    raw, whole = [], []
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for run in range(runs):
                patient = (run * 7919) % patients
                pid = f"P{patient:07d}"
                key = PatientQuery(patient_id=pid).cache_key() or ""
                started = time.perf_counter()
                answers = await cache.client.mget(
                    index=cache.answers_index, ids=[answer_id(key, s.id) for s in SOURCES]
                )
                ids = [
                    document_id(d["_source"]["source_id"], uid)
                    for d in answers["docs"]
                    for uid in d["_source"]["study_uids"]
                ]
                await cache.client.mget(index=cache.index, ids=ids)
                raw.append(time.perf_counter() - started)
                started = time.perf_counter()
                body = (await client.post("/graphql", json=_body(pid))).json()
                whole.append(time.perf_counter() - started)
                assert body["data"]["patientHistory"]["complete"], body
            started = time.perf_counter()
            for run in range(runs):
                await client.post("/graphql", json=_body(f"P{(run * 104729) % patients:07d}"))
            qps = runs / (time.perf_counter() - started)
    await cache.aclose()
    return raw, whole, qps


def _start_node(heap: str) -> Any:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from peers.elasticsearch import ElasticsearchNode  # the test harness's node

    os.environ["PACSFED_ES_JAVA_OPTS"] = f"-Xms{heap} -Xmx{heap}"
    node = ElasticsearchNode(start_timeout=300)
    node.start()
    return node


def main() -> None:
    """Write through, load, compare; print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--exams", type=int, default=100_000, help="exams in the index (1000000 for the full run)"
    )
    parser.add_argument("--per-patient", type=int, default=5, help="exams per patient and source")
    parser.add_argument("--through", type=int, default=8_000, help="exams per write-through round and mode")
    parser.add_argument(
        "--rounds", type=int, default=2, help="write-through rounds (off, on) and compare rounds"
    )
    parser.add_argument("--runs", type=int, default=200, help="queries per compare round")
    parser.add_argument(
        "--heap", default=None, help="heap of the node started here (default 1g, 2g ≥ 500k exams)"
    )
    args = parser.parse_args()
    per_source = args.per_patient
    patients = args.exams // (per_source * len(SOURCES))
    through_patients = max(1, args.through // (per_source * len(SOURCES)))
    if (2 * args.rounds + 1) * through_patients > patients:
        raise SystemExit("--exams must hold the write-through rounds: raise it or lower --through")
    node = None
    url = os.environ.get("ELASTICSEARCH_URL")
    if not url:
        node = _start_node(args.heap or ("2g" if args.exams >= 500_000 else "1g"))
        url = node.url
    try:
        prefix = f"pacsfed-bench-{int(time.time())}"
        settings = settings_from_mapping(
            {"cache": {"url": url, "index_prefix": prefix, "request_timeout_s": 60}}
        )

        async def load() -> tuple[dict[bool, list[float]], float, int, float]:
            rates: dict[bool, list[float]] = {False: [], True: []}
            caches = {c: ElasticsearchExamCache(settings.cache, coalesce_writes=c) for c in (False, True)}
            for cache in caches.values():
                await cache.start()
            warm_up = max(1, through_patients // 4)
            for coalesce in (False, True):  # a fresh index and a cold JVM are slow at first
                await _write_through(caches[coalesce], range(warm_up), per_source)
            first = warm_up
            for _ in range(args.rounds):
                for coalesce in (False, True):
                    span = range(first, first + through_patients)
                    rates[coalesce].append(await _write_through(caches[coalesce], span, per_source))
                    first += through_patients
            seconds = await _direct_load(caches[True], range(first, patients), per_source)
            stats = await caches[True].client.indices.stats(
                index=[caches[True].index, caches[True].answers_index], metric="store"
            )
            settle_s = await _settle(caches[True])
            for cache in caches.values():
                await cache.aclose()
            return rates, seconds, int(stats["_all"]["primaries"]["store"]["size_in_bytes"]), settle_s

        loaded_at = time.perf_counter()
        rates, direct_s, size, settle_s = asyncio.run(load())
        total_load_s = time.perf_counter() - loaded_at - settle_s
        rounds = []
        for _ in range(args.rounds):
            on_disk = asyncio.run(_compare(url, prefix, patients, args.runs))
            in_memory = None
            if MEMORY_FS.is_dir():  # the same queries with an fsync that costs nothing: its share
                with tempfile.TemporaryDirectory(dir=MEMORY_FS, prefix="pacsfed-bench-audit-") as journal:
                    in_memory = asyncio.run(_compare(url, prefix, patients, args.runs, Path(journal)))
            rounds.append((on_disk, in_memory))
        check_s = _graphql_check_s(args.runs)
        print(
            f"exams in the index: {args.exams:,} ({patients:,} patients x {len(SOURCES)} sources x {per_source})"
        )
        written = (
            (2 * args.rounds * through_patients + max(1, through_patients // 4)) * len(SOURCES) * per_source
        )
        print(
            f"loading: {total_load_s:.0f} s in all ({written:,} exams through store(), the rest by the"
            f" direct loader in {direct_s:.0f} s = {(args.exams - written) / direct_s:,.0f} exams/s);"
            f" index size {size / 1024**2:,.0f} MiB; then {settle_s:.0f} s until no merge ran (reads are"
            f" slower while the node merges)"
        )
        off, on = rates[False], rates[True]
        print(
            f"write-through, one _bulk per answer: {' '.join(f'{r:,.0f}' for r in off)} exams/s;"
            f" coalesced: {' '.join(f'{r:,.0f}' for r in on)} exams/s;"
            f" coalesced / per-answer: {' '.join(f'{b / a:.2f}' for a, b in zip(off, on, strict=True))}"
        )
        ratios = []
        for index, ((raw, whole, qps), in_memory) in enumerate(rounds, 1):
            r50, w50 = statistics.median(raw), statistics.median(whole)
            ratios.append(w50 / r50)
            line = (
                f"round {index}: cached patientHistory / raw mget pair (p50): {w50 / r50:.2f}"
                f"  ({w50 * 1000:.1f} ms / {r50 * 1000:.1f} ms, pacsfed's own {(w50 - r50) * 1000:.1f} ms);"
                f" cached queries/s (sequential): {qps:,.0f}"
            )
            if in_memory is not None:
                m_raw, m_whole = statistics.median(in_memory[0]), statistics.median(in_memory[1])
                line += (
                    f"\n  the same, audit journal on {MEMORY_FS} (its fsync costs nothing):"
                    f" {m_whole / m_raw:.2f}  ({m_whole * 1000:.1f} ms / {m_raw * 1000:.1f} ms,"
                    f" pacsfed's own {(m_whole - m_raw) * 1000:.1f} ms)"
                )
            print(line)
        if len(ratios) > 1:
            print(f"cached / raw, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}")
        print(f"GraphQL parse + validate of the query alone (graphql-core): {check_s * 1000:.1f} ms")
    finally:
        if node is not None:
            node.close()


if __name__ == "__main__":
    main()
