"""The audit trail is complete and cannot be flooded (issue 12, item 4), over HTTP and read back from the stores.

The app runs with JWT authentication in front of the demo's hospitals, with its audit shipped to a
real Elasticsearch node (or, for the shutdown summary, to the local journal alone).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from federation.audit.elasticsearch import AUDIT_MAPPING
from federation.audit.journal import AuditJournal
from federation.audit.trail import JournaledAuditTrail
from federation.settings import settings_from_mapping
from integration.test_security import AUDIT, Api, codes
from pacsfed.app import create_app
from pacsfed.demo import start_demo_hospitals
from pacsfed.demo.signer import DemoSigner

pytestmark = pytest.mark.integration

SEARCH = """query($family: String!, $born: Date!) {
  patientHistory(patient: {familyName: $family, birthDate: $born}) {
    exams { locations { patientId issuerOfPatientId } } candidates { patientId issuerOfPatientId }
  }
}"""
LINK = "mutation($links: [IdentityLinkInput!]!) { addIdentityLinks(links: $links) { added } }"
HISTORY = "query($id: String!) { patientHistory(patient: {id: $id}) { complete } }"


@contextlib.asynccontextmanager
async def audited_app(
    tmp_path: Path, cache: dict[str, Any]
) -> AsyncIterator[tuple[Api, JournaledAuditTrail]]:
    async with await start_demo_hospitals() as hospitals:
        signer = DemoSigner(tmp_path / "keys")
        settings = settings_from_mapping(
            {
                "cache": cache,
                "sources": hospitals.sources_config(),
                "auth": signer.auth_config(),
                "audit": {"journal_dir": str(tmp_path / "audit"), "ship_interval_s": 0.1},
            }
        )
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app, client=("10.20.30.40", 5555))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://pacsfed.test", timeout=60
            ) as client:
                trail = app.state.services.audit
                assert isinstance(trail, JournaledAuditTrail)
                yield Api(client, signer), trail


def es_documents(url: str, index_prefix: str, **term: str) -> list[dict[str, Any]]:
    """Every stored audit document matching ``term`` (read from Elasticsearch itself)."""
    pattern = f"{index_prefix}-audit-*"
    httpx.post(f"{url}/{pattern}/_refresh", timeout=10).raise_for_status()
    query = {"term": term} if term else {"match_all": {}}
    response = httpx.post(f"{url}/{pattern}/_search", json={"size": 10_000, "query": query}, timeout=10)
    response.raise_for_status()
    return [hit["_source"] for hit in response.json()["hits"]["hits"]]


async def test_every_patient_a_search_returned_and_every_linked_id_is_stored_and_found(
    tmp_path: Path, elasticsearch: Any, index_prefix: str
) -> None:
    # A monthly index made by an earlier version (without the new fields) must take the new records.
    month = f"{index_prefix}-audit-{dt.datetime.now(dt.UTC):%Y.%m}"
    old = {k: v for k, v in AUDIT_MAPPING["properties"].items() if not k.endswith(("_omitted", "suppressed"))}
    httpx.put(
        f"{elasticsearch.url}/{month}",
        json={"mappings": {"dynamic": "strict", "properties": old}},
        timeout=30,
    ).raise_for_status()
    # 30 s: on a loaded two-core machine a 901-link bulk with refresh=wait_for outlasts the default 2 s.
    cache = {"url": elasticsearch.url, "index_prefix": index_prefix, "request_timeout_s": 30}
    async with audited_app(tmp_path, cache) as (api, trail):
        body = await api.call(SEARCH, api.token("history:read"), family="Müller", born="1967-03-12")
        assert "data" in body, body
        history = body["data"]["patientHistory"]
        returned = {(c["patientId"], c["issuerOfPatientId"] or "") for c in history["candidates"]}
        returned |= {
            (loc["patientId"], loc["issuerOfPatientId"] or "")
            for e in history["exams"]
            for loc in e["locations"]
        }
        assert returned, body
        links = [{"person": f"p{n}", "issuer": "HOSP_A", "patientId": f"ID-{n:04d}"} for n in range(901)]
        added = await api.call(LINK, api.token("identity:admin"), links=links)
        assert not added.get("errors"), added
        assert added["data"]["addIdentityLinks"]["added"] == 901
        assert await trail.flush(30.0)

        stored = es_documents(elasticsearch.url, index_prefix, action="patient-query")
        named = {pid for doc in stored for pid in doc["patient_ids"]}
        assert {f"{pid}^^^{issuer}" for pid, issuer in returned} <= named
        linked = es_documents(elasticsearch.url, index_prefix, action="identity-change")
        assert len(linked) == 10 and all(doc["patient_ids_omitted"] == 0 for doc in linked)
        assert sorted(pid for doc in linked for pid in doc["patient_ids"]) == [
            f"ID-{n:04d}^^^HOSP_A" for n in range(901)
        ]
        reviewer = api.token("audit:read", subject="privacy-officer")
        for pid, _ in sorted(returned)[:3]:
            events = (await api.call(AUDIT, reviewer, id=pid))["data"]["auditEvents"]
            assert "PATIENT_QUERY" in [e["action"] for e in events], pid
        events = (await api.call(AUDIT, reviewer, id="ID-0900"))["data"]["auditEvents"]
        assert [e["action"] for e in events] == ["IDENTITY_CHANGE"]


async def test_a_refused_list_is_stored_capped_with_its_count(
    tmp_path: Path, elasticsearch: Any, index_prefix: str
) -> None:
    cache = {"url": elasticsearch.url, "index_prefix": index_prefix, "request_timeout_s": 30}
    async with audited_app(tmp_path, cache) as (api, trail):
        links = [{"person": "p", "issuer": "HOSP_A", "patientId": f"ID-{n:04d}"} for n in range(250)]
        body = await api.call(LINK, api.token("history:read"), links=links)
        assert codes(body) == ["FORBIDDEN"]
        assert await trail.flush(30.0)
        [refused] = es_documents(elasticsearch.url, index_prefix, action="identity-change")
        assert (len(refused["patient_ids"]), refused["patient_ids_omitted"]) == (100, 150)
        query = "query($id: String) { auditEvents(patientId: $id) { patientIds patientIdsOmitted } }"
        [event] = (await api.call(query, api.token("audit:read"), id="ID-0000"))["data"]["auditEvents"]
        assert event["patientIdsOmitted"] == 150


async def test_rate_limited_authentication_failures_are_journaled_at_shutdown(tmp_path: Path) -> None:
    async with audited_app(tmp_path, {"backend": "memory"}) as (api, _):
        for _ in range(35):
            response = await api.post(HISTORY, "not.a.jwt", id="DEMO-001")
            assert response.status_code == 401
    journal = AuditJournal(tmp_path / "audit")
    records = await journal.recent()
    failures = [r for r in records if r.action == "authentication"]
    assert len([r for r in failures if not r.suppressed]) == 20
    [summary] = [r for r in failures if r.suppressed]
    assert (summary.suppressed, summary.client_address, summary.detail) == (
        15,
        "10.20.30.40",
        "summary: BAD_TOKEN",
    )
