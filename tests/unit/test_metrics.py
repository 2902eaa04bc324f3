"""The engine's observer as Prometheus series, the counters that live elsewhere copied once, spans per source query.

The connectors here stand in for outcomes only (an answer, or a refusal); real peers and a served
pacsfed scraped over HTTP are in tests/outside/test_metrics_served.py. The series are read back
with prometheus-client's own parser of the text format.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.access.expiry import cleanup_failures, delete_expired
from federation.audit.records import AuditTrail
from federation.cache.base import MemoryExamCache
from federation.cache.elasticsearch import ElasticsearchExamCache
from federation.engine import FederationEngine
from federation.errors import ConfigError, SourceUnreachable
from federation.models import Deadline, PatientQuery, StudyQuery, StudyRecord
from federation.settings import CacheSettings, Settings
from federation.settings_observability import TelemetrySettings
from pacsfed import telemetry
from pacsfed.app import create_app
from pacsfed.metrics import MULTIPROCESS_DIR_ENV, Metrics
from pacsfed.telemetry import SPAN_NAME, SourceTracing, source_tracing
from pacsfed.workers import metrics_dir

QUERY = PatientQuery(patient_id="PA-001")


class Answering(Connector):
    """Answers one study, or (``down``) refuses the connection as a stopped PACS does."""

    kind = "answering"

    def __init__(self, source_id: str, *, down: bool = False) -> None:
        settings = DicomwebSourceSettings(
            id=source_id, kind="dicomweb", url="http://unused", circuit={"failures": 1, "reset_s": 600}
        )
        super().__init__(settings, ConnectorContext())
        self.down = down

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        if self.down:
            raise SourceUnreachable("connection refused")
        return SourceAnswer(
            [StudyRecord(source_id=self.id, study_instance_uid="1.2.3", patient_id=query.patient_id)]
        )

    async def ping(self, deadline: Deadline) -> None:
        return None


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels."""
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_each_source_s_outcome_latency_fan_out_and_cache_reads_are_series_by_source() -> None:
    metrics = Metrics()
    engine = FederationEngine(
        [Answering("hosp-a"), Answering("hosp-b", down=True)], MemoryExamCache(), observer=metrics
    )
    await engine.patient_history(QUERY)  # both live: a cache miss each
    await engine.patient_history(QUERY)  # hosp-a from the cache, hosp-b's circuit open: skipped
    found = samples(metrics)

    def count(source: str, status: str, cached: str = "false") -> float:
        labels = (("cached", cached), ("source", source), ("status", status))
        return found.get(("pacsfed_source_queries_total", labels), 0)

    assert count("hosp-a", "OK") == 1 and count("hosp-a", "OK", cached="true") == 1
    assert count("hosp-b", "UNREACHABLE") == 1 and count("hosp-b", "SKIPPED") == 1
    latency = {
        source: found[("pacsfed_source_query_duration_seconds_count", (("source", source),))]
        for source in ("hosp-a", "hosp-b")
    }
    assert latency == {"hosp-a": 1, "hosp-b": 1}  # live answers only
    assert found[("pacsfed_query_fanout_sources_count", ())] == 2
    assert found[("pacsfed_query_fanout_sources_sum", ())] == 2  # 2 sources, then none
    assert found[("pacsfed_cache_lookups_total", (("result", "hit"),))] == 1
    assert found[("pacsfed_cache_lookups_total", (("result", "miss"),))] == 3
    await engine.aclose()


async def test_counters_living_in_the_engine_are_copied_not_counted_twice() -> None:
    metrics = Metrics()
    engine = FederationEngine([Answering("hosp-b", down=True)], None, observer=metrics)
    await engine.patient_history(QUERY)
    for _ in range(3):  # every scrape copies: growth once, however often it runs
        metrics.sync(engine, cast(AuditTrail, object()))  # no journal: the engine's side only
    found = samples(metrics)
    assert found[("pacsfed_circuit_state", (("source", "hosp-b"),))] == 2  # open
    transitions = (("source", "hosp-b"), ("transition", "CLOSED->OPEN"))
    assert found[("pacsfed_circuit_transitions_total", transitions)] == 1
    assert engine.load_counters()["circuit_transitions"] == {"hosp-b": {"CLOSED->OPEN": 1}}
    assert found[("pacsfed_pending_queries", ())] == 0
    await engine.aclose()


