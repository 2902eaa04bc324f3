"""Report reads and WADO-RS retrievals under the source's circuit breaker and slots, as history queries are."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from unit.test_access_service import ListAuditTrail, _user
from unit.test_engine import Scripted
from unit.test_reports import PATIENT, PDF_ANSWER, Reporting
from unit.test_reports import _reads as _report_reads
from unit.test_reports import _service as _report_service
from unit.test_retrieve_service import REQUEST, Held, Retrieving, _read
from unit.test_retrieve_service import _service as _retrieve_service

from federation.audit.records import AuditOutcome
from federation.engine.engine import FederationEngine
from federation.engine.request import HistoryRequest
from federation.engine.resilience import CircuitState
from federation.errors import (
    QueryError,
    SourceBusy,
    SourceProtocolError,
    SourceSkipped,
    SourceTimeout,
    SourceUnreachable,
)
from federation.models import Deadline, Exam, SourceStatus
from federation.reports import ReportAnswer, ReportStatus, StudyRef
from federation.retrieve import RetrieveRequest, RetrieveStream
from federation.service import HistoryService
from federation.settings import CircuitSettings, QuerySettings
from web.dicomweb.wado import _body, _ClosingStream

_QUICK = QuerySettings(default_deadline_ms=50)
"""Retrievals wait for a slot no longer than the query deadline: short here, so that BUSY comes soon."""


def _limited(connector: Scripted, *, slots: int = 4, retrievals: int = 16, failures: int = 5) -> Scripted:
    """``connector`` with its slots and its breaker's threshold set (before an engine is made)."""
    update = {
        "max_concurrency": slots,
        "max_retrievals": retrievals,
        "circuit": CircuitSettings(failures=failures, reset_s=600),
    }
    connector.settings = connector.settings.model_copy(update=update)
    return connector


class Counting(Reporting):
    """A reporting source that counts its report reads in flight."""

    def __init__(self, source_id: str, uids: list[str]) -> None:
        super().__init__(source_id, uids, report_delay=0.02)
        self.running = self.most = 0

    async def fetch_report(self, study: StudyRef, deadline: Deadline) -> ReportAnswer:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await super().fetch_report(study, deadline)
        finally:
            self.running -= 1


async def _exam(service: HistoryService) -> Exam:
    (exam,) = (await service.patient_history(PATIENT, _user("history:read"))).exams
    return exam


async def test_an_unknown_source_is_a_query_error_and_an_open_circuit_refuses_the_call_at_once() -> None:
    engine = FederationEngine([_limited(Scripted("a"), failures=1)], None)
    with pytest.raises(QueryError):
        engine.guarded("nowhere", Deadline.after(1))
    with pytest.raises(SourceUnreachable):
        async with engine.guarded("a", Deadline.after(1)):
            raise SourceUnreachable("connection refused")
    assert engine.circuit_state("a") is CircuitState.OPEN
    with pytest.raises(SourceSkipped) as skipped:
        async with engine.guarded("a", Deadline.after(1)):
            raise AssertionError("the source is asked while its circuit is open")
    assert skipped.value.code == "SOURCE_UNAVAILABLE" and skipped.value.retry_after_s > 500


async def test_failing_report_reads_open_the_breaker_then_a_report_read_is_unavailable_at_once() -> None:
    audit = ListAuditTrail()
    source = _limited(
        Reporting("a", ["1.1"], report_error=SourceUnreachable("connection refused")), failures=2
    )
    service = _report_service(audit, source)
    exam = await _exam(service)
    access = _user("history:read")
    assert [(await service.exam_report(exam, access)).status for _ in range(2)] == ["ERROR", "ERROR"]
    assert service.engine.circuit_state("a") is CircuitState.OPEN
    report = await service.exam_report(exam, access)
    assert report.status is ReportStatus.UNAVAILABLE and "circuit open" in (report.error or "")
    assert source.asked == ["1.1", "1.1"]  # not asked the third time
    assert _report_reads(audit)[-1].outcome is AuditOutcome.FAILURE
    history = await service.patient_history(PATIENT, access)  # the same breaker: the history skips it too
    assert history.sources[0].status.value == "SKIPPED"


async def test_a_report_read_without_a_slot_before_its_deadline_is_busy_and_not_held_against_the_source() -> (
    None
):
    source = _limited(Reporting("a", ["1.1"]), slots=1, failures=1)
    service = _report_service(ListAuditTrail(), source)
    exam = await _exam(service)
    held = service.engine.guarded("a", Deadline.after(10))
    await held.start()  # another call holds the source's one slot
    report = await service.exam_report(exam, _user("history:read"), deadline_ms=50)
    assert report.status is ReportStatus.BUSY and "max_concurrency" in (report.error or "")
    assert not source.asked
    assert service.engine.circuit_state("a") is CircuitState.CLOSED
    held.end()
    assert (await service.exam_report(exam, _user("history:read"))).status is ReportStatus.NOT_FOUND


