"""A served pacsfed at its own limits, seen by httpx as an EHR sees it: BUSY sources and OVERLOADED 503s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fakes import SilentListener

from pacsfed.demo.signer import DemoSigner

QUERY = """
query($id: String!, $deadlineMs: Int) {
  patientHistory(patient: {id: $id}, deadlineMs: $deadlineMs, freshness: LIVE) {
    sources { source { id } status error }
  }
}
"""

AUDITED = "{ auditEvents(first: 100) { actor channel suppressed detail patientIds } }"


async def _until(condition: Callable[[], Any], what: str) -> None:
    """Wait (bounded) until ``condition()`` holds: an ordering, not a timing assertion."""
    for _ in range(3000):  # a bound for a loaded machine, not a timing assertion
        if await condition():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"never: {what}")


async def test_a_served_pacsfed_at_its_limits_says_busy_and_refuses_with_503_and_retry_after(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_c: Any,
) -> None:
    with SilentListener() as silent:  # a hospital that never answers: no real PACS hangs on demand
        hung = {
            "id": "hung",
            "kind": "dimse",
            "host": "127.0.0.1",
            "port": silent.port,
            "called_ae": "HUNG",
            "max_concurrency": 1,
        }
        hosp_c = {"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}
        server = pacsfed_server(serve_config([hosp_c, hung], server={"max_pending_queries": 2}))
        headers = {"authorization": f"Bearer {signer.token()}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as client:

            def ask(patient_id: str, deadline_ms: int) -> Any:
                body = {"query": QUERY, "variables": {"id": patient_id, "deadlineMs": deadline_ms}}
                return asyncio.create_task(client.post(server.graphql_url, json=body))

            async def pending(count: int) -> bool:
                ready = (await client.get(f"{server.url}/readyz")).json()
                return bool(ready["load"]["pending_queries"] == count)

            async def connected() -> bool:
                return len(silent.fds()) >= 2  # the listener and the first query's association

            holder = ask("PA-001", 10_000)
            await _until(connected, "the first query holds the hung hospital's only slot")
            waiting = ask("PA-002", 4000)
            await _until(lambda: pending(2), "two queries are in progress")
            refused = await client.post(
                server.graphql_url,
                json={"query": QUERY, "variables": {"id": "PA-003"}},
                headers={"accept": "application/graphql-response+json"},
            )
            fhir = await client.get(
                f"{server.url}/fhir/ImagingStudy", params={"patient.identifier": "PA-004"}
            )
            health = await client.get(f"{server.url}/healthz")
            ready = (await client.get(f"{server.url}/readyz")).json()
            busy = (await waiting).json()
            await holder

            async def summarized() -> bool:
                events = (await client.post(server.graphql_url, json={"query": AUDITED})).json()
                overloaded.clear()
                overloaded.update(
                    {
                        e["channel"]: e
                        for e in events["data"]["auditEvents"]
                        if (e["detail"] or "").startswith("OVERLOADED")
                    }
                )
                return overloaded.keys() == {"graphql", "fhir"}

            overloaded: dict[str, dict[str, Any]] = {}
            await _until(summarized, "the refusals are audited")
    # Refused at the HTTP server's door (the connection is closed), in each front end's own format.
    assert refused.status_code == 503 and refused.headers["connection"] == "close"
    assert fhir.status_code == 503 and fhir.headers["connection"] == "close"
    assert 1 <= int(fhir.headers["retry-after"]) <= 10
    (issue,) = fhir.json()["issue"]
    assert "OVERLOADED" in str(issue)
    assert health.status_code == 200  # liveness and readiness are answered at the limit
    for channel in ("graphql", "fhir"):  # one summary record per channel, no patient named
        event = overloaded[channel]
        assert event["suppressed"] == 1 and event["patientIds"] == [] and event["actor"] == "system:pacsfed"
    assert refused.status_code == 503
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert refused.json()["errors"][0]["extensions"]["code"] == "OVERLOADED"
    assert ready["status"] == "degraded"
    assert "pending queries" in ready["reason"]
    statuses = {s["source"]["id"]: s["status"] for s in busy["data"]["patientHistory"]["sources"]}
    assert statuses == {"hosp-c": "OK", "hung": "BUSY"}
