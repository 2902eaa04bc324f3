"""``GET /metrics`` of a served pacsfed, scraped as Prometheus would and read with prometheus-client's parser.

One ``pacsfed serve`` per module (JSON logs, API keys: one account may query, one may read
metrics), and one ``--workers 2 --insecure-dev`` on the suite's Elasticsearch: per-source series
after real queries to a real Orthanc, the sums over both workers, and every log line a JSON event.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import closed_port
from log_hygiene import SessionLogCapture
from peers import PacsfedServer, PeerError
from prometheus_client.parser import text_string_to_metric_families

from federation.access.auth import new_api_key

QUERY = "query($id: String!) { patientHistory(patient: {id: $id}) { sources { source { id } status } } }"
PATIENT = "PA-001"
MIN_QUERIES = 4
MAX_CONNECTIONS = 40


def _served(server: PacsfedServer) -> PacsfedServer:
    try:
        server.start()
    except (PeerError, OSError) as exc:
        server.close()
        pytest.fail(f"pacsfed serve could not be started: {exc}", pytrace=False)
    return server


def scrape(server: PacsfedServer, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Every sample of ``/metrics``, by name and sorted labels, as a Prometheus client parses them."""
    answer = httpx.get(f"{server.url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def by_source(samples: dict[str, Any], name: str, source: str) -> float:
    """The sum of ``name``'s samples labelled ``source``."""
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and ("source", source) in labels
    )


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, str]]:
    """Account → (key, its SHA-256 for the config)."""
    return {"ehr": new_api_key("ehr"), "prometheus": new_api_key("prometheus")}


@pytest.fixture(scope="module")
def served(
    pacsfed_install: Path,
    tmp_path_factory: pytest.TempPathFactory,
    orthanc_c: Any,
    keys: dict[str, tuple[str, str]],
) -> Iterator[PacsfedServer]:
    config = {
        "cache": {"backend": "memory"},
        "sources": [
            {"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
            {"id": "hosp-down", "kind": "dicomweb", "url": f"http://127.0.0.1:{closed_port()}/dicom-web"},
        ],
        "auth": {
            "mode": "api_key",
            "api_keys": [
                {"id": "ehr", "sha256": keys["ehr"][1], "scopes": ["history:read"]},
                {"id": "prometheus", "sha256": keys["prometheus"][1], "scopes": ["metrics:read"]},
            ],
        },
        "logging": {"format": "json"},
    }
    server = _served(PacsfedServer(pacsfed_install, tmp_path_factory.mktemp("metrics-serve"), config))
    yield server
    server.stop()


def test_metrics_show_per_source_series_after_a_query_to_the_scope_holder_only(
    served: PacsfedServer, keys: dict[str, tuple[str, str]]
) -> None:
    ehr = {"authorization": f"ApiKey {keys['ehr'][0]}"}
    prometheus = {"authorization": f"ApiKey {keys['prometheus'][0]}"}
    body = {"query": QUERY, "variables": {"id": PATIENT}}
    answer = httpx.post(served.graphql_url, json=body, headers=ehr, timeout=30).json()
    statuses = {s["source"]["id"]: s["status"] for s in answer["data"]["patientHistory"]["sources"]}
    assert statuses == {"hosp-c": "OK", "hosp-down": "UNREACHABLE"}

    samples = scrape(served, prometheus)
    ok = ("pacsfed_source_queries_total", (("cached", "false"), ("source", "hosp-c"), ("status", "OK")))
    down = (
        "pacsfed_source_queries_total",
        (("cached", "false"), ("source", "hosp-down"), ("status", "UNREACHABLE")),
    )
    assert samples[ok] == 1 and samples[down] == 1
    for source in ("hosp-c", "hosp-down"):
        assert by_source(samples, "pacsfed_source_query_duration_seconds_count", source) == 1
        assert ("pacsfed_circuit_state", (("source", source),)) in samples
    field = (("field", "patientHistory"), ("operation", "query"))
    assert samples[("pacsfed_graphql_operation_duration_seconds_count", field)] == 1
    assert samples[("pacsfed_query_fanout_sources_sum", ())] == 2
    assert ("pacsfed_audit_shipping_lag_seconds", (("sink", "memory"),)) in samples

    assert httpx.get(f"{served.url}/metrics", headers=ehr, timeout=30).status_code == 403
    assert httpx.get(f"{served.url}/metrics", timeout=30).status_code == 401


def test_every_log_line_is_one_json_event_with_the_request_id_and_no_patient_data(
    served: PacsfedServer, keys: dict[str, tuple[str, str]], request: pytest.FixtureRequest
) -> None:
    request_id = f"metrics-{secrets.token_hex(4)}"
    headers = {"authorization": f"ApiKey {keys['ehr'][0]}", "x-request-id": request_id}
    body = {"query": QUERY, "variables": {"id": PATIENT}}
    httpx.post(served.graphql_url, json=body, headers=headers, timeout=30).raise_for_status()
    served.stop()  # its last lines (shutdown, audit flushed) are out once it has stopped
    harness = "=== pacsfed test harness"  # the test harness's own lines in the process's log file
    lines = [line for line in served.log_text().splitlines() if not line.startswith(harness)]
    events = [json.loads(line) for line in lines if line.strip()]
    assert events and all({"time", "level", "logger", "message"} <= event.keys() for event in events)
    ours = [event for event in events if event.get("request_id") == request_id]
    assert any(event["logger"].startswith("federation") for event in ours), events[-10:]
    # The session's log hygiene test reads these lines too (it runs last).
    request.config.stash[SessionLogCapture.KEY].lines.extend(lines)


@pytest.fixture(scope="module")
def two_workers(
    pacsfed_install: Path, tmp_path_factory: pytest.TempPathFactory, orthanc_c: Any, elasticsearch: Any
) -> Iterator[PacsfedServer]:
    config = {
        "cache": {
            "backend": "elasticsearch",
            "url": elasticsearch.url,
            "index_prefix": f"metrics-{secrets.token_hex(4)}",
        },
        "sources": [{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}],
        "auth": {"mode": "none"},
    }
    server = PacsfedServer(
        pacsfed_install,
        tmp_path_factory.mktemp("metrics-workers"),
        config,
        insecure_dev=True,
        extra_args=("--workers", "2"),
    )
    yield _served(server)
    server.stop()


def test_with_two_workers_one_scrape_sums_what_both_workers_counted(two_workers: PacsfedServer) -> None:
    served_by: list[int] = []
    body = {"query": QUERY, "variables": {"id": PATIENT}}
    while len(served_by) < MAX_CONNECTIONS and not (
        len(served_by) >= MIN_QUERIES and len(set(served_by)) == 2
    ):
        with httpx.Client(timeout=30) as connection:  # a new connection: the kernel picks its worker
            served_by.append(connection.get(f"{two_workers.url}/healthz").json()["worker"])
            answer = connection.post(two_workers.graphql_url, json=body).json()  # the same worker
            assert answer["data"]["patientHistory"]["sources"] == [
                {"source": {"id": "hosp-c"}, "status": "OK"}
            ]
    assert set(served_by) == {0, 1}, served_by
    samples = scrape(two_workers)  # open with --insecure-dev; whichever worker answers
    assert by_source(samples, "pacsfed_source_queries_total", "hosp-c") == len(served_by)
    operations = (("field", "patientHistory"), ("operation", "query"))
    assert samples[("pacsfed_graphql_operation_duration_seconds_count", operations)] == len(served_by)
    assert samples[("pacsfed_circuit_state", (("source", "hosp-c"),))] == 0
