"""The connector contract: a few async methods that turn one PACS into normalized StudyRecords."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx

from federation.errors import SourceProtocolError
from federation.models import (
    Deadline,
    InstanceQuery,
    InstanceRecord,
    SeriesQuery,
    SeriesRecord,
    SourceInfo,
    StudyQuery,
    StudyRecord,
)
from federation.reports import ReportAnswer, ReportDocument, ReportInstance, ReportStatus, StudyRef
from federation.retrieve import RetrieveRequest, RetrieveStream
from federation.settings import SourceSettings


@dataclass(frozen=True)
class SourceAnswer:
    """What one source returned: its records and any non-fatal warnings (no patient data in them)."""

    records: Sequence[StudyRecord]
    warnings: Sequence[str] = field(default_factory=tuple)
    truncated: bool = False


@dataclass(frozen=True)
class SeriesAnswer:
    """What one source returned for a series query: its series and any non-fatal warnings."""

    records: Sequence[SeriesRecord]
    warnings: Sequence[str] = field(default_factory=tuple)
    truncated: bool = False


@dataclass(frozen=True)
class InstanceAnswer:
    """What one source returned for an instance query: its instances and any non-fatal warnings."""

    records: Sequence[InstanceRecord]
    warnings: Sequence[str] = field(default_factory=tuple)
    truncated: bool = False


@dataclass(frozen=True)
class ConnectorContext:
    """Process-wide resources a connector may borrow; it must not close them."""

    http_client: httpx.AsyncClient | None = None


class Connector(abc.ABC):
    """One hospital PACS, queried over one protocol.

    Implementations raise only :class:`federation.errors.ConnectorError` subclasses and respect the
    deadline they are given; the engine also cancels them when it passes.
    """

    kind: ClassVar[str]
    """The name of the connector's ``pacsfed.connectors`` entry point, and its sources' ``kind``."""
    settings_model: ClassVar[type[SourceSettings]]
    """The pydantic model of its sources' settings: the common keys plus its own; unknown keys refused."""
    supports_issuer_of_patient_id: ClassVar[bool] = False
    """Capability: the connector sends IssuerOfPatientID (0010,0021) as a matching key. Without it the
    engine never puts the issuer in a StudyQuery for this connector, whatever ``match_issuer`` says."""
    supports_study_keys: ClassVar[bool] = False
    """Capability: ``find_studies`` sends the study keys of a StudyQuery (StudyInstanceUID, AccessionNumber,
    a StudyDate range, ModalitiesInStudy) and answers a query by them alone, without a patient key.
    Without it the engine asks this connector only by patient, checking the study keys itself, and a
    search by study keys alone reports it UNSUPPORTED."""
    supports_uid_lists: ClassVar[bool] = False
    """Capability: ``find_studies`` sends a StudyQuery's ``study_instance_uids`` as one UID list (PS3.4
    C.2.2.2.2; QIDO-RS ``StudyInstanceUID=a,b``). Without it the engine asks once per UID."""
    supports_series_query: ClassVar[bool] = False
    """Capability: :meth:`find_series` lists a study's series (PS3.4 C.6.2.1 SERIES level, QIDO-RS series)."""
    supports_instance_query: ClassVar[bool] = False
    """Capability: :meth:`find_instances` lists a series' instances (PS3.4 C.6.2.1 IMAGE level, QIDO-RS instances)."""
    supports_demographic_search: ClassVar[bool] = False
    """Capability: ``find_studies`` matches a name pattern and a birth date without an id; without it the
    engine never sends such a query to this connector (the source reports UNSUPPORTED)."""

    def __init__(self, settings: Any, context: ConnectorContext) -> None:
        self.settings = settings
        self.context = context
        self.info = SourceInfo(
            id=settings.id,
            name=settings.name,
            kind=self.kind,
            viewer_template=getattr(settings, "viewer_url", None),
            supports_reports=self.supports_reports,
        )

    @property
    def id(self) -> str:
        """The configured source id."""
        return self.info.id

    @property
    def takes_non_ascii_name_keys(self) -> bool:
        """Whether name keys beyond ASCII are sent to this source (its ``non_ascii_name_keys``; False if unset)."""
        return bool(getattr(self.settings, "non_ascii_name_keys", False))

    @abc.abstractmethod
    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Every study matching the query's keys (an identifier, or a name and birth date)."""

    @abc.abstractmethod
    async def ping(self, deadline: Deadline) -> None:
        """Check that the source answers (C-ECHO, a QIDO request); raise ConnectorError if not."""

    async def find_series(self, query: SeriesQuery, deadline: Deadline) -> SeriesAnswer:
        """The study's series matching the query; only called when ``supports_series_query`` is set."""
        raise SourceProtocolError(f"{self.kind} sources give no series")

    async def find_instances(self, query: InstanceQuery, deadline: Deadline) -> InstanceAnswer:
        """The series' instances matching the query; only called when ``supports_instance_query`` is set."""
        raise SourceProtocolError(f"{self.kind} sources give no instances")

    supports_reports: ClassVar[bool] = False
    """Capability: :meth:`fetch_report` reads a study's report (a DICOM SR or an encapsulated document).
    Without it the engine never asks, and an exam held only here has report status UNSUPPORTED."""

    async def fetch_report(self, study: StudyRef, deadline: Deadline) -> ReportAnswer:
        """The study's report at this source: AVAILABLE (text, or a document to fetch), NOT_FOUND or ERROR.

        Failures are answers (``ReportAnswer(status=ERROR, error=...)``) or ConnectorErrors, never
        foreign exceptions. Only called when ``supports_reports`` is set.
        """
        return ReportAnswer(status=ReportStatus.UNSUPPORTED, error=f"{self.kind} sources give no reports")

    async def fetch_report_document(
        self, study: StudyRef, document: ReportInstance, deadline: Deadline
    ) -> ReportDocument:
        """The bytes of a document report that :meth:`fetch_report` pointed to (ConnectorError if gone)."""
        raise SourceProtocolError(f"{self.kind} sources give no report documents")

    supports_retrieve: ClassVar[bool] = False
    """Capability: :meth:`retrieve` forwards a WADO-RS request (PS3.18 10.4) to the source, streamed."""

    async def retrieve(self, request: RetrieveRequest) -> RetrieveStream:
        """The source's answer to one WADO-RS request, its body streamed (ConnectorError before the first byte)."""
        raise SourceProtocolError(f"{self.kind} sources give no WADO-RS retrieval")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the connector holds (threads, associations)."""
