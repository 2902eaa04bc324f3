"""Hostile peers and clients cost at most their deadline, bounded memory, and no thread or socket.

Each hostile DIMSE or DICOMweb peer (``tests/fakes.py``) is queried three times through one
connector. Each runs in a process of its own (``fakes.OutOfProcess``), as a hostile PACS runs on
a machine of its own: a fake flooding us from a thread of this process would take the GIL from
the connector and bill its own CPU time to the connector's deadline. Per run: the time to give up
against the deadline, the tracemalloc peak, and the threads and file descriptors of this process
(but the fake's control pipe) before, at return, and after a short settle. A leak is growth
across runs: pool threads that are reused do not count. The figures are printed (``pytest -s``)
for docs/SECURITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes import (
    DrippingPeer,
    HugeHttpServer,
    HugePduPeer,
    OutOfProcess,
    PendingFloodPeer,
    StaticHttpServer,
    StreamingPeer,
    closed_port,
)

from connectors.base import Connector, ConnectorContext
from connectors.dicomweb import DicomwebConnector
from connectors.dicomweb_settings import DicomwebSourceSettings
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.errors import ConnectorError, SourceProtocolError, SourceTimeout
from federation.models import Deadline, SeriesQuery, StudyQuery
from federation.settings import settings_from_mapping
from integration.gql import HISTORY_QUERY, running_app, statuses
from pacsfed.demo import DemoHospitals, start_demo_hospitals

pytestmark = pytest.mark.integration

DEADLINE_S = 1.5
MARGIN_S = 0.3
"""Allowed past the deadline: the event loop's wake-up, never a peer's timeout."""
MEMORY_LIMIT = 30 * 1024 * 1024
SETTLE_S = 2.0
RUNS = 3


POOL_THREAD = ("pacsfed-dimse-", "asyncio_")
"""Name prefixes of reused worker pools: a DIMSE connector's (at most max_concurrency), asyncio's default."""


def own_threads(pool: bool = True) -> int:
    """Threads of this process (the fakes run in processes of their own); with ``pool=False``, less the workers."""
    return sum(1 for t in threading.enumerate() if pool or not t.name.startswith(POOL_THREAD))


def own_fds(fake: Any) -> int:
    """Open file descriptors of this process that are not the fake's (its control pipe)."""
    return len({int(fd) for fd in os.listdir("/proc/self/fd")} - fake.fds())


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Run:
    elapsed: float
    peak: int
    rss_growth_kib: int
    threads: tuple[int, int, int]
    fds: tuple[int, int, int]
    outcome: str
    others: int = 0
    deadline_s: float = DEADLINE_S
    """Threads once settled, leaving out the connector's (reused) worker threads."""

    def line(self) -> str:
        t, f = self.threads, self.fds
        return (
            f"gave up after {self.elapsed:.2f} s (deadline {self.deadline_s} s), tracemalloc peak"
            f" {self.peak / 2**20:.1f} MiB, RSS +{self.rss_growth_kib / 1024:.1f} MiB, threads"
            f" {t[0]}->{t[1]}->{t[2]}, fds {f[0]}->{f[1]}->{f[2]} (before->at return->settled): {self.outcome}"
        )


async def settle(fake: Any, threads: int, fds: int, pool: bool = True) -> None:
    """Wait (up to SETTLE_S) for the connector's threads and fds to come back to the given counts."""
    end = time.monotonic() + SETTLE_S
    while time.monotonic() < end and (own_threads(pool) > threads or own_fds(fake) > fds):  # noqa: ASYNC110 - polls /proc
        await asyncio.sleep(0.05)


async def cost_of(
    fake: Any, connector: Connector, deadline_s: float = DEADLINE_S
) -> tuple[list[Run], list[Any]]:
    """Query the fake RUNS times through ``connector``; the runs' costs and their outcomes."""
    runs: list[Run] = []
    outcomes: list[Any] = []
    threads0, fds0, others0 = own_threads(), own_fds(fake), own_threads(pool=False)
    for _ in range(RUNS):
        before_threads, before_fds, rss0 = own_threads(), own_fds(fake), rss_kib()
        tracemalloc.start()
        started = time.monotonic()
        try:
            outcome: Any = await asyncio.wait_for(
                connector.find_studies(StudyQuery(patient_id="HOSTILE-1"), Deadline.after(deadline_s)),
                deadline_s + 30,  # a hang fails the test rather than blocking it
            )
            text = f"{len(outcome.records)} records, truncated={outcome.truncated}"
        except ConnectorError as exc:
            outcome, text = exc, f"{type(exc).__name__}: {exc}"
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        at_return = (own_threads(), own_fds(fake))
        await settle(fake, others0, fds0, pool=False)
        runs.append(
            Run(
                elapsed,
                peak,
                rss_kib() - rss0,
                (before_threads, at_return[0], own_threads()),
                (before_fds, at_return[1], own_fds(fake)),
                text,
                own_threads(pool=False),
                deadline_s,
            )
        )
        outcomes.append(outcome)
    await connector.aclose()
    await settle(fake, threads0, fds0)
    runs.append(
        Run(
            0,
            0,
            0,
            (threads0, threads0, own_threads()),
            (fds0, fds0, own_fds(fake)),
            "after aclose()",
            others0,
        )
    )
    return runs, outcomes


