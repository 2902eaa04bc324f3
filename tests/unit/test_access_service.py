"""Authorization, break-the-glass and share codes through the HistoryService (every decision audited)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from unit.test_engine import Scripted

from federation.access.principals import AccessContext, Principal, PrincipalKind
from federation.access.share import MemoryShareStore, ShareCodes, normalize_code
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord, AuditTrail
from federation.engine.engine import FederationEngine
from federation.engine.request import HistoryRequest
from federation.errors import AccessError, AuditError, AuditUnavailable, AuthenticationError, QueryError
from federation.models import PatientQuery
from federation.service import HistoryService
from federation.settings_security import ShareSettings

PATIENT = PatientQuery(patient_id="PA-001")
OTHER = PatientQuery(patient_id="PA-002")


class ListAuditTrail(AuditTrail):
    """Keeps records in a list; ``broken`` makes every write fail like a full disk."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.broken = False

    async def record(self, record: AuditRecord) -> None:
        if self.broken:
            raise AuditError("journal unavailable")
        self.records.append(record)

    async def search(
        self, *, patient_id: str | None = None, actor: str | None = None, first: int = 50
    ) -> list[AuditRecord]:
        found = [
            r
            for r in reversed(self.records)
            if patient_id is None
            or any(p == patient_id or p.split("^^^")[0] == patient_id for p in r.patient_ids)
        ]
        return found[:first]

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _user(*scopes: str, sources: set[str] | None = None, subject: str = "user:dr") -> AccessContext:
    principal = Principal(
        subject=subject,
        kind=PrincipalKind.USER,
        scopes=frozenset(scopes),
        sources=frozenset(sources) if sources is not None else None,
    )
    return AccessContext(principal, client_address="10.0.0.7", request_id="req-1")


@pytest.fixture
def audit() -> ListAuditTrail:
    return ListAuditTrail()


@pytest.fixture
async def service(audit: ListAuditTrail) -> HistoryService:
    connectors = [Scripted("hosp-a", uids=["1.2.3", "1.2.4"]), Scripted("hosp-b", uids=["1.2.5"])]
    engine = FederationEngine(connectors, None)
    shares = ShareCodes(ShareSettings(), MemoryShareStore())
    return HistoryService(engine, audit, shares, emergency_window_s=3600, national_issuer="NISS")