async def test_clean_up_and_cache_maintenance_failures_are_copied_into_the_series_and_readyz(
    tmp_path: Path,
) -> None:
    down = CacheSettings(url="http://127.0.0.1:9", index_prefix="pacsfed-unit-down", request_timeout_s=1)
    cache = ElasticsearchExamCache(down)  # never started: no maintenance task, no connection made
    index = "pacsfed-unit-down-shares"
    await delete_expired(cache.client, index, "expires_at", "2020-01-01")  # refused: logged, counted
    cache.maintenance_failures = 2  # what two failed hourly rounds leave (tested in test_cache_lifecycle)
    metrics = Metrics()
    engine = FederationEngine([], cache, observer=metrics)
    for _ in range(2):  # copied: growth once, however often a scrape runs
        metrics.sync(engine, cast(AuditTrail, object()))
    found = samples(metrics)
    assert found[("pacsfed_cleanup_failures_total", (("index", index),))] == cleanup_failures()[index] >= 1
    assert found[("pacsfed_cache_maintenance_failures_total", ())] == 2
    await engine.aclose()
    settings = Settings(cache={"backend": "memory"}, audit={"journal_dir": str(tmp_path / "journal")})
    app = create_app(settings, insecure_dev=True)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as client:
            ready = (await client.get("/readyz")).json()
    assert ready["maintenance_failures"] == {"cache": 0, "cleanup": cleanup_failures()}


async def test_a_span_opens_around_each_source_query_when_telemetry_is_on() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    metrics = Metrics()
    metrics.source_span = SourceTracing(provider.get_tracer("test")).opener
    engine = FederationEngine([Answering("hosp-a"), Answering("hosp-b", down=True)], None, observer=metrics)
    await engine.patient_history(QUERY)
    spans = sorted(exported.get_finished_spans(), key=lambda span: str(span.attributes))
    assert [span.name for span in spans] == [SPAN_NAME, SPAN_NAME]
    assert [span.attributes["pacsfed.source.id"] for span in spans if span.attributes] == ["hosp-a", "hosp-b"]
    assert [span.status.status_code.name for span in spans] == ["UNSET", "ERROR"]
    assert "PA-001" not in repr([(span.attributes, span.events) for span in spans])
    await engine.aclose()


def test_telemetry_off_opens_no_span_and_imports_no_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_import(name: str) -> object:
        raise AssertionError(f"{name} imported with telemetry off")

    monkeypatch.setattr(telemetry.importlib, "import_module", no_import)
    assert source_tracing(TelemetrySettings()) is None
    app = create_app(Settings(cache={"backend": "memory"}), insecure_dev=True)
    assert app.state.metrics.source_span is None  # the engine's hot path: one `is None` per request


def test_each_run_of_workers_gets_an_empty_metrics_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_4242.db").write_bytes(b"a previous run's counts")
    monkeypatch.setenv(MULTIPROCESS_DIR_ENV, str(given))
    assert metrics_dir() is None and not list(given.iterdir())  # the operator's: emptied, kept
    monkeypatch.delenv(MULTIPROCESS_DIR_ENV)
    made = metrics_dir()
    try:
        assert made is not None and made.is_dir() and os.environ[MULTIPROCESS_DIR_ENV] == str(made)
    finally:
        os.environ.pop(MULTIPROCESS_DIR_ENV, None)
        if made is not None:
            made.rmdir()


def test_telemetry_on_without_opentelemetry_installed_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(telemetry.importlib, "import_module", missing)
    settings = Settings(cache={"backend": "memory"}, telemetry={"enabled": True, "exporter": "console"})
    with pytest.raises(ConfigError, match=r"pacsfed\[telemetry\]"):
        create_app(settings, insecure_dev=True)