def report(name: str, runs: list[Run]) -> None:
    print(f"\n[hostile] {name}")
    for index, run in enumerate(runs, 1):
        print(f"  run {index}: {run.line()}" if index <= RUNS else f"  {run.line()}")


def assert_bounded(runs: list[Run], deadline_s: float = DEADLINE_S) -> None:
    *queries, closed = runs
    for run in queries:
        assert run.elapsed <= deadline_s + MARGIN_S, run.line()
        assert run.peak < MEMORY_LIMIT, run.line()
    # No growth across runs: besides the connector's worker pool (reused, at most max_concurrency
    # threads), every thread a run started has ended, and every socket it opened is closed.
    assert all(run.others <= closed.others for run in queries), [r.line() for r in runs]
    assert all(run.threads[2] - run.others <= 4 for run in queries), [r.line() for r in runs]
    assert all(run.fds[2] <= queries[0].fds[0] for run in queries), [r.line() for r in runs]
    assert closed.threads[2] <= closed.threads[0], closed.line()
    assert closed.fds[2] <= closed.fds[0], closed.line()


def dimse(port: int, **settings: Any) -> DimseConnector:
    return DimseConnector(
        DimseSourceSettings(
            id="hostile", kind="dimse", host="127.0.0.1", port=port, called_ae="HOSTILE", **settings
        ),
        ConnectorContext(),
    )


def dicomweb(port: int) -> DicomwebConnector:
    return DicomwebConnector(
        DicomwebSourceSettings(id="hostile-web", kind="dicomweb", url=f"http://127.0.0.1:{port}/dicom-web"),
        ConnectorContext(),
    )


@pytest.mark.parametrize(
    ("announced", "expected"),
    [(2**31, SourceProtocolError), (1024 * 1024, SourceTimeout)],
    ids=["2GiB-refused", "1MiB-stalls"],
)
async def test_a_peer_announcing_a_huge_pdu_then_stalling(announced: int, expected: type[Exception]) -> None:
    with OutOfProcess(HugePduPeer, announced=announced) as peer:
        runs, outcomes = await cost_of(peer, dimse(peer.port))
    report(f"DIMSE peer announcing a {announced}-byte P-DATA-TF PDU, sending 64 KiB, then stalling", runs)
    assert_bounded(runs)
    assert all(isinstance(o, expected) for o in outcomes), outcomes


async def test_a_peer_dripping_a_response_one_byte_per_100_ms() -> None:
    with OutOfProcess(DrippingPeer, interval_s=0.1) as peer:
        runs, outcomes = await cost_of(peer, dimse(peer.port))
    report("DIMSE peer dripping a C-FIND response at 1 byte / 100 ms", runs)
    assert_bounded(runs)
    assert all(isinstance(o, SourceTimeout) for o in outcomes), outcomes


async def test_a_peer_sending_10000_pending_responses_is_cut_at_the_deadline() -> None:
    with OutOfProcess(PendingFloodPeer, count=10_000) as peer:
        runs, outcomes = await cost_of(peer, dimse(peer.port))
        sent = peer.sent
    report(f"DIMSE peer sending 10,000 pending C-FIND responses (we read {sent} in {RUNS} runs)", runs)
    assert_bounded(runs)
    # Cut either way: by the deadline, or (a fast peer on a loaded machine) by max_results first.
    assert all(isinstance(o, SourceTimeout) or getattr(o, "truncated", False) for o in outcomes), outcomes
    assert peer.cancelled.is_set(), "the abandoned C-FIND was not C-CANCELled"


async def test_a_peer_sending_10000_pending_responses_is_cut_at_max_results() -> None:
    with OutOfProcess(PendingFloodPeer, count=10_000) as peer:
        runs, outcomes = await cost_of(peer, dimse(peer.port, max_results=50), deadline_s=5)
    report("DIMSE peer sending 10,000 pending C-FIND responses, max_results=50, deadline 5 s", runs)
    assert_bounded(runs, deadline_s=5)
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), outcome
        assert len(outcome.records) == 50 and outcome.truncated
        assert any("max_results" in w for w in outcome.warnings)
    assert peer.cancelled.is_set()


