"""``pacsfed serve --workers 2`` as an operator runs it: one port, two processes, one decision state, no audit lost."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from peers.reportdata import PDF_BYTES, PDF_STUDY, REPORT_PATIENT
from report_fixtures import orthanc_reports, report_files

from pacsfed.demo.signer import DemoSigner

__all__ = ["orthanc_reports", "report_files"]

QUERY = "query($id: String!, $reason: String) { patientHistory(patient: {id: $id}, reason: $reason) { complete } }"
REDEEM = "mutation($code: String!) { redeemShareCode(code: $code) { token } }"
ANSWER_DELAY_S = 0.2


class _SlowQido(BaseHTTPRequestHandler):
    """A hospital that answers every QIDO search with no studies, a little later (queries stay in flight)."""

    def do_GET(self) -> None:
        time.sleep(ANSWER_DELAY_S)
        self.send_response(200)
        self.send_header("content-type", "application/dicom+json")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def hospital() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowQido)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


class _Switch:
    """A TCP relay to Elasticsearch that can be cut: while cut, every connection is closed at once."""

    def __init__(self, upstream: str) -> None:
        url = httpx.URL(upstream)
        self._upstream = (url.host, url.port or 9200)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self.open = True
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            upstream = socket.create_connection(self._upstream)
            self._pairs.append((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        for pair in self._pairs:
            for end in pair:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
        self._pairs.clear()

    def close(self) -> None:
        self.cut()
        self._server.close()


def _config(
    serve_config: Callable[..., dict[str, Any]], elasticsearch: Any, hospital: str, prefix: str
) -> dict[str, Any]:
    sources = [{"id": "hosp-slow", "name": "Slow", "kind": "dicomweb", "url": hospital}]
    cache = {"backend": "elasticsearch", "url": elasticsearch.url, "index_prefix": prefix}
    return serve_config(sources, cache=cache, share={"max_failures": 3, "lockout_s": 900})


def _workers_of(supervisor: int) -> list[int]:
    """The worker processes of a ``pacsfed serve --workers`` (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    found = []
    for pid in children:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            found.append(int(pid))
    return found


def _pinned(url: str) -> dict[int, httpx.Client]:
    """One kept-alive connection to each worker: clients opened until both workers have answered one."""
    clients: dict[int, httpx.Client] = {}
    spare: list[httpx.Client] = []
    for _ in range(200):
        client = httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1))
        worker = client.get("/healthz").json()["worker"]
        if worker in clients:
            spare.append(client)
        else:
            clients[worker] = client
        if len(clients) == 2:
            break
    for client in spare:
        client.close()
    assert sorted(clients) == [0, 1], "the kernel never handed a connection to one of the two workers"
    return clients