async def test_a_reader_gets_the_history_and_the_access_is_audited(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    history = await service.patient_history(PATIENT, _user("history:read"))
    assert {e.study_instance_uid for e in history.exams} == {"1.2.3", "1.2.4", "1.2.5"}
    access, record = audit.records  # the access before any source was asked, then the outcome
    assert (access.detail, access.exam_count, access.patient_ids) == ("access", None, ["PA-001^^^"])
    assert sorted(access.sources) == ["hosp-a", "hosp-b"]
    assert record.action is AuditAction.PATIENT_QUERY
    assert record.outcome is AuditOutcome.SUCCESS
    assert record.actor == "user:dr"
    assert record.patient_ids[0] == "PA-001^^^"
    assert sorted(record.sources) == ["hosp-a", "hosp-b"]
    assert record.exam_count == 3
    assert record.client_address == "10.0.0.7"


async def test_without_a_reading_scope_the_query_is_refused_and_audited(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    with pytest.raises(AccessError) as caught:
        await service.patient_history(PATIENT, _user("audit:read"))
    assert caught.value.code == "FORBIDDEN"
    assert [(r.action, r.outcome) for r in audit.records] == [
        (AuditAction.PATIENT_QUERY, AuditOutcome.DENIED)
    ]


async def test_break_the_glass_needs_a_reason_then_holds_for_the_window(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    er = _user("history:emergency")
    with pytest.raises(AccessError) as caught:
        await service.patient_history(PATIENT, er)
    assert caught.value.code == "REASON_REQUIRED"
    await service.patient_history(PATIENT, er, HistoryRequest(reason="unconscious patient, trauma bay 2"))
    await service.patient_history(PATIENT, er)  # within the window: no new reason needed
    with pytest.raises(AccessError):  # the window is per patient
        await service.patient_history(OTHER, er)
    emergency = [r for r in audit.records if r.outcome is AuditOutcome.SUCCESS and r.detail is None]
    assert len(emergency) == 2
    assert all(r.emergency and r.reason == "unconscious patient, trauma bay 2" for r in emergency)


async def test_a_blank_or_trivial_reason_is_not_a_reason(service: HistoryService) -> None:
    for reason in ("   ", "x"):
        with pytest.raises(AccessError):
            await service.patient_history(PATIENT, _user("history:emergency"), HistoryRequest(reason=reason))


async def test_per_source_rules_limit_what_a_principal_may_ask(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    limited = _user("history:read", sources={"hosp-a"})
    history = await service.patient_history(PATIENT, limited)
    assert [s.source.id for s in history.sources] == ["hosp-a"]
    with pytest.raises(AccessError):
        await service.patient_history(PATIENT, limited, HistoryRequest(source_ids=("hosp-b",)))


async def test_no_data_leaves_when_the_audit_record_cannot_be_written(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    audit.broken = True
    with pytest.raises(AuditError):
        await service.patient_history(PATIENT, _user("history:read"))


async def test_no_source_is_asked_when_the_access_cannot_be_recorded(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    audit.broken = True
    with pytest.raises(AuditUnavailable) as caught:
        await service.patient_history(PATIENT, _user("history:read"))
    assert caught.value.code == "AUDIT_UNAVAILABLE"
    updates = service.stream_history(PATIENT, _user("history:read"))
    with pytest.raises(AuditUnavailable):
        await anext(updates)
    await updates.aclose()
    assert [getattr(c, "calls", None) for c in service.engine.select(None)] == [0, 0]


async def test_a_share_code_grants_exactly_its_scope(service: HistoryService, audit: ListAuditTrail) -> None:
    creator = _user("history:read", "share:create")
    created = await service.create_share(creator, PATIENT, ["1.2.4"], ttl_s=None, single_use=False)
    assert len(normalize_code(created.code)) >= 32  # 160 bits in base32
    assert created.record.code_hash not in created.code
    anonymous = AccessContext(Principal("anonymous", PrincipalKind.SHARE, frozenset()), "10.9.9.9")
    redeemed = await service.redeem_share(created.code.lower(), "10.9.9.9", anonymous)
    reader = AccessContext(await service.share_principal(redeemed.token), "10.9.9.9")
    history = await service.patient_history(PATIENT, reader)
    assert [e.study_instance_uid for e in history.exams] == ["1.2.4"]
    with pytest.raises(AccessError):
        await service.patient_history(OTHER, reader)
    with pytest.raises(AccessError):  # a share cannot be shared on
        await service.create_share(reader, PATIENT, None, None, False)
    actions = [(r.action, r.outcome) for r in audit.records]
    assert (AuditAction.SHARE_CREATE, AuditOutcome.SUCCESS) in actions
    assert (AuditAction.SHARE_REDEEM, AuditOutcome.SUCCESS) in actions


async def test_share_codes_are_capped_at_24_hours(service: HistoryService) -> None:
    creator = _user("history:read", "share:create")
    created = await service.create_share(creator, PATIENT, None, ttl_s=7 * 24 * 3600, single_use=False)
    lifetime = created.record.expires_at - created.record.created_at
    assert lifetime <= dt.timedelta(hours=24)
    default = await service.create_share(creator, PATIENT, None, ttl_s=None, single_use=False)
    assert default.record.expires_at - default.record.created_at == dt.timedelta(hours=1)


async def test_single_use_revoked_and_expired_codes_do_not_open(service: HistoryService) -> None:
    creator = _user("history:read", "share:create")
    anonymous = AccessContext(Principal("anonymous", PrincipalKind.SHARE, frozenset()), "10.9.9.9")
    once = await service.create_share(creator, PATIENT, None, None, single_use=True)
    redeemed = await service.redeem_share(once.code, "10.9.9.9", anonymous)
    with pytest.raises(AccessError):
        await service.redeem_share(once.code, "10.9.9.9", anonymous)
    revoked = await service.create_share(creator, PATIENT, None, None, single_use=False)
    token = (await service.redeem_share(revoked.code, "10.9.9.9", anonymous)).token
    with pytest.raises(AccessError):  # only its creator may revoke it
        await service.revoke_share(_user("share:create", subject="user:other"), revoked.code)
    await service.revoke_share(creator, revoked.code)
    with pytest.raises(AccessError):
        await service.redeem_share(revoked.code, "10.9.9.9", anonymous)
    with pytest.raises(AuthenticationError):  # its tokens die with it
        await service.share_principal(token)
    assert (await service.share_principal(redeemed.token)).share is not None


async def test_a_revocation_signals_the_sockets_reading_that_share(service: HistoryService) -> None:
    creator = _user("history:read", "share:create")
    anonymous = AccessContext(Principal("anonymous", PrincipalKind.SHARE, frozenset()), "10.9.9.9")
    shared = await service.create_share(creator, PATIENT, None, None, single_use=False)
    other = await service.create_share(creator, PATIENT, None, None, single_use=False)
    token = (await service.redeem_share(shared.code, "10.9.9.9", anonymous)).token
    grant = (await service.share_principal(token)).share
    assert grant is not None
    watching, bystander = service.revocation_signal(grant.share_id), service.revocation_signal("another")
    await service.revoke_share(creator, other.code)
    assert not watching.is_set()
    await service.revoke_share(creator, shared.code)
    assert watching.is_set()
    assert not bystander.is_set()


async def test_expired_codes_and_tokens_are_refused() -> None:
    store = MemoryShareStore()
    shares = ShareCodes(ShareSettings(), store)
    created = await shares.create("user:dr", PATIENT, None, None, False)
    token = (await shares.redeem(created.code, "c")).token
    expired = dataclasses.replace(
        created.record, expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    await store.add(expired)
    with pytest.raises(AccessError):
        await shares.redeem(created.code, "c")
    with pytest.raises(AuthenticationError):
        await shares.principal_for(token)


async def test_brute_force_is_locked_out_after_ten_failures() -> None:
    shares = ShareCodes(ShareSettings(max_failures=10, lockout_s=900), MemoryShareStore())
    created = await shares.create("user:dr", PATIENT, None, None, False)
    for attempt in range(10):
        with pytest.raises(AccessError) as caught:
            await shares.redeem(f"WRONG-{attempt:04d}-AAAA", "10.6.6.6")
        assert caught.value.code == "BAD_SHARE_CODE"
    with pytest.raises(AccessError) as caught:  # even the right code, from that client
        await shares.redeem(created.code, "10.6.6.6")
    assert caught.value.code == "LOCKED_OUT"
    assert (await shares.redeem(created.code, "10.1.1.1")).token  # another client is not punished


async def test_the_per_prefix_limit_protects_one_code_from_a_distributed_guess() -> None:
    shares = ShareCodes(ShareSettings(max_failures=10, lockout_s=900), MemoryShareStore())
    created = await shares.create("user:dr", PATIENT, None, None, False)
    prefix = normalize_code(created.code)[:4]
    for client in range(10):
        with pytest.raises(AccessError):
            await shares.redeem(f"{prefix}-WRONG-{client:04d}", f"10.7.7.{client}")
    with pytest.raises(AccessError) as caught:
        await shares.redeem(created.code, "10.8.8.8")
    assert caught.value.code == "LOCKED_OUT"


async def test_only_identified_patients_can_be_shared(service: HistoryService) -> None:
    creator = _user("history:read", "share:create")
    demographic = PatientQuery(family_name="Dupont", birth_date=dt.date(1950, 1, 1))
    with pytest.raises(QueryError):
        await service.create_share(creator, demographic, None, None, False)


async def test_audit_events_need_audit_read_and_are_audited(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    await service.patient_history(PATIENT, _user("history:read"))
    with pytest.raises(AccessError):
        await service.audit_events(_user("history:read"), "PA-001", 10)
    events = await service.audit_events(_user("audit:read"), "PA-001", 10)
    queries = [e for e in events if e.action is AuditAction.PATIENT_QUERY]
    assert queries and queries[0].patient_ids[0] == "PA-001^^^"
    assert audit.records[-1].action is AuditAction.AUDIT_READ


async def test_a_flood_of_bad_credentials_is_audited_in_part(
    service: HistoryService, audit: ListAuditTrail
) -> None:
    flood = AccessContext(Principal("anonymous", PrincipalKind.SHARE, frozenset()), "10.66.66.66")
    for _ in range(100):
        await service.authentication_failed(flood, "BAD_TOKEN")
    await service.authentication_failed(AccessContext(flood.principal, "10.1.2.3"), "BAD_TOKEN")
    by_address = [r.client_address for r in audit.records]
    assert by_address.count("10.66.66.66") == 20  # the budget per address and minute
    assert by_address.count("10.1.2.3") == 1  # others are not affected
