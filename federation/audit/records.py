"""The audit trail's record and the interface every front end and the engine write to."""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from abc import ABC, abstractmethod

from pydantic import BaseModel, ConfigDict, Field


class AuditAction(enum.StrEnum):
    """What was done."""

    PATIENT_QUERY = "patient-query"
    REPORT_READ = "report-read"
    """An exam's report was read, or its document opened (``detail`` names the study and the outcome)."""
    IMAGE_READ = "image-read"
    """Images or their metadata retrieved through WADO-RS (``detail`` names the study and the outcome)."""
    SHARE_CREATE = "share-create"
    SHARE_REDEEM = "share-redeem"
    SHARE_REVOKE = "share-revoke"
    AUTHENTICATION = "authentication"
    AUDIT_READ = "audit-read"
    IDENTITY_CHANGE = "identity-change"
    CACHE_PURGE = "cache-purge"
    CLOCK_STEP = "clock-step"
    """The system clock disagreed with the journal's own order (stepped back, or far ahead)."""


class AuditOutcome(enum.StrEnum):
    """How it ended (PS3.15 A.5 EventOutcomeIndicator: 0, 4, 8, 12)."""

    SUCCESS = "success"
    DENIED = "denied"
    """Refused by authentication or authorization (minor failure, 4)."""
    FAILURE = "failure"
    """The action was allowed but failed (serious failure, 8)."""


def _new_id() -> str:
    return uuid.uuid4().hex


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditRecord(BaseModel):
    """One audited event; patient identifiers appear here and nowhere in the logs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=_new_id)
    at: dt.datetime = Field(default_factory=_now)
    action: AuditAction
    outcome: AuditOutcome
    actor: str
    """Who: ``user:<sub>``, ``apikey:<id>``, ``share:<code id>``, ``cli:<os user>``, ``anonymous``."""
    actor_kind: str = "user"
    client_address: str | None = None
    request_id: str | None = None
    channel: str = "graphql"
    """Which front end: graphql, cli, share-page, dimse, dicomweb, fhir."""
    patient_ids: list[str] = []
    """Identifiers as ``ID^^^ISSUER`` (ISSUER empty when unknown); names only when no ID was given."""
    patient_ids_omitted: int = 0
    """Identifiers left out of ``patient_ids`` (a list is capped; the record says how many it lost)."""
    sources: list[str] = []
    sources_omitted: int = 0
    """Sources left out of ``sources``."""
    suppressed: int = 0
    """Events this record stands for that were not journaled one by one (flood control); 0 otherwise."""
    exam_count: int | None = None
    reason: str | None = None
    emergency: bool = False
    """Break-the-glass access, to be reviewed after the fact."""
    detail: str | None = None
    """A short machine-readable note (error code, share code id); never patient data."""
    journal: str | None = None
    """The journal that wrote it (set by the journal, one id per ``journal_dir``)."""
    seq: int | None = None
    """Its place in that journal: 1, 2, 3, … in write order (set by the journal; not the clock)."""


PageKey = tuple[int, str]
"""Where a page of audit records stops: (time in epoch milliseconds, record id), newest first."""
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def page_key(record: AuditRecord) -> PageKey:
    """The record's place in a newest-first listing, as Elasticsearch sorts it (millisecond times)."""
    return (record.at - _EPOCH) // dt.timedelta(milliseconds=1), record.id


def newest_page(records: list[AuditRecord], first: int, after: PageKey | None) -> list[AuditRecord]:
    """At most ``first`` records older than ``after``, newest first by :func:`page_key`, each id once."""
    unique = {record.id: record for record in records}
    keyed = sorted(((page_key(r), r) for r in unique.values()), key=lambda kr: kr[0], reverse=True)
    return [r for key, r in keyed if after is None or key < after][: max(0, first)]


class AuditTrail(ABC):
    """Where audit records go: durably before ``record`` returns, shipped onwards later."""

    @abstractmethod
    async def record(self, record: AuditRecord) -> None:
        """Append ``record`` durably (fsync'd); raise AuditError if it cannot be kept."""

    async def record_soon(self, record: AuditRecord) -> None:
        """Append ``record`` without waiting for its fsync (it rides the next batch); by default, wait."""
        await self.record(record)

    @abstractmethod
    async def search(
        self, *, patient_id: str | None = None, actor: str | None = None, first: int = 50
    ) -> list[AuditRecord]:
        """The newest records first, optionally only those naming ``patient_id`` (``ID`` or ``ID^^^ISSUER``)."""

    async def search_page(
        self, *, patient_id: str | None, first: int, after: PageKey | None
    ) -> tuple[list[AuditRecord], bool, bool]:
        """Up to ``first`` records older than ``after``, newest first; whether more follow; whether partial."""
        page = newest_page(await self.search(patient_id=patient_id, first=10_000), first + 1, after)
        return page[:first], len(page) > first, False

    @abstractmethod
    async def start(self) -> None:
        """Start shipping in the background (replaying what an earlier run left unshipped)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Ship what can be shipped quickly and stop."""
