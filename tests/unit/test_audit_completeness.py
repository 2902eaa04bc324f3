"""The audit trail is complete and cannot be flooded (issue 12, item 4), through the HistoryService."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from unit.test_access_service import ListAuditTrail, _user
from unit.test_engine import Scripted

from connectors.base import SourceAnswer
from federation.access.principals import AccessContext, Principal, PrincipalKind
from federation.access.share import MemoryShareStore, ShareCodes
from federation.audit.flood import FloodGate
from federation.audit.lists import returned_patient_ids
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.engine.engine import FederationEngine
from federation.engine.request import HistoryRequest
from federation.errors import AccessError, CacheError
from federation.identity.resolver import Identifier, IdentityLink, MemoryIdentityStore
from federation.models import (
    Candidate,
    Deadline,
    Exam,
    ExamLocation,
    PatientHistory,
    PatientQuery,
    SourceInfo,
    StudyQuery,
    StudyRecord,
)
from federation.service import HistoryService
from federation.settings_security import ShareSettings

PATIENT = PatientQuery(patient_id="PA-001")
DUPONT = PatientQuery(family_name="Dupont", given_name="Jean", birth_date=dt.date(1950, 1, 1))
ANONYMOUS = Principal("anonymous", PrincipalKind.SHARE, frozenset())


class Namesakes(Scripted):
    """Answers a demographic (name or birth date) query with two patients of its own."""

    supports_demographic_search = True

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        if query.patient_id is not None:
            return await super().find_studies(query, deadline)
        return SourceAnswer(
            [
                StudyRecord(
                    source_id=self.id,
                    study_instance_uid=f"9.{n}",
                    patient_id=f"NS-{n}",
                    issuer_of_patient_id="HOSP_N",
                    patient_name="DUPONT^JEAN",
                    patient_birth_date=dt.date(1950, 1, 1),
                )
                for n in (1, 2)
            ]
        )


def _service(
    audit: ListAuditTrail,
    *,
    window_s: float = 3600,
    max_failures: int = 10,
    identity_store: MemoryIdentityStore | None = None,
) -> HistoryService:
    connectors = [Namesakes("hosp-n", uids=["1.2.3"]), Scripted("hosp-b", uids=["1.2.5"])]
    store = identity_store if identity_store is not None else MemoryIdentityStore()
    engine = FederationEngine(connectors, None, identity_store=store)
    shares = ShareCodes(ShareSettings(max_failures=max_failures, lockout_s=900), MemoryShareStore())
    return HistoryService(engine, audit, shares, emergency_window_s=window_s, national_issuer="NISS")


@pytest.fixture
def audit() -> ListAuditTrail:
    return ListAuditTrail()


def test_the_patients_an_answer_returned_are_its_exams_and_its_candidates() -> None:
    source = SourceInfo(id="a", name="A", kind="dimse")

    def exam(uid: str, pid: str) -> Exam:
        return Exam(study_instance_uid=uid, locations=(ExamLocation(source=source, patient_id=pid),))

    history = PatientHistory(
        complete=True,
        exams=(exam("1", "P1"), exam("2", "P1")),
        sources=(),
        candidates=(
            Candidate(score=0.9, reasons=(), source=source, patient_id="C1", issuer_of_patient_id="X"),
            Candidate(score=0.5, reasons=(), source=source, exams=(exam("3", "C2"),)),
        ),
    )
    assert returned_patient_ids(history) == ["P1^^^", "C1^^^X", "C2^^^"]


async def test_a_demographic_search_is_found_by_every_patient_it_returned(audit: ListAuditTrail) -> None:
    service = _service(audit)
    history = await service.patient_history(DUPONT, _user("history:read"))
    returned = {(c.patient_id, c.issuer_of_patient_id) for c in history.candidates}
    assert returned == {("NS-1", "HOSP_N"), ("NS-2", "HOSP_N")}
    # The access (journaled before any source was asked) names what was asked; the outcome what came back.
    [query] = [r for r in audit.records if r.action is AuditAction.PATIENT_QUERY and r.detail != "access"]
    assert {"NS-1^^^HOSP_N", "NS-2^^^HOSP_N"} <= set(query.patient_ids)
    for patient_id in ("NS-2", "NS-1^^^HOSP_N"):
        found = await service.audit_events(_user("audit:read"), patient_id, 10)
        assert [e.id for e in found if e.action is AuditAction.PATIENT_QUERY] == [query.id]


async def test_every_linked_identifier_is_audited_in_parts(audit: ListAuditTrail) -> None:
    service = _service(audit)
    now = dt.datetime.now(dt.UTC)
    links = [
        IdentityLink(f"person-{n}", Identifier("HOSP_A", f"ID-{n:04d}"), "admin", now) for n in range(901)
    ]
    assert await service.add_identity_links(_user("identity:admin"), links) == 901
    records = [r for r in audit.records if r.action is AuditAction.IDENTITY_CHANGE]
    assert len(records) == 10 and all(len(r.patient_ids) <= 100 for r in records)
    assert [r.detail for r in records][::9] == ["part 1/10", "part 10/10"]
    audited = [pid for r in records for pid in r.patient_ids]
    assert sorted(audited) == sorted(f"ID-{n:04d}^^^HOSP_A" for n in range(901))
    last = await service.audit_events(_user("audit:read"), "ID-0900", 10)
    assert [r.action for r in last][-1] is AuditAction.IDENTITY_CHANGE


class RefusingIdentityStore(MemoryIdentityStore):
    """An identity store whose writes fail, as an Elasticsearch node that times out does."""

    async def add_links(self, links: list[IdentityLink]) -> int:
        raise CacheError("identity links could not be written (ConnectionTimeout)")


async def test_a_failed_identity_import_is_audited_as_a_failure_for_every_identifier(
    audit: ListAuditTrail,
) -> None:
    service = _service(audit, identity_store=RefusingIdentityStore())
    now = dt.datetime.now(dt.UTC)
    links = [IdentityLink("person-1", Identifier("HOSP_A", f"ID-{n}"), "admin", now) for n in range(3)]
    with pytest.raises(CacheError):
        await service.add_identity_links(_user("identity:admin"), links)
    outcomes = [r.outcome for r in audit.records if r.action is AuditAction.IDENTITY_CHANGE]
    assert outcomes == [AuditOutcome.SUCCESS, AuditOutcome.FAILURE]
    failed = audit.records[-1]
    assert sorted(failed.patient_ids) == [f"ID-{n}^^^HOSP_A" for n in range(3)]


async def test_a_list_past_its_cap_says_how_much_it_left_out(audit: ListAuditTrail) -> None:
    service = _service(audit)
    now = dt.datetime.now(dt.UTC)
    links = [IdentityLink("p", Identifier("HOSP_A", f"ID-{n}"), "x", now) for n in range(901)]
    with pytest.raises(AccessError):  # refused: nothing linked; the attempt is one capped record
        await service.add_identity_links(_user("history:read"), links)
    with pytest.raises(AccessError):
        await service.patient_history(
            PATIENT, _user("audit:read"), HistoryRequest(source_ids=tuple(f"s{n}" for n in range(1500)))
        )
    refused_links, refused_query = audit.records
    assert (len(refused_links.patient_ids), refused_links.patient_ids_omitted) == (100, 801)
    assert (len(refused_query.sources), refused_query.sources_omitted) == (1000, 500)


async def test_a_break_the_glass_share_ends_with_the_window_and_flags_every_read(
    audit: ListAuditTrail,
) -> None:
    service = _service(audit, window_s=600)
    er = _user("history:emergency", "share:create", subject="user:er")
    with pytest.raises(AccessError):  # no window open yet: nothing to share
        await service.create_share(er, PATIENT, None, 86_400, False)
    await service.patient_history(PATIENT, er, HistoryRequest(reason="trauma bay 2, unconscious"))
    created = await service.create_share(er, PATIENT, None, 86_400, False)
    assert created.record.expires_at <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=600)
    anonymous = AccessContext(ANONYMOUS, "10.9.9.9")
    redeemed = await service.redeem_share(created.code, "10.9.9.9", anonymous)
    assert redeemed.expires_at == created.record.expires_at
    reader = AccessContext(await service.share_principal(redeemed.token), "10.9.9.9")
    await service.patient_history(PATIENT, reader)
    shared = audit.records[3:]  # after the refusal and the emergency query itself (access, outcome)
    assert [r.action for r in shared] == [
        AuditAction.SHARE_CREATE,
        AuditAction.SHARE_REDEEM,
        AuditAction.PATIENT_QUERY,  # the access, before any source was asked
        AuditAction.PATIENT_QUERY,  # the outcome
    ]
    assert all(r.emergency and r.reason == "trauma bay 2, unconscious" for r in shared)


async def test_a_reader_s_share_is_not_flagged(audit: ListAuditTrail) -> None:
    service = _service(audit)
    created = await service.create_share(_user("history:read", "share:create"), PATIENT, None, 86_400, False)
    assert created.record.expires_at - created.record.created_at == dt.timedelta(hours=24)
    assert not audit.records[-1].emergency and created.record.emergency_reason is None


async def test_flooded_authentication_failures_are_journaled_as_one_summary_a_round(
    audit: ListAuditTrail,
) -> None:
    service = _service(audit)
    flood = AccessContext(ANONYMOUS, "10.66.66.66")
    for _ in range(100):
        await service.authentication_failed(flood, "BAD_TOKEN")
    assert len(audit.records) == 20
    assert await service.journal_flood_summaries() == 1
    summary = audit.records[-1]
    assert (summary.action, summary.outcome, summary.client_address) == (
        AuditAction.AUTHENTICATION,
        AuditOutcome.DENIED,
        "10.66.66.66",
    )
    assert summary.suppressed == 80 and summary.detail == "summary: BAD_TOKEN"
    assert await service.journal_flood_summaries() == 0  # nothing new: nothing written


class Signalling(ListAuditTrail):
    """Sets ``summarized`` when a summary record is written."""

    def __init__(self) -> None:
        super().__init__()
        self.summarized = asyncio.Event()

    async def record(self, record: AuditRecord) -> None:
        await super().record(record)
        if record.suppressed:
            self.summarized.set()


async def test_the_summaries_are_journaled_in_the_background() -> None:
    audit = Signalling()
    service = _service(audit)
    for _ in range(25):
        await service.authentication_failed(AccessContext(ANONYMOUS, "10.5.5.5"), "BAD_TOKEN")
    task = asyncio.create_task(service.journal_flood_summaries_forever(interval_s=0.01))
    try:
        async with asyncio.timeout(30):
            await audit.summarized.wait()
    finally:
        task.cancel()
    assert [r.suppressed for r in audit.records if r.suppressed] == [5]


async def test_failed_redemptions_reach_the_journal_within_a_budget_per_address(
    audit: ListAuditTrail,
) -> None:
    service = _service(audit, max_failures=10)
    anonymous = AccessContext(ANONYMOUS, "10.6.6.6")
    spellings = ["wrong-code-aaaa", "WRONGCODEAAAA", "Wrong Code Aaaa", " w-r-o-n-g-codeaaaa "]
    for attempt in range(200):  # every spelling of a code is an attempt, and so is each alias
        with pytest.raises(AccessError):
            await service.redeem_share(spellings[attempt % 4], "10.6.6.6", anonymous)
    other = AccessContext(ANONYMOUS, "10.1.1.1")
    with pytest.raises(AccessError):
        await service.redeem_share("AAAA-BBBB", "10.1.1.1", other)
    individual = [r for r in audit.records if r.action is AuditAction.SHARE_REDEEM]
    by_address = [r.client_address for r in individual]
    assert by_address.count("10.6.6.6") == 10 and by_address.count("10.1.1.1") == 1
    assert {r.detail for r in individual} == {"BAD_SHARE_CODE"}
    assert await service.journal_flood_summaries() == 1
    assert (audit.records[-1].suppressed, audit.records[-1].detail) == (190, "summary: LOCKED_OUT")
    for _ in range(5):  # the next minute: again one summary for the address, however many tries
        with pytest.raises(AccessError):
            await service.redeem_share("WRONGCODEAAAA", "10.6.6.6", anonymous)
    assert await service.journal_flood_summaries() == 1
    assert audit.records[-1].suppressed == 5


def test_the_gate_bounds_a_spray_of_addresses() -> None:
    now = [0.0]
    gate = FloodGate(2, total=5, max_keys=3, clock=lambda: now[0])
    admitted = [gate.admit("authentication", f"10.0.0.{n}", "BAD") for n in range(10)]
    assert admitted.count(True) == 5  # the total budget a minute
    assert gate.pending == 5
    drained = gate.drain()
    assert sum(s.count for s in drained) == 5 and len(drained) <= 4  # three addresses and "*"
    now[0] = 61.0
    assert gate.admit("authentication", "10.0.0.9", "BAD")  # a new minute, a new budget


async def test_a_subscription_stopped_early_is_audited_with_the_patients_it_saw(
    audit: ListAuditTrail,
) -> None:
    service = _service(audit)
    updates = service.stream_history(DUPONT, _user("history:read"))
    seen: set[str] = set()
    async for update in updates:
        seen = set(returned_patient_ids(update.history))
        if seen:
            break  # the client goes away before the FINAL event
    await updates.aclose()
    assert seen
    [stopped] = [r for r in audit.records if r.detail == "progressive-stopped"]
    assert seen <= set(stopped.patient_ids)
    assert not [r for r in audit.records if r.detail == "progressive-final"]
