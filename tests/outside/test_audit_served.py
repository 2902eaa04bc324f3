"""A served pacsfed whose audit journal disk fills up, as a client and a load balancer see it (real HTTP)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import httpx
from peers.listener import ConnectionCounter

from pacsfed.demo.signer import DemoSigner

QUERY = "query($id: String!) { patientHistory(patient: {id: $id}) { exams { studyInstanceUid } } }"


def test_a_full_journal_disk_is_audit_unavailable_and_not_ready_until_it_has_room(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    full_disk: Any,
    elasticsearch: Any,
) -> None:
    counter = ConnectionCounter()
    try:
        sources = [
            {
                "id": "hosp-x",
                "name": "Counted",
                "kind": "dicomweb",
                "url": f"http://127.0.0.1:{counter.port}/",
            }
        ]
        cache = {
            "backend": "elasticsearch",
            "url": elasticsearch.url,
            "index_prefix": f"pacsfed-served-{secrets.token_hex(4)}",
        }
        audit = {"journal_dir": str(full_disk.path / "journal")}
        server = pacsfed_server(serve_config(sources, cache=cache, audit=audit))
        headers = {"authorization": f"Bearer {signer.token(scopes=('history:read',))}"}
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
        full_disk.fill()
        refused = httpx.post(
            server.graphql_url,
            json={"query": QUERY, "variables": {"id": "PA-001"}},
            headers=headers,
            timeout=30,
        )
        not_ready = httpx.get(f"{server.url}/readyz", timeout=10)
        asked = counter.connections
        full_disk.free()
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
    finally:
        counter.close()
    assert [e["extensions"]["code"] for e in refused.json()["errors"]] == ["AUDIT_UNAVAILABLE"]
    assert asked == 0
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "not_ready"
    assert not_ready.json()["reason"]
    assert ready.status_code == 200 and ready.json()["status"] in ("ready", "degraded")
    assert "PA-001" not in server.log_text()
