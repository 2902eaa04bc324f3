"""An exam's report: every location that can give one is asked at once; the first in configuration order wins.

Each source is asked under its circuit breaker and one of its slots (:meth:`FederationEngine.guarded`,
the same as a history query's): an open circuit answers UNAVAILABLE at once, a slot not obtained
before the report's deadline is BUSY, and a source's failure counts against its breaker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from federation.engine._guard import SourceCall
from federation.errors import ConnectorError, SourceBusy, SourceSkipped
from federation.models import Deadline, Exam, ExamLocation, SourceInfo
from federation.reports import ReportAnswer, ReportStatus, StudyRef

if TYPE_CHECKING:  # connectors import the engine's models: no import at run time, no cycle
    from connectors.base import Connector

__all__ = ["Guard", "ReportFound", "read_report", "study_ref"]

Guard = Callable[[str, Deadline], SourceCall]
"""Where a call to a source takes its breaker's leave and a slot: :meth:`FederationEngine.guarded`."""
_NOT_READ = (ReportStatus.ERROR, ReportStatus.UNAVAILABLE, ReportStatus.BUSY)
"""A source that may hold the report gave none (in this order of precedence): never NOT_FOUND then."""

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ReportFound:
    """The chosen answer, where it came from, and which sources were asked."""

    answer: ReportAnswer
    source: SourceInfo | None = None
    study: StudyRef | None = None
    asked: tuple[str, ...] = ()


def study_ref(exam: Exam, location: ExamLocation) -> StudyRef:
    """The study as one of its locations knows it."""
    return StudyRef(
        study_instance_uid=exam.study_instance_uid,
        patient_id=location.patient_id,
        issuer_of_patient_id=location.issuer_of_patient_id,
        accession_number=location.accession_number or exam.accession_number,
        retrieve_url=location.retrieve_url,
        retrieve_ae_title=location.retrieve_ae_title,
    )


async def read_report(
    connectors: Sequence[Connector], exam: Exam, deadline: Deadline, guard: Guard
) -> ReportFound:
    """The report of the first connector, in the given (configuration) order, that has one.

    Only connectors holding a location of the exam and declaring ``supports_reports`` are asked,
    all at once under ``deadline``, each through ``guard``; later ones are cancelled as soon as an
    earlier one has it. Without one: ERROR if a source that may hold it failed, else UNAVAILABLE
    (its circuit open) or BUSY (no slot), else NOT_FOUND if one was asked, else UNSUPPORTED.
    """
    locations = {location.source.id: location for location in exam.locations}
    holding = [c for c in connectors if c.id in locations]
    asking = [c for c in holding if c.supports_reports]
    if not asking:
        kinds = sorted({c.kind for c in holding})
        why = f"no source holding the exam gives reports (kinds: {', '.join(kinds)})" if kinds else None
        return ReportFound(ReportAnswer(status=ReportStatus.UNSUPPORTED, error=why))
    refs = {c.id: study_ref(exam, locations[c.id]) for c in asking}
    tasks = [asyncio.ensure_future(_ask(c, refs[c.id], deadline, guard)) for c in asking]
    asked = tuple(c.id for c in asking)
    answers: list[tuple[Connector, ReportAnswer]] = []
    try:
        for connector, task in zip(asking, tasks, strict=True):
            answer = await task
            if answer.status is ReportStatus.AVAILABLE:
                return ReportFound(answer, connector.info, refs[connector.id], asked)
            answers.append((connector, answer))
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    for status in (*_NOT_READ, ReportStatus.NOT_FOUND, ReportStatus.UNSUPPORTED):
        for connector, answer in answers:
            if answer.status is status:
                error = f"{connector.id}: {answer.error}" if answer.error else None
                return ReportFound(
                    ReportAnswer(status=status, error=error), connector.info, refs[connector.id], asked
                )
    raise AssertionError("every answer has a status")  # pragma: no cover


async def _ask(connector: Connector, study: StudyRef, deadline: Deadline, guard: Guard) -> ReportAnswer:
    """One connector's answer; its failures and lateness as ERROR answers, held back as UNAVAILABLE or BUSY."""
    try:
        async with guard(connector.id, deadline):
            async with asyncio.timeout(deadline.remaining()):
                return await connector.fetch_report(study, deadline)
    except SourceSkipped as exc:
        return ReportAnswer(status=ReportStatus.UNAVAILABLE, error=str(exc).removeprefix(f"{connector.id}: "))
    except SourceBusy as exc:
        return ReportAnswer(status=ReportStatus.BUSY, error=str(exc).removeprefix(f"{connector.id}: "))
    except TimeoutError:
        return ReportAnswer(status=ReportStatus.ERROR, error="no answer before the report deadline")
    except ConnectorError as exc:  # its message names the source's step and reason, never a patient
        return ReportAnswer(status=ReportStatus.ERROR, error=str(exc) or type(exc).__name__)
    except Exception as exc:  # a plugin's bug must not fail the whole answer
        log.warning("source %s: report reading failed (%s)", connector.id, type(exc).__name__)
        return ReportAnswer(status=ReportStatus.ERROR, error=f"report reading failed ({type(exc).__name__})")
