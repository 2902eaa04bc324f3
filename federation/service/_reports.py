"""Exam reports through the door: authorize, journal the access, ask the sources, journal the outcome.

Every front end reads reports here the same way: GraphQL's ``exams { report }``, the FHIR view's
DiagnosticReport entries, and ``GET /reports/<id>`` for a document report's bytes. The exam comes
from an answer of this service; what the caller may read of it is checked again here (scopes,
sources, a share's studies, an open break-the-glass window).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools

from federation.access.principals import HISTORY_EMERGENCY, HISTORY_READ, AccessContext
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine.reports import read_report
from federation.errors import AccessError, ConnectorError, QueryError, SourceBusy, SourceTimeout
from federation.models import Deadline, Exam
from federation.reports import Report, ReportDocument, ReportStatus
from federation.service._base import ServiceBase, code_of

REPORT_PATH = "/reports/"
"""Where document reports are served: ``REPORT_PATH + <link id>``."""
_MAX_DEADLINE_MS = 120_000
_NOT_READ = frozenset({ReportStatus.ERROR, ReportStatus.UNAVAILABLE, ReportStatus.BUSY})


@dataclasses.dataclass(frozen=True, slots=True)
class _ReportGrant:
    source_ids: frozenset[str] | None
    reason: str | None
    emergency: bool


class ReportReads(ServiceBase):
    """Exam reports and their documents, authorized and audited like any access."""

    async def exam_report(
        self, exam: Exam, access: AccessContext, *, deadline_ms: int | None = None
    ) -> Report:
        """The exam's report: from the first location, in configuration order, that has one.

        ``deadline_ms``: the report's own deadline (default ``reports.deadline_ms``). A document
        report comes with ``url_path``, opened by :meth:`report_document` for this caller only.
        """
        if deadline_ms is not None and not 50 <= deadline_ms <= _MAX_DEADLINE_MS:
            raise QueryError(
                f"a report's deadlineMs must be between 50 and {_MAX_DEADLINE_MS}", code="BAD_DEADLINE"
            )
        patient_ids = _patient_ids(exam)
        grant = await self._authorize_report(exam, access, patient_ids)
        connectors = [
            c for c in self.engine.select(None) if grant.source_ids is None or c.id in grant.source_ids
        ]
        sources = [c.id for c in connectors if any(loc.source.id == c.id for loc in exam.locations)]
        study = f"study {exam.study_instance_uid}"
        await self._record_report(
            access, grant, AuditOutcome.SUCCESS, patient_ids, sources, f"access; {study}"
        )
        limit = self._report_settings.deadline_ms if deadline_ms is None else deadline_ms
        guard = functools.partial(self.engine.guarded, report=True)
        found = await read_report(connectors, exam, Deadline.after(limit / 1000), guard)
        answer = found.answer
        report = Report(
            status=answer.status,
            text=answer.text,
            author=answer.author,
            date=answer.date,
            source=found.source,
            mime_type=answer.mime_type,
            title=answer.title,
            completion=answer.completion,
            verification=answer.verification,
            verified_by=answer.verified_by,
            verified_at=answer.verified_at,
            error=answer.error,
        )
        if answer.status is ReportStatus.AVAILABLE and answer.document is not None:
            assert found.source is not None
            assert found.study is not None
            link_id, link = await self._report_links.add(
                access.principal.subject,
                found.source.id,
                found.study,
                answer.document,
                answer.mime_type or "application/octet-stream",
                tuple(patient_ids),
            )
            report = report.model_copy(
                update={"url_path": REPORT_PATH + link_id, "url_expires_at": link.expires_at}
            )
        outcome = AuditOutcome.FAILURE if answer.status in _NOT_READ else AuditOutcome.SUCCESS
        asked = list(found.asked) or sources
        await self._record_report(
            access, grant, outcome, patient_ids, asked, f"report {answer.status.value}; {study}", soon=True
        )
        return report

    async def report_document(self, link_id: str, access: AccessContext) -> ReportDocument:
        """The document a report link opens, fetched again from its source (AccessError 404 when unknown).

        Asked under the source's breaker and one of its slots: SourceSkipped at once when its circuit
        is open, SourceBusy when no slot came free before the report deadline (both audited FAILURE).
        """
        link = await self._report_links.get(link_id)
        none = _ReportGrant(None, None, False)
        if link is None:
            await self._record_report(
                access, none, AuditOutcome.DENIED, [], [], "report link unknown or expired"
            )
            raise AccessError("this report link is unknown or has expired", code="NOT_FOUND", status=404)
        study = f"study {link.study.study_instance_uid}"
        ids, sources = list(link.patient_ids), [link.source_id]
        if link.subject != access.principal.subject:
            await self._record_report(
                access, none, AuditOutcome.DENIED, ids, sources, f"not its caller; {study}"
            )
            raise AccessError("this report link was made for another caller", code="FORBIDDEN")
        await self._record_report(
            access, none, AuditOutcome.SUCCESS, ids, sources, f"document access; {study}"
        )
        (connector,) = self.engine.select([link.source_id])
        deadline = Deadline.after(self._report_settings.deadline_ms / 1000)
        try:
            async with self.engine.guarded(connector.id, deadline, report=True):
                try:
                    async with asyncio.timeout(deadline.remaining()):
                        document = await connector.fetch_report_document(link.study, link.document, deadline)
                except TimeoutError as exc:
                    raise SourceTimeout("no report document before the report deadline") from exc
        except (ConnectorError, SourceBusy) as exc:
            await self._record_report(
                access,
                none,
                AuditOutcome.FAILURE,
                ids,
                sources,
                f"document {code_of(exc)}; {study}",
                soon=True,
            )
            raise
        await self._record_report(
            access, none, AuditOutcome.SUCCESS, ids, sources, f"document; {study}", soon=True
        )
        return document

    async def _authorize_report(
        self, exam: Exam, access: AccessContext, patient_ids: list[str]
    ) -> _ReportGrant:
        principal = access.principal
        try:
            holding = {location.source.id for location in exam.locations}
            if principal.sources is not None and not holding & principal.sources:
                raise AccessError("no source holding this exam is open to this caller", code="FORBIDDEN")
            if principal.share is not None:
                share = principal.share
                if share.studies is not None and exam.study_instance_uid not in share.studies:
                    raise AccessError("this share code does not grant this exam", code="FORBIDDEN")
                emergency = share.emergency_reason is not None
                return _ReportGrant(principal.sources, share.emergency_reason, emergency)
            if principal.has(HISTORY_READ):
                return _ReportGrant(principal.sources, None, False)
            if principal.has(HISTORY_EMERGENCY):
                for key in _patient_keys(exam):
                    reason = await self._windows.reason_for(principal.subject, key)
                    if reason is not None:
                        return _ReportGrant(principal.sources, reason, True)
                raise AccessError(
                    "emergency access needs a reason (break-the-glass): ask for the history first",
                    code="REASON_REQUIRED",
                )
            raise AccessError(f"this needs the scope {HISTORY_READ} or {HISTORY_EMERGENCY}", code="FORBIDDEN")
        except AccessError as exc:
            none = _ReportGrant(None, None, False)
            sources = sorted({location.source.id for location in exam.locations})
            detail = f"{exc.code}; study {exam.study_instance_uid}"
            await self._record_report(access, none, AuditOutcome.DENIED, patient_ids, sources, detail)
            raise

    async def _record_report(
        self,
        access: AccessContext,
        grant: _ReportGrant,
        outcome: AuditOutcome,
        patient_ids: list[str],
        sources: list[str],
        detail: str,
        *,
        soon: bool = False,
    ) -> None:
        await self._record_parts(
            access,
            AuditAction.REPORT_READ,
            outcome,
            patient_ids,
            detail,
            sources=sources,
            reason=grant.reason,
            emergency=grant.emergency,
            soon=soon,
        )


def _patient_ids(exam: Exam) -> list[str]:
    """The exam's patient at each location, as audit strings (``ID^^^ISSUER``)."""
    ids = [f"{loc.patient_id}^^^{loc.issuer_of_patient_id or ''}" for loc in exam.locations if loc.patient_id]
    return list(dict.fromkeys(ids))


def _patient_keys(exam: Exam) -> list[str]:
    """Every key a break-the-glass window for this exam's patient may have been opened under."""
    keys: list[str] = []
    for location in exam.locations:
        if location.patient_id:
            keys += [
                f"id|{location.issuer_of_patient_id or ''}|{location.patient_id}",
                f"id||{location.patient_id}",
            ]
        matched = location.matched_by
        if matched is not None and matched.value:
            if matched.kind.value == "NATIONAL_ID":
                keys.append(f"national|{matched.value}")
            else:
                keys += [f"id|{matched.issuer or ''}|{matched.value}", f"id||{matched.value}"]
    return list(dict.fromkeys(keys))
