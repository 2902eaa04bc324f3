"""WADO-RS through the service door: who may, which holder serves, the fallback before the first byte, the audit."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from unit.test_access_service import ListAuditTrail, _user
from unit.test_engine import Scripted

from federation.access.principals import AccessContext, Principal, PrincipalKind, ShareGrant
from federation.access.share import MemoryShareStore, ShareCodes
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine.engine import FederationEngine
from federation.engine.resilience import CircuitState
from federation.errors import (
    AccessError,
    Overloaded,
    QueryError,
    SourceProtocolError,
    SourceTimeout,
    SourceUnreachable,
)
from federation.models import Exam, ExamLocation, PatientQuery, SourceOutcome, SourceStatus
from federation.retrieve import RetrieveRequest, RetrieveStream
from federation.search import StudyMatch, StudySearch, StudySearchResult
from federation.service import HOLDERS_TTL_S, HistoryService, HolderMemory
from federation.settings import QuerySettings
from federation.settings_security import ShareSettings

STUDY = "1.2.840.99.1"
_FAR = dt.datetime(2999, 1, 1, tzinfo=dt.UTC)
REQUEST = RetrieveRequest(
    STUDY, "series/1.2.3/instances/1.2.3.4", accept="multipart/related; type=application/dicom"
)


class Retrieving(Scripted):
    """A scripted source that serves WADO-RS: ``body`` chunks, a ``status``, or ``error`` before the first byte."""

    supports_retrieve = True

    def __init__(
        self,
        source_id: str,
        *,
        body: tuple[bytes, ...] = (b"--b\r\n", b"DICM", b"--b--"),
        status: int = 200,
        error: Exception | None = None,
        broken: bool = False,
    ) -> None:
        super().__init__(source_id)
        self.body, self.status, self.retrieve_error, self.broken = body, status, error, broken
        self.retrieved: list[RetrieveRequest] = []
        self.closed = False

    async def retrieve(self, request: RetrieveRequest) -> RetrieveStream:
        self.retrieved.append(request)
        if self.retrieve_error is not None:
            raise self.retrieve_error
        stream = RetrieveStream(self.status, "multipart/related; boundary=b", self.id, self._chunks())
        stream.release = self._release
        return stream

    async def _chunks(self) -> AsyncIterator[bytes]:
        for chunk in self.body:
            yield chunk
        if self.broken:
            raise SourceTimeout("the answer stalled")

    async def _release(self) -> None:
        self.closed = True


@dataclasses.dataclass
class Held:
    """What the fake study search says: which sources hold the study, which failed."""

    holding: tuple[str, ...]
    failed: tuple[str, ...] = ()
    searches: list[StudySearch] = dataclasses.field(default_factory=list)


def _service(
    audit: ListAuditTrail, held: Held, *connectors: Scripted, query: QuerySettings | None = None
) -> HistoryService:
    engine = FederationEngine(list(connectors), None, query)
    service = HistoryService(
        engine,
        audit,
        ShareCodes(ShareSettings(), MemoryShareStore()),
        emergency_window_s=3600,
        national_issuer=None,
    )
    infos = {c.id: c.info for c in connectors}

    async def search_studies(search: StudySearch, access: AccessContext, **_: Any) -> StudySearchResult:
        held.searches.append(search)
        asked = search.source_ids or tuple(infos)
        locations = tuple(
            ExamLocation(source=infos[s], patient_id="PA-7") for s in held.holding if s in asked
        )
        outcomes = tuple(
            SourceOutcome(
                source=infos[s],
                status=SourceStatus.UNREACHABLE if s in held.failed else SourceStatus.OK,
                latency_ms=1,
            )
            for s in asked
        )
        studies = (StudyMatch(exam=Exam(study_instance_uid=STUDY, locations=locations)),) if locations else ()
        return StudySearchResult(studies=studies, sources=outcomes, complete=not held.failed)

    service.search_studies = search_studies  # type: ignore[method-assign]
    return service


async def _read(stream: RetrieveStream) -> bytes:
    return b"".join([chunk async for chunk in stream.chunks])


def _images(audit: ListAuditTrail) -> list[Any]:
    return [r for r in audit.records if r.action is AuditAction.IMAGE_READ]


async def test_the_first_holder_serves_and_the_access_and_outcome_are_audited() -> None:
    audit = ListAuditTrail()
    first, second, elsewhere = Retrieving("a"), Retrieving("b"), Retrieving("c")
    service = _service(audit, Held(("b", "a")), elsewhere, first, second)
    stream = await service.retrieve(REQUEST, _user("history:read"))
    assert (stream.source_id, await _read(stream)) == ("a", b"--b\r\nDICM--b--")
    assert first.retrieved == [REQUEST] and not second.retrieved and not elsewhere.retrieved
    await stream.aclose()  # as the front end does once the body is sent
    assert first.closed
    access, outcome = _images(audit)
    assert (access.outcome, access.sources, access.detail) == (
        AuditOutcome.SUCCESS,
        ["a", "b"],
        f"access; study {STUDY}",
    )
    assert access.patient_ids == ["PA-7^^^"]
    assert (outcome.outcome, outcome.sources, outcome.detail) == (
        AuditOutcome.SUCCESS,
        ["a"],
        f"HTTP 200, 14 bytes; study {STUDY}",
    )


async def test_a_holder_failing_or_answering_404_before_the_first_byte_hands_over_to_the_next() -> None:
    audit = ListAuditTrail()
    gone = Retrieving("a", error=SourceUnreachable("connection refused"))
    missing = Retrieving("b", status=404, body=(b"not here",))
    serving = Retrieving("c")
    held = Held(("a", "b"), failed=("c",))  # c's search failed: tried last, since it may hold it
    service = _service(audit, held, gone, missing, serving)
    stream = await service.retrieve(REQUEST, _user("history:read"))
    assert stream.source_id == "c" and await _read(stream)
    assert missing.closed


async def test_every_holder_failing_is_the_last_failure_and_no_holder_is_not_found() -> None:
    audit = ListAuditTrail()
    service = _service(
        audit,
        Held(("a", "b")),
        Retrieving("a", error=SourceUnreachable("refused")),
        Retrieving("b", error=SourceProtocolError("WADO-RS answered HTTP 500")),
    )
    with pytest.raises(SourceProtocolError):
        await service.retrieve(REQUEST, _user("history:read"))
    assert [r.outcome for r in _images(audit)] == [AuditOutcome.SUCCESS, AuditOutcome.FAILURE]
    nowhere = _service(ListAuditTrail(), Held(()), Retrieving("a"))
    with pytest.raises(QueryError) as refused:
        await nowhere.retrieve(REQUEST, _user("history:read"))
    assert refused.value.code == "NOT_FOUND"


async def test_a_body_broken_off_is_audited_as_a_failure() -> None:
    audit = ListAuditTrail()
    service = _service(audit, Held(("a",)), Retrieving("a", broken=True))
    stream = await service.retrieve(REQUEST, _user("history:read"))
    with pytest.raises(SourceTimeout):
        await _read(stream)
    assert (_images(audit)[-1].outcome, _images(audit)[-1].detail) == (
        AuditOutcome.FAILURE,
        f"SourceTimeout, 14 bytes; study {STUDY}",
    )


async def test_callers_are_held_to_their_scopes_sources_and_shared_studies() -> None:
    audit = ListAuditTrail()
    a, b = Retrieving("a"), Retrieving("b")
    held = Held(("a", "b"))
    service = _service(audit, held, a, b)
    with pytest.raises(AccessError):
        await service.retrieve(REQUEST, _user("share:create"))
    assert _images(audit)[-1].outcome is AuditOutcome.DENIED and not held.searches
    stream = await service.retrieve(REQUEST, _user("history:read", sources={"b"}))
    assert stream.source_id == "b" and held.searches[-1].source_ids == ("b",)
    await stream.aclose()

    def shared(studies: frozenset[str] | None) -> AccessContext:
        grant = ShareGrant("s1", PatientQuery(patient_id="PA-7"), studies, expires_at=_FAR)
        principal = Principal("share:s1", PrincipalKind.SHARE, frozenset(), share=grant)
        return AccessContext(principal, None, "req-2")

    with pytest.raises(AccessError):
        await service.retrieve(REQUEST, shared(frozenset({"1.2.3.other"})))
    assert await _read(await service.retrieve(REQUEST, shared(frozenset({STUDY}))))
    await (await service.retrieve(REQUEST, shared(None))).aclose()
    assert held.searches[-1].patient == PatientQuery(patient_id="PA-7")  # its patient's study only


async def test_only_sources_that_can_retrieve_are_asked() -> None:
    held = Held(("q", "a"))
    service = _service(ListAuditTrail(), held, Scripted("q"), Retrieving("a"))
    stream = await service.retrieve(REQUEST, _user("history:read"))
    assert stream.source_id == "a" and held.searches[-1].source_ids == ("a",)
    await stream.aclose()


async def test_where_a_study_was_found_is_remembered_for_the_next_requests_of_a_viewer() -> None:
    now = [0.0]
    held = Held(("b",))
    a, b = Retrieving("a", status=404), Retrieving("b")
    service = _service(ListAuditTrail(), held, a, b)
    service.holder_memory = HolderMemory(clock=lambda: now[0])
    for _ in range(3):  # a viewer's instances and frames, one request each
        await (await service.retrieve(REQUEST, _user("history:read"))).aclose()
    assert len(held.searches) == 1 and len(b.retrieved) == 3 and not a.retrieved
    await (await service.retrieve(REQUEST, _user("history:read", sources={"b"}))).aclose()
    assert len(held.searches) == 2  # other sources open to this caller: its own search
    now[0] += HOLDERS_TTL_S + 1
    await (await service.retrieve(REQUEST, _user("history:read"))).aclose()
    assert len(held.searches) == 3  # too old: asked again
    b.status = 404  # the study moved away from b
    with pytest.raises(QueryError):
        await service.retrieve(REQUEST, _user("history:read"))
    held.holding = ("a",)
    a.status = 200
    stream = await service.retrieve(REQUEST, _user("history:read"))
    assert stream.source_id == "a" and len(held.searches) == 4
    await stream.aclose()


async def test_past_the_pending_query_limit_a_retrieve_is_overloaded_and_no_source_is_asked() -> None:
    a, audit = Retrieving("a"), ListAuditTrail()
    service = _service(audit, Held(("a",)), a)
    with service.engine.admitted():  # the limit of the test engine is 100: take every place
        held = [service.engine.admitted() for _ in range(99)]
        for place in held:
            place.__enter__()
        try:
            with pytest.raises(Overloaded):
                await service.retrieve(REQUEST, _user("history:read"))
        finally:
            for place in held:
                place.__exit__(None, None, None)
    assert not a.retrieved and not _images(audit)
    await (await service.retrieve(REQUEST, _user("history:read"))).aclose()
    assert a.retrieved == [REQUEST]


async def test_a_holder_whose_breaker_is_open_is_tried_last() -> None:
    a, b = Retrieving("a"), Retrieving("b")
    service = _service(ListAuditTrail(), Held(("a", "b")), a, b)
    states = {"a": CircuitState.OPEN, "b": CircuitState.CLOSED}
    service.engine.circuit_state = states.__getitem__  # type: ignore[method-assign]
    stream = await service.retrieve(REQUEST, _user("history:read"))
    assert stream.source_id == "b" and not a.retrieved
    await stream.aclose()


async def test_a_break_the_glass_caller_retrieves_what_its_study_search_finds_audited_as_emergency() -> None:
    audit = ListAuditTrail()
    held = Held(("a",))
    service = _service(audit, held, Retrieving("a"))
    stream = await service.retrieve(REQUEST, _user("history:emergency"))
    assert await _read(stream)
    assert held.searches  # the study search decides (it keeps only patients with an open window)
    assert all(record.emergency for record in _images(audit))
