"""No audit record is lost when a pod is rescheduled: its ``pacsfed serve`` killed, then started again on the same volume.

The StatefulSet gives a rescheduled pod its own PersistentVolume back (deploy/kubernetes/base/
statefulset.yaml). Here, the pod's command line (the StatefulSet's args, as the image runs them)
runs from the locked install; the first run cannot reach Elasticsearch, answers queries and is
killed (SIGKILL: no shutdown, no last shipping); the second run, on the same journal directory
with Elasticsearch back, ships every record the first had journaled, each exactly once.

What a SIGKILL can lose is what never reached the disk: an outcome record queued for the next
batch (``append(wait=False)``, at most ``lazy_delay_s``, 0.5 s, later) whose access record is
already fsync'd. Every access is on disk before any data leaves (federation/audit/journal.py).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import httpx
from peers import ElasticsearchNode, OrthancPeer, free_port
from peers.process import ManagedProcess

from deploy.image import REPO, image_run
from deploy.kustomize import build
from pacsfed.demo.signer import DemoSigner

QUERIES = 3
QUERY = '{ patientHistory(patient: {id: "DEMO-001"}) { exams { studyInstanceUid } } }'


def _pod_args() -> list[str]:
    (workload,) = [m for m in build(REPO / "deploy" / "kubernetes" / "base") if m["kind"] == "StatefulSet"]
    args: list[str] = workload["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _journal_ids(journal: Path) -> list[str]:
    ids: list[str] = []
    for segment in sorted(journal.glob("audit-*.jsonl")):
        for line in segment.read_text(encoding="utf-8").splitlines():
            try:
                ids.append(json.loads(line)["id"])
            except (json.JSONDecodeError, KeyError):  # a torn last line: never acknowledged
                continue
    return ids


def _shipped_ids(es: ElasticsearchNode, prefix: str) -> list[str]:
    index = f"{prefix}-audit*"
    httpx.post(f"{es.url}/{index}/_refresh", params={"allow_no_indices": "true"}, timeout=30)
    response = httpx.post(
        f"{es.url}/{index}/_search",
        params={"allow_no_indices": "true", "ignore_unavailable": "true"},
        json={"size": 10_000, "_source": False},
        timeout=30,
    )
    response.raise_for_status()
    return [hit["_id"] for hit in response.json()["hits"]["hits"]]


def _start(root: Path, bin_dir: Path, log: Path, config: dict[str, Any]) -> tuple[ManagedProcess, str]:
    port = free_port()
    run = image_run(root, bin_dir, port, _pod_args())
    Path(run.argv[run.argv.index("--config") + 1]).write_text(json.dumps(config), encoding="utf-8")
    process = ManagedProcess("pacsfed (pod)", run.argv, log_path=log, cwd=run.cwd, env=run.env)
    process.start()
    base = f"http://127.0.0.1:{port}"
    process.wait_until(lambda: httpx.get(f"{base}/healthz").status_code == 200, timeout=90, what="/healthz")
    return process, base


def test_a_killed_pod_started_again_on_its_volume_ships_every_record_once(
    locked_install: Path,
    compose_hospitals: dict[str, OrthancPeer],
    elasticsearch: ElasticsearchNode,
    tmp_path: Path,
) -> None:
    root = tmp_path / "pod"
    journal = root / "var" / "lib" / "pacsfed" / "audit"  # the ConfigMap's journal_dir, on the volume
    prefix = f"deploy-restart-{secrets.token_hex(4)}"
    signer = DemoSigner(tmp_path / "keys")
    config: dict[str, Any] = {
        "cache": {
            "backend": "elasticsearch",
            "url": f"http://127.0.0.1:{free_port()}",
            "index_prefix": prefix,
        },
        "auth": signer.auth_config(),
        "audit": {"journal_dir": str(journal)},
        "sources": [
            {"id": "az-sint-jan", "kind": "dicomweb", "url": compose_hospitals["orthanc-b"].dicomweb_url}
        ],
    }
    headers = {"authorization": f"Bearer {signer.token(scopes=('history:read',))}"}

    first, base = _start(root, locked_install, tmp_path / "first.log", config)  # Elasticsearch unreachable
    try:
        for _ in range(QUERIES):
            answer = httpx.post(f"{base}/graphql", json={"query": QUERY}, headers=headers, timeout=30).json()
            assert len(answer["data"]["patientHistory"]["exams"]) == 3, answer
    finally:
        first.stop(graceful=False)  # a node lost, a pod evicted: no shutdown at all
    journaled = _journal_ids(journal)
    assert len(journaled) >= QUERIES, "each query's access is on disk before its answer leaves"
    assert _shipped_ids(elasticsearch, prefix) == [], "nothing could be shipped before the kill"

    config["cache"]["url"] = elasticsearch.url
    second, _ = _start(root, locked_install, tmp_path / "second.log", config)
    try:
        second.wait_until(
            lambda: set(journaled) <= set(_shipped_ids(elasticsearch, prefix)),
            timeout=60,
            what="the first run's records in Elasticsearch",
            interval=0.5,
        )
    finally:
        second.stop()  # graceful: its own records are shipped on the way out
    shipped = _shipped_ids(elasticsearch, prefix)
    assert sorted(shipped) == sorted(set(_journal_ids(journal))), "every journaled record, each once"
