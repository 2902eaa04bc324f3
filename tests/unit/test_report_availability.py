"""An exam's report availability: what the search already knows, without reading a report (costly, audited)."""

from __future__ import annotations

import pytest

from connectors import DicomwebConnector, DimseConnector
from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dicomweb_settings import DicomwebSourceSettings
from connectors.dimse_settings import DimseSourceSettings
from federation.engine.engine import FederationEngine
from federation.merge import merge_records
from federation.models import (
    Deadline,
    PatientQuery,
    ReportAvailability,
    SourceInfo,
    StudyQuery,
    StudyRecord,
)

READS = SourceInfo(id="r", name="R", kind="dicomweb", supports_reports=True)
BLIND = SourceInfo(id="b", name="B", kind="lab")
SOURCES = {"r": READS, "b": BLIND}


def availability(*records: tuple[str, tuple[str, ...]]) -> ReportAvailability:
    """The one exam merged from (source id, modalities) records of one study."""
    [exam] = merge_records(
        [StudyRecord(source_id=s, study_instance_uid="1.2.3", modalities=m) for s, m in records], SOURCES
    )
    return exam.report_availability


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ((("r", ("CT", "SR")),), ReportAvailability.LIKELY),
        ((("r", ("DOC",)),), ReportAvailability.LIKELY),
        ((("r", ("CT",)),), ReportAvailability.UNKNOWN),
        ((("r", ()),), ReportAvailability.UNKNOWN),
        ((("b", ("CT", "SR")),), ReportAvailability.UNSUPPORTED),
        # The SR listed by a source that cannot read it, the study held by one that can: likely.
        ((("b", ("CT", "SR")), ("r", ("CT",))), ReportAvailability.LIKELY),
        ((("b", ("CT",)), ("r", ("CT",))), ReportAvailability.UNKNOWN),
    ],
)
def test_the_merge_says_from_the_sources_flag_and_the_modalities(
    records: tuple[tuple[str, tuple[str, ...]], ...], expected: ReportAvailability
) -> None:
    assert availability(*records) is expected


def test_the_built_in_connectors_declare_that_they_read_reports() -> None:
    dicomweb = DicomwebConnector(
        DicomwebSourceSettings(id="w", kind="dicomweb", url="http://unused"), ConnectorContext()
    )
    dimse = DimseConnector(
        DimseSourceSettings(id="d", kind="dimse", host="127.0.0.1", port=1, called_ae="PACS"),
        ConnectorContext(),
    )
    assert dicomweb.info.supports_reports and dimse.info.supports_reports


class Lab(Connector):
    """One study with an SR series; reads reports or not as its class says."""

    kind = "lab"
    settings_model = DicomwebSourceSettings

    def __init__(self, source_id: str) -> None:
        settings = DicomwebSourceSettings(id=source_id, kind="dicomweb", url="http://unused")
        super().__init__(settings, ConnectorContext())
        self.asked_reports = 0

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        return SourceAnswer(
            [
                StudyRecord(
                    source_id=self.id,
                    study_instance_uid=f"1.2.{self.id}",
                    patient_id=query.patient_id,
                    modalities=("CT", "SR"),
                )
            ]
        )

    async def ping(self, deadline: Deadline) -> None:
        """Always there."""


class ReportingLab(Lab):
    supports_reports = True

    async def fetch_report(self, study: object, deadline: Deadline) -> object:  # type: ignore[override]
        self.asked_reports += 1
        raise AssertionError("a search reads no report")


async def test_a_search_tells_each_exam_s_availability_without_reading_a_report() -> None:
    reporting, plain = ReportingLab("r"), Lab("p")
    engine = FederationEngine([reporting, plain], None)
    history = await engine.patient_history(PatientQuery(patient_id="PA-001"))
    found = {e.study_instance_uid: e.report_availability for e in history.exams}
    assert found == {"1.2.r": ReportAvailability.LIKELY, "1.2.p": ReportAvailability.UNSUPPORTED}
    assert reporting.asked_reports == 0
