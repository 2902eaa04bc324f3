"""Cache benchmark: bulk write-through rate, and a cached patientHistory against the raw reads it makes.

With N exams in the index (default 1,000,000, spread over 250,000 patients and 4 sources):
- write-through rate: exams per second through ElasticsearchExamCache.store (bulk API);
- a cached ``patientHistory`` (GraphQL, ``freshness: CACHE_ONLY``) against the two real-time
  ``mget`` calls it performs, made directly with the Elasticsearch client: latency ratio
  (goal ≤ 2.0) and cached queries per second.
Uses ELASTICSEARCH_URL, or starts the test node (scripts/install-elasticsearch first).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from federation.app import create_app
from federation.cache import document_id
from federation.cache_elasticsearch import ElasticsearchExamCache, _answer_id
from federation.models import MatchedBy, MatchKind, PatientQuery, SourceInfo, StudyRecord
from federation.settings import settings_from_mapping

SOURCES = [SourceInfo(id=f"hosp-{i}", name=f"Hospital {i}", kind="dicomweb") for i in range(4)]
QUERY = (
    '{ patientHistory(patient: {id: "%s"}, freshness: CACHE_ONLY) { complete exams { studyInstanceUid } } }'
)


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


async def _load(cache: ElasticsearchExamCache, exams: int, per_patient: int) -> float:
    """Write ``exams`` studies (one source answer per patient and source); return exams per second."""
    patients = exams // (per_patient * len(SOURCES))
    started = time.perf_counter()
    batch: list[asyncio.Task[None]] = []
    for patient in range(patients):
        query = PatientQuery(patient_id=f"P{patient:07d}")
        for source in SOURCES:
            batch.append(
                asyncio.ensure_future(cache.store(source, query, _records(patient, source, per_patient)))
            )
        if len(batch) >= 64:
            await asyncio.gather(*batch)
            batch.clear()
    await asyncio.gather(*batch)
    return patients * len(SOURCES) * per_patient / (time.perf_counter() - started)


async def _compare(url: str, prefix: str, patients: int, runs: int) -> tuple[float, float, float]:
    sources = [{"id": s.id, "kind": "dicomweb", "url": "http://127.0.0.1:9/unused"} for s in SOURCES]
    settings = settings_from_mapping({"cache": {"url": url, "index_prefix": prefix}, "sources": sources})
    app = create_app(settings)
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
                    index=cache.answers_index, ids=[_answer_id(key, s.id) for s in SOURCES]
                )
                ids = [
                    document_id(d["_source"]["source_id"], uid)
                    for d in answers["docs"]
                    for uid in d["_source"]["study_uids"]
                ]
                await cache.client.mget(index=cache.index, ids=ids)
                raw.append(time.perf_counter() - started)
                started = time.perf_counter()
                body = (await client.post("/graphql", json={"query": QUERY % pid})).json()
                whole.append(time.perf_counter() - started)
                assert body["data"]["patientHistory"]["complete"], body
            started = time.perf_counter()
            for run in range(runs):
                await client.post("/graphql", json={"query": QUERY % f"P{(run * 104729) % patients:07d}"})
            qps = runs / (time.perf_counter() - started)
    await cache.aclose()
    return statistics.median(raw), statistics.median(whole), qps


def main() -> None:
    """Load, then compare; print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exams", type=int, default=1_000_000)
    parser.add_argument("--per-patient", type=int, default=1)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    node = None
    url = os.environ.get("ELASTICSEARCH_URL")
    if not url:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from peers.elasticsearch import ElasticsearchNode  # the test harness's node

        node = (
            ElasticsearchNode(heap="1g")
            if "heap" in ElasticsearchNode.__init__.__code__.co_varnames
            else ElasticsearchNode()
        )
        node.start()
        url = node.url
    try:
        prefix = f"pacsfed-bench-{int(time.time())}"
        settings = settings_from_mapping(
            {"cache": {"url": url, "index_prefix": prefix, "request_timeout_s": 60}}
        )
        cache = ElasticsearchExamCache(settings.cache)

        async def load() -> float:
            await cache.start()
            rate = await _load(cache, args.exams, args.per_patient)
            await cache.aclose()
            return rate

        rate = asyncio.run(load())
        patients = args.exams // (args.per_patient * len(SOURCES))
        raw, whole, qps = asyncio.run(_compare(url, prefix, patients, args.runs))
        print(f"exams in the index: {args.exams:,} ({patients:,} patients x {len(SOURCES)} sources)")
        print(f"bulk write-through: {rate:,.0f} exams/s")
        print(
            f"cached patientHistory / raw mget pair (p50): {whole / raw:.2f}  ({whole * 1000:.1f} ms / {raw * 1000:.1f} ms)"
        )
        print(f"cached queries per second (sequential, one client): {qps:,.0f}")
    finally:
        if node is not None:
            node.close()


if __name__ == "__main__":
    main()
