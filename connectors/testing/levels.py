"""The kit's checks of searches by study keys and below the study (the facades' needs, issue 17).

Each check runs the connector against the seeded peer when it declares the capability; when it
does not, the call must be refused with a ConnectorError (the base class does) or answered
without widening the query to studies it did not ask for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.base import Connector, InstanceAnswer, SeriesAnswer, SourceAnswer
from federation.errors import ConnectorError
from federation.models import DateRange, Deadline, InstanceQuery, SeriesQuery, StudyQuery

if TYPE_CHECKING:
    from connectors.testing.studies import KitStudy
    from connectors.testing.suite import ConnectorConformance

__all__ = ["check_instance_query", "check_series_query", "check_study_keys"]


def _two_studies_of_one_patient(kit: ConnectorConformance) -> tuple[KitStudy, KitStudy]:
    for studies in kit.patients(ascii_names=True).values():
        if len(studies) >= 2 and studies[0].study_date != studies[1].study_date:
            first, second = sorted(studies[:2], key=lambda s: s.study_date)
            return first, second
    raise AssertionError("the kit's studies need a patient with two studies on different days")


async def check_study_keys(kit: ConnectorConformance, connector: Connector) -> None:
    """StudyInstanceUID and AccessionNumber alone find one study (a UID list both, with ``supports_uid_lists``); a date range and a modality narrow a patient's."""
    first, second = _two_studies_of_one_patient(kit)
    deadline = Deadline.after(kit.query_deadline_s)
    queries = [
        (StudyQuery(study_instance_uid=second.study_instance_uid), [second]),
        (StudyQuery(accession_number=first.accession_number), [first]),
        (StudyQuery(patient_id=first.patient_id, study_date=DateRange(start=second.study_date)), [second]),
        (StudyQuery(patient_id=first.patient_id, study_date=DateRange(end=first.study_date)), [first]),
    ]
    if first.modality != second.modality:  # a peer without ModalitiesInStudy: the connector makes up for it
        queries.append((StudyQuery(patient_id=first.patient_id, modalities=(second.modality,)), [second]))
    if connector.supports_uid_lists:  # PS3.4 C.2.2.2.2: one request, any of the listed studies
        uids = (first.study_instance_uid, f"{first.study_instance_uid}9", second.study_instance_uid)
        queries.append((StudyQuery(study_instance_uids=uids), [first, second]))
    for query, expected in queries:
        if not connector.supports_study_keys:
            await _not_widened(kit, connector, query, {s.study_instance_uid for s in kit.studies()})
            continue
        answer = await connector.find_studies(query, deadline)
        kit.check_answer(answer, expected, connector.id)


async def _not_widened(
    kit: ConnectorConformance, connector: Connector, query: StudyQuery, own: set[str]
) -> None:
    try:
        answer = await connector.find_studies(query, Deadline.after(kit.query_deadline_s))
    except ConnectorError as refused:
        kit.check_clean([str(refused)], "a refused query's error")
        return
    assert isinstance(answer, SourceAnswer)
    others = [r.study_instance_uid for r in answer.records if r.study_instance_uid not in own]
    assert not others, f"a study-key query it does not support was widened: {others}"


async def check_series_query(kit: ConnectorConformance, connector: Connector) -> None:
    """Each seeded study's one series, with its number and modality; a series UID narrows, another study's finds none."""
    deadline = Deadline.after(kit.query_deadline_s)
    for study in kit.studies():
        query = SeriesQuery(study_instance_uid=study.study_instance_uid, patient_id=study.patient_id)
        if not connector.supports_series_query:
            try:
                await connector.find_series(query, deadline)
            except ConnectorError:
                return
            raise AssertionError("find_series answered without supports_series_query")
        answer = await connector.find_series(query, deadline)
        assert isinstance(answer, SeriesAnswer), f"find_series returned {type(answer).__name__}"
        got = [(r.source_id, r.study_instance_uid, r.series_instance_uid) for r in answer.records]
        assert got == [(connector.id, study.study_instance_uid, study.series_instance_uid)], got
        (record,) = answer.records
        assert record.modality == study.modality, f"modality {record.modality!r}, not {study.modality!r}"
        assert record.series_number in (None, 1), f"series_number {record.series_number!r}"
        assert record.number_of_instances in (None, 1), f"number_of_instances {record.number_of_instances!r}"
        kit.check_clean(list(answer.warnings), "a series answer's warnings")
    one = kit.studies()[0]
    narrowed = SeriesQuery(
        study_instance_uid=one.study_instance_uid, series_instance_uid=f"{one.series_instance_uid}9"
    )
    assert not (await connector.find_series(narrowed, deadline)).records, (
        "a SeriesInstanceUID key was ignored"
    )


async def check_instance_query(kit: ConnectorConformance, connector: Connector) -> None:
    """Each seeded series' one instance, with its SOP class and number; a SOP Instance UID narrows."""
    deadline = Deadline.after(kit.query_deadline_s)
    for study in kit.studies():
        query = InstanceQuery(
            study_instance_uid=study.study_instance_uid, series_instance_uid=study.series_instance_uid
        )
        if not connector.supports_instance_query:
            try:
                await connector.find_instances(query, deadline)
            except ConnectorError:
                return
            raise AssertionError("find_instances answered without supports_instance_query")
        answer = await connector.find_instances(query, deadline)
        assert isinstance(answer, InstanceAnswer), f"find_instances returned {type(answer).__name__}"
        got = [(r.source_id, r.series_instance_uid, r.sop_instance_uid) for r in answer.records]
        assert got == [(connector.id, study.series_instance_uid, study.sop_instance_uid)], got
        (record,) = answer.records
        sop_class = record.sop_class_uid  # dcmqrscp returns none at IMAGE level
        assert sop_class is None or sop_class.startswith("1.2.840.10008."), f"SOPClassUID {sop_class!r}"
        assert record.instance_number in (None, 1), f"instance_number {record.instance_number!r}"
        assert record.rows in (None, 2), f"rows {record.rows!r}"
        assert record.columns in (None, 2), f"columns {record.columns!r}"
    one = kit.studies()[0]
    narrowed = InstanceQuery(
        study_instance_uid=one.study_instance_uid,
        series_instance_uid=one.series_instance_uid,
        sop_instance_uid=f"{one.sop_instance_uid}9",
    )
    assert not (await connector.find_instances(narrowed, deadline)).records, (
        "a SOPInstanceUID key was ignored"
    )