async def test_report_reads_take_no_more_of_a_source_at_once_than_its_max_concurrency() -> None:
    source = _limited(Counting("a", ["1.1"]), slots=1)
    service = _report_service(ListAuditTrail(), source)
    exam = await _exam(service)
    reports = await asyncio.gather(*(service.exam_report(exam, _user("history:read")) for _ in range(4)))
    assert {r.status for r in reports} == {ReportStatus.NOT_FOUND}
    assert (source.most, len(source.asked)) == (1, 4)


async def test_a_holder_whose_circuit_is_open_is_not_asked_and_alone_the_retrieval_is_unavailable() -> None:
    down = _limited(Retrieving("a", error=SourceUnreachable("connection refused")), failures=2)
    service = _retrieve_service(ListAuditTrail(), Held(("a",)), down)
    for _ in range(2):
        with pytest.raises(SourceUnreachable):
            await service.retrieve(REQUEST, _user("history:read"))
    assert service.engine.circuit_state("a") is CircuitState.OPEN
    with pytest.raises(SourceSkipped):
        await service.retrieve(REQUEST, _user("history:read"))
    assert len(down.retrieved) == 2


async def test_an_open_holder_is_passed_over_for_the_next_one() -> None:
    down = _limited(Retrieving("a", error=SourceUnreachable("connection refused")), failures=1)
    up = Retrieving("b")
    service = _retrieve_service(ListAuditTrail(), Held(("a", "b")), down, up)
    await (await service.retrieve(REQUEST, _user("history:read"))).aclose()  # a fails, b serves
    stream = await service.retrieve(REQUEST, _user("history:read"))
    assert stream.source_id == "b" and len(down.retrieved) == 1
    await stream.aclose()


async def test_a_streamed_retrieval_holds_its_slot_until_its_body_ends() -> None:
    source = _limited(Retrieving("a"), slots=1, retrievals=1)
    service = _retrieve_service(ListAuditTrail(), Held(("a",)), source, query=_QUICK)
    first = await service.retrieve(REQUEST, _user("history:read"))
    with pytest.raises(SourceBusy):  # pacsfed's own limit: the source was promised one retrieval at once
        await service.retrieve(REQUEST, _user("history:read"))
    assert len(source.retrieved) == 1
    # The download holds a retrieval slot, not the source's only query slot: a history query is asked.
    history = await service.patient_history(PATIENT, _user("history:read"))
    assert [outcome.status for outcome in history.sources] == [SourceStatus.OK]
    assert await _read(first)
    second = await service.retrieve(REQUEST, _user("history:read"))
    await second.aclose()  # a body closed unread gives its slot back too
    unread = await service.retrieve(REQUEST, _user("history:read"))
    del unread  # a caller gone before the body began: collected unstarted
    gc.collect()
    await (await service.retrieve(REQUEST, _user("history:read"))).aclose()
    assert service.engine.circuit_state("a") is CircuitState.CLOSED


async def test_a_body_that_breaks_off_counts_against_the_holders_breaker() -> None:
    source = _limited(Retrieving("a", broken=True), failures=1)
    service = _retrieve_service(ListAuditTrail(), Held(("a",)), source)
    stream = await service.retrieve(REQUEST, _user("history:read"))
    with pytest.raises(SourceTimeout):
        await _read(stream)
    assert service.engine.circuit_state("a") is CircuitState.OPEN


async def test_a_report_document_of_a_source_whose_circuit_is_open_is_refused_at_once_and_audited() -> None:
    audit = ListAuditTrail()
    source = _limited(Reporting("a", ["1.9"], {"1.9": PDF_ANSWER}), failures=1)
    service = _report_service(audit, source)
    rita = _user("history:read", subject="user:rita")
    report = await service.exam_report(await _exam(service), rita)
    link = (report.url_path or "").removeprefix("/reports/")
    with pytest.raises(SourceUnreachable):  # another call to the source fails: its circuit opens
        async with service.engine.guarded("a", Deadline.after(1)):
            raise SourceUnreachable("connection refused")
    with pytest.raises(SourceSkipped):
        await service.report_document(link, rita)
    assert _report_reads(audit)[-1].outcome is AuditOutcome.FAILURE
    assert "SOURCE_UNAVAILABLE" in _report_reads(audit)[-1].detail


async def test_report_reads_hold_at_most_half_a_sources_slots_so_a_history_query_is_asked_meanwhile() -> None:
    """A FHIR search reads every exam's report at once: the physician's next query is not BUSY behind them."""
    source = _limited(Counting("a", [f"1.{n}" for n in range(40)]), slots=4)
    service = _report_service(ListAuditTrail(), source)
    reader = _user("history:read")
    exams = (await service.patient_history(PATIENT, reader)).exams
    reads = asyncio.gather(*(service.exam_report(exam, reader) for exam in exams))
    await asyncio.sleep(0.005)  # the report reads have taken what they may
    history = await service.patient_history(PATIENT, reader, HistoryRequest(deadline_ms=200))
    assert [outcome.status for outcome in history.sources] == [SourceStatus.OK]
    assert {report.status for report in await reads} == {ReportStatus.NOT_FOUND}
    assert source.most == 2  # half of max_concurrency 4


