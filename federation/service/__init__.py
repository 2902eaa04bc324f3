"""The one door every front end uses: authorization, break-the-glass and the audit trail around the engine."""

from __future__ import annotations

from federation.engine.request import HistoryRequest
from federation.service._admin import Administration, AuditPage
from federation.service._flood import FLOOD_SUMMARY_INTERVAL_S, FloodControl
from federation.service._reports import REPORT_PATH, ReportReads
from federation.service._retrieve import HOLDERS_TTL_S, HolderMemory, RetrieveReads
from federation.service._search import SearchDoors
from federation.service._shares import ShareDoors

__all__ = [
    "FLOOD_SUMMARY_INTERVAL_S",
    "HOLDERS_TTL_S",
    "REPORT_PATH",
    "AuditPage",
    "HistoryRequest",
    "HistoryService",
    "HolderMemory",
]


class HistoryService(SearchDoors, ReportReads, RetrieveReads, ShareDoors, Administration, FloodControl):
    """Checks who may see what, records it durably, then asks the engine.

    The access (who, which patient, which sources, why) is fsync'd in the journal before the
    engine is called: if it cannot be, no source is asked and the caller gets AUDIT_UNAVAILABLE.
    The outcome (exam count, identifiers found) follows as a second record that rides the
    journal's next batch, so the answer waits for one fsync only.
    """
