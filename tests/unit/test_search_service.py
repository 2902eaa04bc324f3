"""Study, series and instance searches through the service door: capabilities, merging, access and audit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest
from unit.test_access_service import ListAuditTrail, _user

from connectors.base import Connector, ConnectorContext, InstanceAnswer, SeriesAnswer, SourceAnswer
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.access.principals import AccessContext
from federation.access.share import MemoryShareStore, ShareCodes
from federation.audit.records import AuditAction, AuditOutcome
from federation.engine.engine import FederationEngine
from federation.errors import AccessError, Overloaded, QueryError, SourceUnreachable
from federation.models import (
    DateRange,
    Deadline,
    InstanceQuery,
    InstanceRecord,
    PatientQuery,
    SeriesQuery,
    SeriesRecord,
    SourceStatus,
    StudyQuery,
    StudyRecord,
)
from federation.search import InstanceSearch, SeriesSearch, StudySearch
from federation.service import HistoryService
from federation.settings_security import ShareSettings

JAN, JUN = dt.date(2024, 1, 10), dt.date(2024, 6, 20)


class Catalog(Connector):
    """A source holding ``studies``; it matches patient ids, names and (when capable) study keys."""

    kind = "catalog"
    supports_study_keys = True
    supports_demographic_search = True
    supports_series_query = True
    supports_instance_query = True

    def __init__(
        self, source_id: str, studies: Sequence[StudyRecord], error: Exception | None = None
    ) -> None:
        super().__init__(
            DicomwebSourceSettings(id=source_id, kind="dicomweb", url="http://x"), ConnectorContext()
        )
        self.studies = [s.model_copy(update={"source_id": source_id}) for s in studies]
        self.error = error
        self.asked: list[object] = []

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        self.asked.append(query)
        if self.error is not None:
            raise self.error
        found = [
            s
            for s in self.studies
            if (query.patient_id is None or s.patient_id == query.patient_id)
            and (
                query.patient_name is None
                or (s.patient_name or "").startswith(query.patient_name.rstrip("*"))
            )
            and query.matches_study_keys(s)
        ]
        return SourceAnswer(found)

    async def find_series(self, query: SeriesQuery, deadline: Deadline) -> SeriesAnswer:
        self.asked.append(query)
        if self.error is not None:
            raise self.error
        held = [s for s in self.studies if s.study_instance_uid == query.study_instance_uid]
        return SeriesAnswer(
            [
                SeriesRecord(
                    source_id=self.id,
                    study_instance_uid=s.study_instance_uid,
                    series_instance_uid=f"{s.study_instance_uid}.{n}",
                    series_number=n,
                    modality=s.modalities[0] if s.modalities else None,
                )
                for s in held
                for n in (2, 1)
            ]
        )

    async def find_instances(self, query: InstanceQuery, deadline: Deadline) -> InstanceAnswer:
        self.asked.append(query)
        return InstanceAnswer(
            [
                InstanceRecord(
                    source_id=self.id,
                    study_instance_uid=query.study_instance_uid,
                    series_instance_uid=query.series_instance_uid,
                    sop_instance_uid=f"{query.series_instance_uid}.{n}",
                    instance_number=n,
                )
                for n in (3, 1, 2)
            ]
        )

    async def ping(self, deadline: Deadline) -> None:
        return None


class PatientOnly(Catalog):
    """A source whose connector matches patient keys only."""

    supports_study_keys = False
    supports_demographic_search = False
    supports_series_query = False
    supports_instance_query = False


def study(
    uid: str, pid: str, day: dt.date, modalities: tuple[str, ...] = ("CT",), **more: object
) -> StudyRecord:
    return StudyRecord(
        source_id="", study_instance_uid=uid, patient_id=pid, study_date=day, modalities=modalities, **more
    )


def make(*connectors: Connector, max_pending: int = 100) -> tuple[HistoryService, ListAuditTrail]:
    audit = ListAuditTrail()
    engine = FederationEngine(connectors, None, max_pending_queries=max_pending)
    shares = ShareCodes(ShareSettings(), MemoryShareStore())
    return HistoryService(engine, audit, shares, emergency_window_s=3600, national_issuer="NISS"), audit


def reader(**kwargs: object) -> AccessContext:
    access = _user("history:read", **kwargs)  # type: ignore[arg-type]
    return AccessContext(access.principal, access.client_address, access.request_id, channel="dicomweb")


def statuses(result: object) -> dict[str, SourceStatus]:
    return {o.source.id: o.status for o in result.sources}  # type: ignore[attr-defined]


def test_a_search_needs_a_patient_a_study_uid_or_an_accession_number() -> None:
    for refused in (
        {},
        {"study_date": DateRange(start=JAN)},
        {"modalities": ("CT",)},
        {"patient_name": "*"},
        {"patient_name": "A*?"},
    ):
        with pytest.raises(QueryError) as caught:
            StudySearch(**refused)  # type: ignore[arg-type]
        assert caught.value.code == "BAD_QUERY"
    for accepted in ({"accession_number": "A1"}, {"study_instance_uid": "1.2"}, {"patient_name": "Do*"}):
        StudySearch(**accepted)  # type: ignore[arg-type]
    with pytest.raises(QueryError):
        StudySearch(study_instance_uid="1.2.*")


def test_date_ranges_read_and_write_dicom() -> None:
    assert DateRange.parse("20240101-20240131") == DateRange(
        start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 31)
    )
    assert DateRange.parse("20240101-") == DateRange(start=dt.date(2024, 1, 1))
    assert DateRange.parse("-20240101") == DateRange(end=dt.date(2024, 1, 1))
    assert DateRange.parse("20240101").dicom() == "20240101"
    assert DateRange(start=JAN).dicom() == "20240110-"
    for bad in ("2024", "20240231", "20240201-20240101", "-"):
        with pytest.raises(QueryError):
            DateRange.parse(bad)


async def test_by_patient_the_history_is_matched_against_the_study_keys_and_audited() -> None:
    a = Catalog("a", [study("1.1", "P1", JAN), study("1.2", "P1", JUN, ("MR",))])
    b = PatientOnly("b", [study("1.3", "P1", JUN), study("1.2", "P1", JUN, ("MR",))])
    service, audit = make(a, b)
    search = StudySearch(patient=PatientQuery(patient_id="P1"), study_date=DateRange.parse("20240601-"))
    result = await service.search_studies(search, reader())
    assert [m.exam.study_instance_uid for m in result.studies] == ["1.2", "1.3"]
    merged = result.studies[0]
    assert [loc.source.id for loc in merged.exam.locations] == ["a", "b"]
    assert (merged.patient_id, merged.issuer_of_patient_id) == ("P1", None)
    assert statuses(result) == {"a": SourceStatus.OK, "b": SourceStatus.OK}
    access, outcome = audit.records
    assert (access.action, access.channel, access.detail) == (
        AuditAction.PATIENT_QUERY,
        "dicomweb",
        "study search; access",
    )
    assert (outcome.exam_count, outcome.patient_ids[0]) == (2, "P1^^^")


async def test_by_study_uid_only_capable_sources_are_asked_and_copies_merge() -> None:
    a = Catalog("a", [study("1.5", "A-9", JAN)])
    c = Catalog("c", [study("1.5", "C-4", JAN)])
    b = PatientOnly("b", [study("1.5", "B-1", JAN)])
    service, audit = make(a, b, c)
    result = await service.search_studies(StudySearch(study_instance_uid="1.5"), reader())
    assert statuses(result) == {"a": SourceStatus.OK, "b": SourceStatus.UNSUPPORTED, "c": SourceStatus.OK}
    assert not b.asked
    assert not result.complete
    (match,) = result.studies
    assert [(loc.source.id, loc.patient_id) for loc in match.exam.locations] == [("a", "A-9"), ("c", "C-4")]
    assert match.patient_id == "A-9"
    assert audit.records[-1].patient_ids == ["A-9^^^"]
    assert audit.records[0].detail == "study search; study 1.5; access"


async def test_a_name_search_never_merges_different_patients() -> None:
    a = Catalog(
        "a",
        [
            study("1.7", "A-1", JAN, patient_name="DOE^JANE"),
            study("1.8", "A-1", JUN, patient_name="DOE^JANE"),
        ],
    )
    c = Catalog("c", [study("1.7", "C-2", JAN, patient_name="DOE^JOHN")])
    b = PatientOnly("b", [study("1.9", "B-3", JAN, patient_name="DOE^JIM")])
    service, audit = make(a, b, c)
    result = await service.search_studies(StudySearch(patient_name="DOE*"), reader())
    found = sorted((m.exam.study_instance_uid, m.patient_id, len(m.exam.locations)) for m in result.studies)
    assert found == [("1.7", "A-1", 1), ("1.7", "C-2", 1), ("1.8", "A-1", 1)]
    assert statuses(result)["b"] is SourceStatus.UNSUPPORTED
    assert audit.records[0].patient_ids == ["name:DOE*"]
    assert set(audit.records[-1].patient_ids) == {"name:DOE*", "A-1^^^", "C-2^^^"}


async def test_a_failing_source_is_a_status_and_the_others_answer() -> None:
    a = Catalog("a", [study("2.1", "A", JAN)])
    c = Catalog("c", [], error=SourceUnreachable("connection refused"))
    service, _ = make(a, c)
    result = await service.search_studies(StudySearch(accession_number="X1"), reader())
    assert statuses(result) == {"a": SourceStatus.OK, "c": SourceStatus.UNREACHABLE}
    assert not result.studies  # a's study has another accession number
    series = await service.search_series(SeriesSearch(study_instance_uid="2.1"), reader())
    assert statuses(series) == {"a": SourceStatus.OK, "c": SourceStatus.UNREACHABLE}
    assert [m.record.series_number for m in series.series] == [1, 2]
    assert not series.complete


async def test_series_and_instances_merge_by_uid_in_configuration_order() -> None:
    a = Catalog("a", [study("3.1", "A", JAN)])
    b = PatientOnly("b", [study("3.1", "B", JAN)])
    c = Catalog("c", [study("3.1", "C", JAN)])
    service, audit = make(a, b, c)
    series = await service.search_series(SeriesSearch(study_instance_uid="3.1"), reader())
    assert [m.record.series_instance_uid for m in series.series] == ["3.1.1", "3.1.2"]
    assert [s.id for s in series.series[0].sources] == ["a", "c"]
    assert statuses(series)["b"] is SourceStatus.UNSUPPORTED
    found = await service.search_instances(
        InstanceSearch(study_instance_uid="3.1", series_instance_uid="3.1.1"), reader(sources={"c"})
    )
    assert [m.record.instance_number for m in found.instances] == [1, 2, 3]
    assert [o.source.id for o in found.sources] == ["c"]  # principal.sources limits the sources asked
    assert audit.records[-1].detail == "instance search; study 3.1; 3 instances"


async def test_without_history_read_a_search_without_patient_id_is_refused_and_audited() -> None:
    service, audit = make(Catalog("a", [study("4.1", "A", JAN)]))
    emergency = _user("history:emergency")
    with pytest.raises(AccessError) as caught:
        await service.search_studies(StudySearch(study_instance_uid="4.1"), emergency)
    assert caught.value.code == "FORBIDDEN"
    with pytest.raises(AccessError):
        await service.search_series(SeriesSearch(study_instance_uid="4.1"), _user())
    assert [r.outcome for r in audit.records] == [AuditOutcome.DENIED, AuditOutcome.DENIED]


async def test_searches_are_admitted_like_histories() -> None:
    service, audit = make(Catalog("a", []), max_pending=0)
    with pytest.raises(Overloaded):
        await service.search_studies(StudySearch(study_instance_uid="5.1"), reader())
    with pytest.raises(Overloaded):
        await service.search_series(SeriesSearch(study_instance_uid="5.1"), reader())
    assert not audit.records


async def test_the_deadline_rules_are_the_histories() -> None:
    service, _ = make(Catalog("a", []))
    with pytest.raises(QueryError) as caught:
        await service.search_studies(StudySearch(study_instance_uid="6.1"), reader(), deadline_ms=10)
    assert caught.value.code == "BAD_DEADLINE"
