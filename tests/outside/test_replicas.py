"""Two ``pacsfed serve`` replicas on one Elasticsearch node behave as one (issue 18, item 3).

Each replica is its own process with its own port and audit journal, as two Kubernetes pods are;
they share only Elasticsearch. What one decides, the other decides alike, at once: a lock-out, a
break-the-glass window, a purge, a revoked share code; and every audit record of both reaches
Elasticsearch exactly once. Callers' addresses come through ``X-Forwarded-For`` (a trusted proxy,
as behind an ingress), so each test has its own client address.
"""

from __future__ import annotations

import copy
import gzip
import json
import secrets
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from peers.pacsfed import PacsfedServer

from pacsfed.demo.signer import DemoSigner

HISTORY = """query($id: String!, $freshness: Freshness, $reason: String) {
  patientHistory(patient: {id: $id}, freshness: $freshness, reason: $reason) {
    exams { studyInstanceUid } sources { status } } }"""
REDEEM = "mutation($code: String!) { redeemShareCode(code: $code) { token } }"
CREATE = 'mutation { createShareCode(patient: {id: "PA-001"}) { code } }'
REVOKE = "mutation($code: String!) { revokeShareCode(code: $code) { revoked } }"
PURGE = 'mutation { purgeCache(patient: {id: "PA-001"}) { purged } }'


class Replicas:
    """The two served replicas, their shared index prefix and the signer their tokens come from."""

    def __init__(
        self, a: PacsfedServer, b: PacsfedServer, prefix: str, signer: DemoSigner, es_url: str
    ) -> None:
        self.a, self.b, self.prefix, self.signer, self.es_url = a, b, prefix, signer, es_url

    def post(
        self, server: PacsfedServer, body: dict[str, Any], *, client: str, token: str | None = None
    ) -> dict[str, Any]:
        headers = {"x-forwarded-for": client}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        response = httpx.post(server.graphql_url, json=body, headers=headers, timeout=60)
        result: dict[str, Any] = response.json()
        return result


@pytest.fixture(scope="module")
def replicas(
    pacsfed_install: Path, elasticsearch: Any, orthanc_a: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicas]:
    signer = DemoSigner(tmp_path_factory.mktemp("keys"))
    prefix = f"pacsfed-replicas-{secrets.token_hex(4)}"
    config = {
        "cache": {"backend": "elasticsearch", "url": elasticsearch.url, "index_prefix": prefix},
        "sources": [
            {"id": "hosp-a", "name": "Hospital A", "kind": "dicomweb", "url": orthanc_a.dicomweb_url}
        ],
        "auth": signer.auth_config(),
        "server": {"mode": "production", "forwarded_allow_ips": ["127.0.0.1"]},
        "share": {"max_failures": 3, "lockout_s": 900},
        "audit": {"ship_interval_s": 0.2},
    }
    servers = [
        # Each its own copy: the server writes its own journal_dir into the audit section.
        PacsfedServer(pacsfed_install, tmp_path_factory.mktemp(f"replica-{name}"), copy.deepcopy(config))
        for name in "ab"
    ]
    try:
        for server in servers:
            server.start()
        yield Replicas(*servers, prefix, signer, elasticsearch.url)
    finally:
        for server in servers:
            server.stop()


def test_a_lock_out_reached_through_one_replica_holds_on_the_other(replicas: Replicas) -> None:
    for attempt in range(3):
        wrong = replicas.post(
            replicas.a, {"query": REDEEM, "variables": {"code": f"WRNG-{attempt:04d}"}}, client="10.1.0.1"
        )
        assert wrong["errors"][0]["extensions"]["code"] == "BAD_SHARE_CODE"
    locked = replicas.post(
        replicas.b, {"query": REDEEM, "variables": {"code": "ELSE-0000"}}, client="10.1.0.1"
    )
    assert locked["errors"][0]["extensions"]["code"] == "LOCKED_OUT"
    other = replicas.post(
        replicas.b, {"query": REDEEM, "variables": {"code": "ELSE-0000"}}, client="10.1.0.2"
    )
    assert other["errors"][0]["extensions"]["code"] == "BAD_SHARE_CODE"  # only that address


def test_a_break_the_glass_window_opened_on_one_replica_holds_on_the_other(replicas: Replicas) -> None:
    token = replicas.signer.token(subject="dr-eve", scopes=("history:emergency",))
    no_reason = {"query": HISTORY, "variables": {"id": "PA-ER-7"}}
    refused = replicas.post(replicas.b, no_reason, client="10.2.0.1", token=token)
    assert refused["errors"][0]["extensions"]["code"] == "REASON_REQUIRED"
    with_reason = {"query": HISTORY, "variables": {"id": "PA-ER-7", "reason": "trauma bay 2"}}
    assert "errors" not in replicas.post(replicas.a, with_reason, client="10.2.0.1", token=token)
    granted = replicas.post(replicas.b, no_reason, client="10.2.0.1", token=token)
    assert "errors" not in granted, granted