async def test_a_peer_streaming_on_after_the_abort_does_not_hold_a_truncated_answer() -> None:
    # The answer is complete at the 50th study: ending the association (C-CANCEL, A-ABORT) must
    # not make it wait for a peer that goes on sending. pynetdicom's abort() reads until the peer
    # closes, bounded only by the ARTIM timer: the answer used to come after the whole deadline.
    with OutOfProcess(StreamingPeer) as peer:
        runs, outcomes = await cost_of(peer, dimse(peer.port, max_results=50), deadline_s=5)
    report("DIMSE peer streaming responses on after our C-CANCEL and A-ABORT, max_results=50", runs)
    assert_bounded(runs, deadline_s=5)
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), outcome
        assert len(outcome.records) == 50 and outcome.truncated
    assert peer.cancelled.is_set() and peer.aborted.is_set()


async def test_a_series_the_peer_repeats_is_one_record_as_a_repeated_study_is() -> None:
    # One response loop reads every level: a repeated UID replaces its answer, and a peer
    # streaming the same three series on is cut at max_results responses.
    with OutOfProcess(StreamingPeer, distinct=3, level="SERIES") as peer:
        connector = dimse(peer.port, max_results=50)
        try:
            answer = await connector.find_series(
                SeriesQuery(study_instance_uid="2.25.1000.0"), Deadline.after(5)
            )
        finally:
            await connector.aclose()
    assert sorted(r.series_instance_uid for r in answer.records) == [f"2.25.1000.0.{i}" for i in range(3)]
    assert answer.truncated and "stopped after 50 responses (max_results)" in answer.warnings


async def test_a_dicomweb_peer_streaming_200_mb() -> None:
    with OutOfProcess(HugeHttpServer, size=200 * 1024 * 1024) as server:
        runs, outcomes = await cost_of(server, dicomweb(server.port))
        sent = server.sent
    report(f"DICOMweb peer streaming 200 MB chunked (it got {sent / 2**20:.0f} MiB out in {RUNS} runs)", runs)
    assert_bounded(runs)
    assert all(isinstance(o, SourceProtocolError) and "larger than" in str(o) for o in outcomes), outcomes
    assert sent < RUNS * 40 * 2**20, "the connector read far past its cap"


async def test_a_dicomweb_peer_answering_invalid_json() -> None:
    with OutOfProcess(
        StaticHttpServer, body=b'[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]}, ' + b"x" * 4096
    ) as server:
        runs, outcomes = await cost_of(server, dicomweb(server.port))
    report("DICOMweb peer answering invalid JSON", runs)
    assert_bounded(runs)
    assert all(isinstance(o, SourceProtocolError) and "JSON" in str(o) for o in outcomes), outcomes


@contextlib.asynccontextmanager
async def demo_hospitals() -> AsyncIterator[DemoHospitals]:
    hospitals = await start_demo_hospitals()
    try:
        yield hospitals
    finally:
        await hospitals.stop()


async def test_the_engine_answers_around_a_dripping_peer() -> None:
    async with demo_hospitals() as hospitals:
        with OutOfProcess(DrippingPeer, interval_s=0.1) as peer:
            hostile = {
                "id": "hostile",
                "kind": "dimse",
                "host": "127.0.0.1",
                "port": peer.port,
                "called_ae": "HOSTILE",
            }
            settings = settings_from_mapping(
                {"cache": {"backend": "memory"}, "sources": [*hospitals.sources_config(), hostile]}
            )
            threads0, fds0 = own_threads(pool=False), own_fds(peer)
            async with running_app(settings) as client:
                started = time.monotonic()
                response = await client.post(
                    "/graphql",
                    json={
                        "query": HISTORY_QUERY,
                        "variables": {
                            "patient": {"id": "DEMO-001"},
                            "deadlineMs": int(DEADLINE_S * 1000),
                            "freshness": "LIVE",
                        },
                    },
                )
                elapsed = time.monotonic() - started
                body = response.json()
                at_return = own_threads(), own_fds(peer)  # the demo sources' pooled associations are open
            await settle(peer, threads0, fds0, pool=False)
            settled = own_threads(pool=False), own_fds(peer)
    print(
        f"\n[hostile] engine + GraphQL, dripping source beside 3 demo hospitals: answered in {elapsed:.2f} s"
        f" (deadline {DEADLINE_S} s); threads {threads0}->{at_return[0]}->{settled[0]}, fds"
        f" {fds0}->{at_return[1]}->{settled[1]} (before the app->at the answer->app closed)"
    )
    assert settled[1] == fds0, "the app left sockets behind"
    assert settled[0] <= threads0, [t.name for t in threading.enumerate()]
    assert "errors" not in body, body
    result = body["data"]["patientHistory"]
    by_source = statuses(result)
    assert by_source.pop("hostile") == "TIMEOUT"
    assert set(by_source.values()) == {"OK"}, by_source
    assert result["exams"], "the healthy hospitals' exams are missing"
    assert elapsed <= DEADLINE_S + MARGIN_S + 0.2