class _SlowToFail(Retrieving):
    """A holder whose first byte never comes: it fails after ``delay``."""

    def __init__(self, source_id: str, delay: float) -> None:
        super().__init__(source_id, error=SourceTimeout("no first byte"))
        self.delay = delay

    async def retrieve(self, request: RetrieveRequest) -> RetrieveStream:
        await asyncio.sleep(self.delay)
        return await super().retrieve(request)


async def test_a_slow_first_holder_leaves_the_next_holder_its_whole_wait_for_a_slot() -> None:
    slow, up = _SlowToFail("a", 0.1), Retrieving("b")
    service = _retrieve_service(ListAuditTrail(), Held(("a", "b")), slow, up, query=_QUICK)
    stream = await service.retrieve(REQUEST, _user("history:read"))  # a took longer than the 50 ms wait
    assert stream.source_id == "b" and await _read(stream)
    assert service.engine.load_counters()["sources_busy"] == 0


async def test_a_download_that_is_a_half_open_probe_closes_the_circuit_once_it_answers() -> None:
    source = _limited(Retrieving("a"), failures=1)
    service = _retrieve_service(ListAuditTrail(), Held(("a",)), source)
    engine = service.engine
    with pytest.raises(SourceUnreachable):
        async with engine.guarded("a", Deadline.after(1)):
            raise SourceUnreachable("connection refused")
    engine._breakers["a"].reset_s = 0.01
    await asyncio.sleep(0.02)
    stream = await service.retrieve(REQUEST, _user("history:read"))  # the probe: its headers came
    history = await service.patient_history(PATIENT, _user("history:read"))  # while the body streams
    assert [outcome.status for outcome in history.sources] == [SourceStatus.OK]
    assert engine.circuit_state("a") is CircuitState.CLOSED
    assert await _read(stream)


async def test_a_viewer_waiting_for_a_retrieval_slot_is_not_pacsfed_saturated_and_is_counted_apart() -> None:
    source = _limited(Retrieving("a"), retrievals=1)
    service = _retrieve_service(
        ListAuditTrail(), Held(("a",)), source, query=QuerySettings(default_deadline_ms=800)
    )
    engine = service.engine
    first = await service.retrieve(REQUEST, _user("history:read"))  # a download in progress
    waiting = asyncio.ensure_future(service.retrieve(REQUEST, _user("history:read")))
    await asyncio.sleep(0.6)  # longer than a wait for a query slot that says "saturated"
    assert engine.saturation() == []
    with pytest.raises(SourceBusy, match="max_retrievals"):
        await waiting
    counters = engine.load_counters()
    assert (counters["retrievals_busy"], counters["sources_busy"]) == (1, 0)
    assert await _read(first)


async def test_a_viewer_gone_while_a_chunk_is_sent_gives_the_slot_and_the_source_connection_back_at_once() -> (
    None
):
    """Starlette leaves a body suspended when the client's disconnect cancels a send: pacsfed closes it."""
    source = _limited(Retrieving("a", body=(b"x",) * 5), retrievals=1)
    service = _retrieve_service(ListAuditTrail(), Held(("a",)), source)
    stream = await service.retrieve(REQUEST, _user("history:read"))
    response = _ClosingStream(_body(stream), status_code=200)
    gone = asyncio.Event()
    sent = 0

    async def send(message: Any) -> None:
        nonlocal sent
        sent += 1
        if sent == 2:  # the first chunk: the client reads slowly, then goes
            gone.set()
            await asyncio.sleep(3600)

    async def receive() -> dict[str, str]:
        await gone.wait()
        return {"type": "http.disconnect"}

    gc.disable()  # what a full collection would free must not be what frees it
    try:
        await response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send)
        assert source.closed
        await (await service.retrieve(REQUEST, _user("history:read"))).aclose()  # the one slot is free
    finally:
        gc.enable()


async def test_report_reads_a_source_refuses_leave_its_circuit_closed_and_its_history_asked() -> None:
    """A PACS refusing the SERIES-level C-FIND a report read needs is up: its history is still asked."""
    refused = SourceProtocolError("SERIES-level C-FIND failed with status 0xC000")
    source = _limited(Reporting("a", ["1.1"], report_error=refused), failures=2)
    service = _report_service(ListAuditTrail(), source)
    exam = await _exam(service)
    access = _user("history:read")
    assert [(await service.exam_report(exam, access)).status for _ in range(4)] == ["ERROR"] * 4
    assert service.engine.circuit_state("a") is CircuitState.CLOSED
    history = await service.patient_history(PATIENT, access)
    assert [outcome.status for outcome in history.sources] == [SourceStatus.OK]