def _on(client: httpx.Client, worker: int, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """POST /graphql on ``client``'s one connection, checked to be still the one to ``worker``."""
    before = client.get("/healthz")
    response = client.post("/graphql", json=body, headers=headers)
    after = client.get("/healthz")
    streams = {
        r.extensions["network_stream"].get_extra_info("client_addr") for r in (before, response, after)
    }
    assert len(streams) == 1 and after.json()["worker"] == worker, "the connection moved to another worker"
    result: dict[str, Any] = response.json()
    return result


def test_a_lock_out_and_a_break_the_glass_window_reached_through_one_worker_hold_on_the_other(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    elasticsearch: Any,
    hospital: str,
) -> None:
    prefix = f"pacsfed-workers-{secrets.token_hex(4)}"
    server = pacsfed_server(
        _config(serve_config, elasticsearch, hospital, prefix), extra_args=("--workers", "2")
    )
    _wait_for_index(elasticsearch, f"{prefix}-shares")  # made at start-up, without delaying it
    clients = _pinned(server.url)
    try:
        for attempt in range(3):
            wrong = _on(clients[0], 0, {"query": REDEEM, "variables": {"code": f"WRNG-{attempt:04d}"}}, {})
            assert wrong["errors"][0]["extensions"]["code"] == "BAD_SHARE_CODE"
        locked = _on(clients[1], 1, {"query": REDEEM, "variables": {"code": "ELSE-0000"}}, {})
        assert locked["errors"][0]["extensions"]["code"] == "LOCKED_OUT"

        emergency = {"authorization": f"Bearer {signer.token(scopes=('history:emergency',))}"}
        no_reason = {"query": QUERY, "variables": {"id": "PA-ER-1"}}
        refused = _on(clients[1], 1, no_reason, emergency)
        assert refused["errors"][0]["extensions"]["code"] == "REASON_REQUIRED"
        with_reason = {"query": QUERY, "variables": {"id": "PA-ER-1", "reason": "trauma bay 2"}}
        assert "errors" not in _on(clients[0], 0, with_reason, emergency)
        granted = _on(clients[1], 1, no_reason, emergency)
        assert "errors" not in granted, granted
    finally:
        for client in clients.values():
            client.close()
    assert "PA-ER-1" not in server.log_text()


def _wait_for_index(elasticsearch: Any, index: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        health = httpx.get(
            f"{elasticsearch.url}/_cluster/health/{index}", params={"timeout": "1s"}, timeout=30
        )
        if health.status_code == 200 and health.json()["status"] in ("yellow", "green"):
            return
        time.sleep(0.5)
    raise AssertionError(f"the server never made its index {index}")


def _audit_records(elasticsearch: Any, prefix: str) -> list[dict[str, Any]]:
    httpx.post(f"{elasticsearch.url}/{prefix}-audit-*/_refresh", timeout=30)
    found = httpx.post(
        f"{elasticsearch.url}/{prefix}-audit-*/_search",
        json={"size": 10_000, "query": {"term": {"action": "patient-query"}}},
        timeout=30,
    ).json()
    return [hit["_source"] for hit in found.get("hits", {}).get("hits", [])]


def _journaled(journal_dir: Path, *, nested: bool = True) -> list[dict[str, Any]]:
    """Every whole record in the journal (``nested``: and every worker's under it; a torn line is no record)."""
    records = []
    for segment in sorted((journal_dir.rglob if nested else journal_dir.glob)("audit-*.jsonl")):
        for line in segment.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def test_a_worker_killed_mid_load_loses_no_audit_record_and_duplicates_none(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    elasticsearch: Any,
    hospital: str,
) -> None:
    """Records shipped and not yet shipped when the worker dies: its successor ships the rest, each once."""
    prefix = f"pacsfed-workers-{secrets.token_hex(4)}"
    switch = _Switch(elasticsearch.url)
    try:
        config = _config(serve_config, elasticsearch, hospital, prefix)
        config["cache"]["url"] = switch.url
        server = pacsfed_server(config, extra_args=("--workers", "2"))
        supervisor = server.process.pid
        deadline = time.monotonic() + 60
        while len(workers := _workers_of(supervisor)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) == 2
        headers = {"authorization": f"Bearer {signer.token(scopes=('history:read',))}"}
        patients = [f"PA-KILL-{n:03d}" for n in range(60)]

        def ask(patient: str) -> str | None:
            try:
                response = httpx.post(
                    server.graphql_url,
                    json={"query": QUERY, "variables": {"id": patient}},
                    headers=headers,
                    timeout=60,
                )
            except httpx.HTTPError:
                return None  # its worker died under it: its access may or may not be journaled
            return patient if response.status_code == 200 and "errors" not in response.json() else None

        def done(futures: list[concurrent.futures.Future[str | None]]) -> int:
            return sum(future.done() for future in futures)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            asked = [pool.submit(ask, patient) for patient in patients]
            while done(asked) < 12:
                time.sleep(0.05)
            switch.cut()  # from now on records wait in the journals
            while done(asked) < 24:
                time.sleep(0.05)
            os.kill(workers[0], signal.SIGKILL)
            shipped = {r["id"] for r in _audit_records(elasticsearch, prefix)}
            left = {
                index: {r["id"] for r in _journaled(journal, nested=False)} - shipped
                for index, journal in enumerate(
                    (server.workdir / "audit", server.workdir / "audit" / "worker-1")
                )
            }
            answered = {patient for future in asked if (patient := future.result()) is not None}
        assert len(answered) >= len(patients) // 2
        died = re.search(r"worker (\d) died", server.log_text())
        assert died is not None
        switch.open = True

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the dead worker's index comes back and ships what it left
            restarted = [pid for pid in _workers_of(supervisor) if pid != workers[0]]
            journaled = {
                r["id"] for r in _journaled(server.workdir / "audit") if r["action"] == "patient-query"
            }
            if len(restarted) == 2 and journaled <= {r["id"] for r in _audit_records(elasticsearch, prefix)}:
                break
            time.sleep(1)
    finally:
        switch.close()
    stored = _audit_records(elasticsearch, prefix)
    journaled_records = [r for r in _journaled(server.workdir / "audit") if r["action"] == "patient-query"]
    assert len(restarted) == 2
    assert left[int(died.group(1))]  # the dead worker left records Elasticsearch had not received
    assert Counter(r["id"] for r in journaled_records).most_common(1)[0][1] == 1
    assert sorted(r["id"] for r in stored) == sorted(r["id"] for r in journaled_records)  # none lost
    accesses = Counter(r["patient_ids"][0].split("^")[0] for r in stored if r.get("detail") == "access")
    assert all(accesses[patient] == 1 for patient in answered), accesses  # each answered query once
    assert max(accesses.values()) == 1  # and none twice
    assert {path.name for path in (server.workdir / "audit").glob("worker-*")} == {"worker-1"}


def test_with_the_memory_cache_more_than_one_worker_is_refused_at_start_up(
    pacsfed_install: Path, serve_config: Callable[..., dict[str, Any]], tmp_path: Path
) -> None:
    config = tmp_path / "pacsfed.yaml"
    settings = serve_config([], audit={"journal_dir": str(tmp_path / "audit")})
    config.write_text(json.dumps(settings))  # JSON is YAML
    result = subprocess.run(
        [str(pacsfed_install / "pacsfed"), "serve", "--config", str(config), "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--workers 2 needs cache.backend: elasticsearch" in result.stderr


REPORTS = """query($id: String!) { patientHistory(patient: {id: $id}, freshness: LIVE) {
      exams { studyInstanceUid report { status url } } } }"""


def test_a_report_link_made_by_one_worker_opens_on_the_other(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    elasticsearch: Any,
    orthanc_reports: Any,
) -> None:
    prefix = f"pacsfed-workers-{secrets.token_hex(4)}"
    sources = [{"id": "hosp-r-web", "kind": "dicomweb", "url": orthanc_reports.dicomweb_url}]
    cache = {"backend": "elasticsearch", "url": elasticsearch.url, "index_prefix": prefix}
    server = pacsfed_server(serve_config(sources, cache=cache), extra_args=("--workers", "2"))
    _wait_for_index(elasticsearch, f"{prefix}-access-state")
    headers = {"authorization": f"Bearer {signer.token(subject='dr-rita')}"}
    clients = _pinned(server.url)
    try:
        body = {"query": REPORTS, "variables": {"id": REPORT_PATIENT.patient_id}}
        answer = _on(clients[0], 0, body, headers)
        reports = {e["studyInstanceUid"]: e["report"] for e in answer["data"]["patientHistory"]["exams"]}
        path = httpx.URL(reports[PDF_STUDY.study_uid]["url"]).path
        before = clients[1].get("/healthz")
        opened = clients[1].get(path, headers=headers)
        after = clients[1].get("/healthz")
        streams = {
            r.extensions["network_stream"].get_extra_info("client_addr") for r in (before, opened, after)
        }
    finally:
        for client in clients.values():
            client.close()
    assert len(streams) == 1 and after.json()["worker"] == 1, "the connection moved to another worker"
    assert opened.status_code == 200, opened.text
    assert (opened.headers["content-type"], opened.content) == ("application/pdf", PDF_BYTES)
