"""Merge per-source StudyRecords into one exam per StudyInstanceUID, newest first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from federation.models import Exam, ExamLocation, SourceInfo, StudyRecord


def _first(values: Iterable[str | None]) -> str | None:
    return next((value for value in values if value), None)


def _largest(values: Iterable[int | None]) -> int | None:
    present = [value for value in values if value is not None]
    return max(present) if present else None


def _location(record: StudyRecord, source: SourceInfo) -> ExamLocation:
    return ExamLocation(
        source=source,
        patient_id=record.patient_id,
        issuer_of_patient_id=record.issuer_of_patient_id,
        accession_number=record.accession_number,
        retrieve_url=record.retrieve_url,
        retrieve_ae_title=record.retrieve_ae_title,
        matched_by=record.matched_by,
        cached_at=record.cached_at,
    )


def merge_exam(records: list[StudyRecord], sources: Mapping[str, SourceInfo]) -> Exam:
    """One exam from the records of one study; sources earlier in configuration order win ties."""
    modalities = tuple(dict.fromkeys(m for record in records for m in record.modalities))
    return Exam(
        study_instance_uid=records[0].study_instance_uid,
        study_date=next((r.study_date for r in records if r.study_date), None),
        study_time=next((r.study_time for r in records if r.study_time), None),
        modalities=modalities,
        description=_first(r.description for r in records),
        accession_number=_first(r.accession_number for r in records),
        patient_name=_first(r.patient_name for r in records),
        patient_birth_date=next((r.patient_birth_date for r in records if r.patient_birth_date), None),
        patient_sex=_first(r.patient_sex for r in records),
        referring_physician_name=_first(r.referring_physician_name for r in records),
        # Sources may hold part of a study; the most complete copy is the useful number.
        number_of_series=_largest(r.number_of_series for r in records),
        number_of_instances=_largest(r.number_of_instances for r in records),
        locations=tuple(_location(r, sources[r.source_id]) for r in records),
    )


def merge_records(records: Iterable[StudyRecord], sources: Mapping[str, SourceInfo]) -> list[Exam]:
    """Group records by StudyInstanceUID (in source order) and sort the exams newest first."""
    order = {source_id: index for index, source_id in enumerate(sources)}
    grouped: dict[str, list[StudyRecord]] = {}
    for record in sorted(records, key=lambda r: order.get(r.source_id, len(order))):
        grouped.setdefault(record.study_instance_uid, []).append(record)
    exams = [merge_exam(group, sources) for group in grouped.values()]
    return sort_newest_first(exams)


def sort_newest_first(exams: list[Exam]) -> list[Exam]:
    """Exams by study date then time, newest first; undated exams last, ties by UID."""
    by_uid = sorted(exams, key=lambda e: e.study_instance_uid)
    dated = [e for e in by_uid if e.study_date]
    undated = [e for e in by_uid if not e.study_date]
    # Python's sort is stable, so equal dates and times keep the UID order.
    dated.sort(key=lambda e: (e.study_date or dt.date.min, e.study_time or dt.time.min), reverse=True)
    return dated + undated
