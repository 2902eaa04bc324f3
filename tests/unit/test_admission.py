"""The service's one admission: every door asks it, and its refusals are audited in aggregate, never one by one."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from unit.test_access_service import ListAuditTrail, _user

from federation.access.share import MemoryShareStore, ShareCodes
from federation.audit.records import AuditAction, AuditOutcome, AuditRecord
from federation.engine import FederationEngine
from federation.errors import Overloaded
from federation.models import PatientQuery
from federation.service import HistoryService
from federation.settings_security import ShareSettings


def _service(audit: ListAuditTrail) -> HistoryService:
    engine = FederationEngine([], None, max_pending_queries=1)
    shares = ShareCodes(ShareSettings(), MemoryShareStore())
    return HistoryService(engine, audit, shares, emergency_window_s=600, national_issuer=None)


async def _records(audit: ListAuditTrail, count: int) -> list[AuditRecord]:
    """The first ``count`` records, once written (bounded wait: an ordering, not a timing assertion)."""
    for _ in range(1000):
        if len(audit.records) >= count:
            return audit.records
        await asyncio.sleep(0.01)
    pytest.fail(f"never {count} records: {audit.records}")


async def test_refusals_are_audited_as_one_record_per_channel_and_window_without_patient_data() -> None:
    audit = ListAuditTrail()
    service = _service(audit)
    admission = service.admission
    page = dataclasses.replace(_user("history:read"), channel="page")
    with admission.admitted("graphql"):  # the one place is taken: every door refuses
        assert all(admission.refusal("graphql") is not None for _ in range(5))  # the HTTP server's door
        for _ in range(2):
            with pytest.raises(Overloaded), admission.door("fhir"):  # the ASGI gate's and the WebSocket's
                pass
        with pytest.raises(Overloaded):  # the service's own place, past the doors
            await service.patient_history(PatientQuery(patient_id="PA-SECRET"), page)
        assert audit.records == []  # nothing written per refusal
    records = await _records(audit, 3)
    assert {r.channel: r.suppressed for r in records} == {"fhir": 2, "graphql": 5, "page": 1}
    for record in records:
        assert record.action is AuditAction.PATIENT_QUERY and record.outcome is AuditOutcome.FAILURE
        assert record.actor == "system:pacsfed" and record.patient_ids == []
        assert record.detail is not None and record.detail.startswith(
            f"OVERLOADED: {record.suppressed} refused"
        )
        assert "PA-SECRET" not in record.model_dump_json()
    assert service.engine.load_counters()["queries_refused"] == 8

    with admission.admitted("graphql"):  # a later window gets a record of its own
        assert admission.refusal("graphql") is not None
    await admission.aclose()  # at shutdown, the open window is written at once
    assert [(r.channel, r.suppressed) for r in audit.records[3:]] == [("graphql", 1)]


async def test_a_request_read_whole_counts_as_in_progress_at_the_door_until_released() -> None:
    service = _service(ListAuditTrail())
    admission = service.admission
    assert admission.refusal("graphql") is None
    release = admission.taken_in_hand()  # read whole, not admitted yet: the one place is spoken for
    assert admission.refusal("graphql") is not None
    release()
    release()  # once only
    assert admission.in_hand == 0 and admission.refusal("graphql") is None
    await admission.aclose()