def test_a_cache_purge_on_one_replica_is_seen_by_the_other(replicas: Replicas) -> None:
    token = replicas.signer.token(subject="dr-pia")
    live = {"query": HISTORY, "variables": {"id": "PA-001", "freshness": "LIVE"}}
    cached = {"query": HISTORY, "variables": {"id": "PA-001", "freshness": "CACHE_ONLY"}}
    asked = replicas.post(replicas.a, live, client="10.3.0.1", token=token)["data"]["patientHistory"]
    assert asked["exams"], asked
    before = replicas.post(replicas.b, cached, client="10.3.0.1", token=token)["data"]["patientHistory"]
    assert before["exams"] == asked["exams"]
    purged = replicas.post(replicas.a, {"query": PURGE}, client="10.3.0.1", token=token)
    assert purged["data"]["purgeCache"]["purged"] == 1, purged
    after = replicas.post(replicas.b, cached, client="10.3.0.1", token=token)["data"]["patientHistory"]
    assert after["exams"] == [] and [s["status"] for s in after["sources"]] == ["NOT_CACHED"]


def test_a_share_code_revoked_on_one_replica_is_refused_by_the_other_at_once(replicas: Replicas) -> None:
    creator = replicas.signer.token(subject="dr-sam")
    code = replicas.post(replicas.a, {"query": CREATE}, client="10.4.0.1", token=creator)["data"]
    code = code["createShareCode"]["code"]
    redeemed = replicas.post(replicas.b, {"query": REDEEM, "variables": {"code": code}}, client="10.4.0.2")
    share_token = redeemed["data"]["redeemShareCode"]["token"]
    reading = {"query": HISTORY, "variables": {"id": "PA-001", "freshness": "LIVE"}}
    assert "errors" not in replicas.post(replicas.b, reading, client="10.4.0.2", token=share_token)
    revoked = replicas.post(
        replicas.a, {"query": REVOKE, "variables": {"code": code}}, client="10.4.0.1", token=creator
    )
    assert revoked["data"]["revokeShareCode"]["revoked"] is True
    refused = replicas.post(replicas.b, reading, client="10.4.0.2", token=share_token)
    assert refused["errors"][0]["extensions"]["code"] in ("BAD_TOKEN", "UNAUTHENTICATED"), refused
    again = replicas.post(replicas.b, {"query": REDEEM, "variables": {"code": code}}, client="10.4.0.3")
    assert again["errors"][0]["extensions"]["code"] == "BAD_SHARE_CODE"


def test_the_cache_command_shows_the_shared_indices_and_purges_audited(
    replicas: Replicas, pacsfed_install: Path
) -> None:
    token = replicas.signer.token(subject="dr-pia")
    live = {"query": HISTORY, "variables": {"id": "PA-001", "freshness": "LIVE"}}
    assert replicas.post(replicas.b, live, client="10.5.0.1", token=token)["data"]["patientHistory"]["exams"]

    def pacsfed(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(pacsfed_install / "pacsfed"), "cache", *args, "--config", str(replicas.a.config_path)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    stats = pacsfed("stats", "--json")
    assert stats.returncode == 0, stats.stderr
    indices = {s["kind"]: s for s in json.loads(stats.stdout)}
    assert indices["answers"]["index"].startswith(f"{replicas.prefix}-answers-v2-")
    purge = pacsfed("purge", "--patient-id", "PA-001")
    assert purge.returncode == 0, purge.stderr
    assert purge.stdout.strip() == "purged 1 cached answers"
    cached = {"query": HISTORY, "variables": {"id": "PA-001", "freshness": "CACHE_ONLY"}}
    after = replicas.post(replicas.a, cached, client="10.5.0.1", token=token)["data"]["patientHistory"]
    assert after["exams"] == []
    assert "PA-001" not in purge.stdout + purge.stderr
    purges = [r for r in _stored(replicas) if r["action"] == "cache-purge" and r["actor"].startswith("cli:")]
    assert purges, "the command line's purge was not audited"


def _journaled(directory: Path) -> list[dict[str, Any]]:
    """Every record in a journal directory and those under it (the command line's), gzip'd segments too."""
    records = []
    for segment in sorted(directory.rglob("audit-*.jsonl*")):
        data = gzip.decompress(segment.read_bytes()) if segment.suffix == ".gz" else segment.read_bytes()
        records += [json.loads(line) for line in data.splitlines() if line.strip()]
    return records


def _stored(replicas: Replicas, *, wait_for: set[str] | None = None) -> list[dict[str, Any]]:
    """Every audit record in Elasticsearch (waiting, briefly, until ``wait_for`` are all there)."""
    deadline = time.monotonic() + 60
    while True:
        httpx.post(f"{replicas.es_url}/{replicas.prefix}-audit-*/_refresh", timeout=30)
        found = httpx.post(
            f"{replicas.es_url}/{replicas.prefix}-audit-*/_search",
            json={"size": 10_000, "query": {"match_all": {}}},
            timeout=30,
        ).json()
        stored = [hit["_source"] for hit in found.get("hits", {}).get("hits", [])]
        if wait_for is None or wait_for <= {r["id"] for r in stored} or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


def test_no_audit_record_of_either_replica_is_lost_or_duplicated(replicas: Replicas) -> None:
    for server in (replicas.a, replicas.b):
        server.stop()  # a graceful stop ships what is left
    journaled = [r for server in (replicas.a, replicas.b) for r in _journaled(server.workdir / "audit")]
    assert len(journaled) > 10
    assert Counter(r["id"] for r in journaled).most_common(1)[0][1] == 1
    stored = _stored(replicas, wait_for={r["id"] for r in journaled})
    assert Counter(r["id"] for r in stored).most_common(1)[0][1] == 1  # none twice
    assert sorted(r["id"] for r in stored) == sorted(r["id"] for r in journaled)  # none lost