# --- 200 slow clients against a real uvicorn ---------------------------------------------------

SLOW_CLIENTS = 200


def pacsfed_serve_args() -> list[str]:
    help_text = subprocess.run(
        [sys.executable, "-m", "pacsfed.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return ["--insecure-dev"] if "--insecure-dev" in help_text else []


async def wait_for_port(port: int, process: subprocess.Popen[bytes], within_s: float = 20) -> None:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else "server exited"
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.1)
    raise AssertionError("pacsfed serve did not start listening")


async def test_200_slow_clients_do_not_stop_a_normal_query(tmp_path: Path) -> None:
    async with demo_hospitals() as hospitals:
        port = closed_port()
        config = tmp_path / "pacsfed.yaml"
        config.write_text(  # YAML is a superset of JSON
            json.dumps(
                {
                    "cache": {"backend": "memory"},
                    "auth": {"mode": "none"},
                    "audit": {"journal_dir": str(tmp_path / "audit")},
                    "sources": hospitals.sources_config(),
                }
            )
        )
        command = [sys.executable, "-m", "pacsfed.cli", "--log-level", "WARNING", "serve"]
        command += [
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *pacsfed_serve_args(),
        ]
        process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the server is waited for below
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        slow: list[socket.socket] = []
        try:
            await wait_for_port(port, process)
            for _ in range(SLOW_CLIENTS):
                client = socket.create_connection(("127.0.0.1", port))
                client.setblocking(False)
                slow.append(client)
            head = b"POST /graphql HTTP/1.1\r\nHost: pacsfed\r\nX-Slow: " + b"a" * 64

            async def drip() -> None:
                for byte in head:
                    for client in slow:
                        with contextlib.suppress(OSError):
                            client.send(bytes([byte]))
                    await asyncio.sleep(1.0)

            dripping = asyncio.create_task(drip())
            await asyncio.sleep(2.5)  # every slow client has sent a few bytes of its head
            started = time.monotonic()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
                response = await http.post(
                    "/graphql",
                    json={
                        "query": HISTORY_QUERY,
                        "variables": {"patient": {"id": "DEMO-001"}, "deadlineMs": 3000},
                    },
                )
            elapsed = time.monotonic() - started
            still_open = sum(1 for client in slow if _still_open(client))
            dripping.cancel()
            print(
                f"\n[hostile] {SLOW_CLIENTS} clients sending headers at 1 byte/s: a normal patientHistory query"
                f" answered HTTP {response.status_code} in {elapsed:.2f} s; {still_open} slow connections"
                " still held open by the server"
            )
        finally:
            for client in slow:
                client.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    assert set(statuses(body["data"]["patientHistory"]).values()) == {"OK"}
    assert elapsed < 3.5


def _still_open(client: socket.socket) -> bool:
    """Whether the server still keeps this connection (no EOF, no reset)."""
    try:
        return client.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


@pytest.mark.parametrize("pool", [0, 1])
async def test_a_peer_that_never_answers_the_release_does_not_hold_the_answer(pool: int) -> None:
    # pool 0: every association is released after its query; pool 1: the second of two
    # concurrent queries finds the pool full and releases its association.
    with OutOfProcess(
        PendingFloodPeer, count=3
    ) as peer:  # three studies, Success, then silence (no A-RELEASE-RP)
        connector = dimse(peer.port, association_pool=pool, acse_timeout_s=5)
        started = time.monotonic()
        answers = await asyncio.gather(
            *(connector.find_studies(StudyQuery(patient_id="X"), Deadline.after(10)) for _ in range(2))
        )
        elapsed = time.monotonic() - started
        await connector.aclose()
    assert [len(answer.records) for answer in answers] == [3, 3]
    assert elapsed < 2.0, f"the answers waited {elapsed:.1f} s for the peer's release"


async def test_a_series_query_flooded_with_pending_responses_it_cannot_use_stops_at_max_results() -> None:
    # Study-level identifiers answer a SERIES C-FIND: none makes a record, and they must not run on to the deadline.
    with OutOfProcess(PendingFloodPeer, count=10_000) as peer:
        connector = dimse(peer.port, max_results=50)
        try:
            answer = await connector.find_series(SeriesQuery(study_instance_uid="1.2.3"), Deadline.after(30))
        finally:
            await connector.aclose()
    assert answer.truncated and not answer.records
    assert any("max_results" in w for w in answer.warnings)
