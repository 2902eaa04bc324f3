"""Merge per-source StudyRecords into one exam per StudyInstanceUID, newest first."""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Iterable, Mapping, Sequence

from federation.models import Exam, ExamLocation, ReportAvailability, SourceInfo, StudyRecord, unvalidated
from federation.viewer import fill_template

_RANK = operator.itemgetter(0)
REPORT_MODALITIES = frozenset({"SR", "DOC"})
"""Modalities of a report series (PS3.3 C.7.3.1.1.1): SR (structured report), DOC (encapsulated document)."""


def viewer_url(record: StudyRecord, source: SourceInfo) -> str | None:
    """The record's study in its source's viewer; None when the source has no template or a value is missing."""
    if source.viewer_template is None:
        return None
    values = {
        "studyInstanceUid": record.study_instance_uid,
        "accessionNumber": record.accession_number,
        "patientId": record.patient_id,
    }
    return fill_template(source.viewer_template, values)


def report_availability(modalities: Iterable[str], sources: Iterable[SourceInfo]) -> ReportAvailability:
    """What the search says of a study's report without reading it: its sources' flag and its modalities.

    LIKELY when a source holding it reads reports and ModalitiesInStudy lists SR or DOC; UNKNOWN when
    such a source holds it but none is listed (a PACS may leave reports out of ModalitiesInStudy, or
    keep them elsewhere); UNSUPPORTED when no source holding it reads reports.
    """
    if not any(source.supports_reports for source in sources):
        return ReportAvailability.UNSUPPORTED
    if REPORT_MODALITIES.intersection(modalities):
        return ReportAvailability.LIKELY
    return ReportAvailability.UNKNOWN


def _location(record: StudyRecord, source: SourceInfo) -> ExamLocation:
    """Where the record's study is; its values are the validated record's and source's, not validated again."""
    return unvalidated(
        ExamLocation,
        {
            "source": source,
            "patient_id": record.patient_id,
            "issuer_of_patient_id": record.issuer_of_patient_id,
            "accession_number": record.accession_number,
            "retrieve_url": record.retrieve_url,
            "retrieve_ae_title": record.retrieve_ae_title,
            "matched_by": record.matched_by,
            "cached_at": record.cached_at,
            "viewer_url": viewer_url(record, source),
            "patient_name": record.patient_name,
            "patient_birth_date": record.patient_birth_date,
            "patient_sex": record.patient_sex,
        },
    )


def merge_exam(
    records: Sequence[StudyRecord],
    sources: Mapping[str, SourceInfo],
    locations: Sequence[ExamLocation] | None = None,
) -> Exam:
    """One exam from the records of one study; sources earlier in configuration order win ties.

    Each field takes the first record's value that is set (non-empty); the series and instance
    counts take the largest, since sources may hold part of a study and the most complete copy
    is the useful number; the name's component groups come from the first record that has an
    Ideographic or Phonetic group, else the first with a name (a Latin-1 PACS drops kanji on the
    way out). One pass over the records: a 50-source study merges in ~0.1 ms. ``locations``, when
    given, are the records' locations made earlier (one per record, in the same order).
    """
    study_date = study_time = birth_date = None
    description = accession_number = patient_name = patient_sex = referring = None
    series = instances = None
    modalities: dict[str, None] = {}
    named = None
    for r in records:
        study_date = study_date or r.study_date
        study_time = study_time or r.study_time
        description = description or r.description
        accession_number = accession_number or r.accession_number
        patient_name = patient_name or r.patient_name
        if r.patient_name_groups is not None and (named is None or named.patient_name_groups is None):
            named = r  # the first with groups beyond Alphabetic: a Latin-1 PACS drops them
        elif named is None and r.patient_name:
            named = r
        birth_date = birth_date or r.patient_birth_date
        patient_sex = patient_sex or r.patient_sex
        referring = referring or r.referring_physician_name
        if r.number_of_series is not None and (series is None or r.number_of_series > series):
            series = r.number_of_series
        if r.number_of_instances is not None and (instances is None or r.number_of_instances > instances):
            instances = r.number_of_instances
        modalities.update(dict.fromkeys(r.modalities))
    return Exam(
        study_instance_uid=records[0].study_instance_uid,
        study_date=study_date,
        study_time=study_time,
        modalities=tuple(modalities),
        description=description or None,
        accession_number=accession_number or None,
        patient_name=patient_name or None,
        patient_name_groups=named.name_groups if named is not None else None,
        patient_birth_date=birth_date,
        patient_sex=patient_sex or None,
        referring_physician_name=referring or None,
        number_of_series=series,
        number_of_instances=instances,
        locations=tuple(locations)
        if locations is not None
        else tuple(_location(r, sources[r.source_id]) for r in records),
        report_availability=report_availability(modalities, (sources[r.source_id] for r in records)),
        cached_at=_cached_at(records),
    )


def _cached_at(records: Sequence[StudyRecord]) -> dt.datetime | None:
    """When the newest answer holding the exam was given, if every one came from the cache (else None)."""
    times = [r.cached_at for r in records]
    if not times or None in times:
        return None
    return max(t for t in times if t is not None)


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


class RunningMerge:
    """The exams of records that arrive source by source, re-merging only the studies each arrival touches.

    Gives what :func:`merge_records` gives for all the records so far, without merging them all
    again at every progressive update: an update costs the studies it changed, not the history.
    """

    def __init__(self, sources: Mapping[str, SourceInfo]) -> None:
        self._sources = sources
        self._order = {source_id: index for index, source_id in enumerate(sources)}
        self._merged: dict[str, Sequence[StudyRecord]] = {}
        """Each source's records as last merged (compared by identity: results are replaced, not changed)."""
        self._groups: dict[str, list[tuple[tuple[int, int], StudyRecord, ExamLocation]]] = {}
        self._exams: dict[str, Exam] = {}
        self._sorted: list[Exam] | None = []

    def update(self, records_by_source: Mapping[str, Sequence[StudyRecord]]) -> frozenset[str]:
        """Take each source's current records; the StudyInstanceUIDs whose exam was added or changed."""
        touched: set[str] = set()
        for source_id, records in records_by_source.items():
            previous = self._merged.get(source_id)
            if previous is records:
                continue
            self._merged[source_id] = records
            rank = self._order.get(source_id, len(self._order))
            for record in previous or ():  # rare: a result replaced within one query
                uid = record.study_instance_uid
                self._groups[uid] = [entry for entry in self._groups[uid] if entry[1].source_id != source_id]
                touched.add(uid)
            for position, record in enumerate(records):
                uid = record.study_instance_uid
                entry = ((rank, position), record, _location(record, self._sources[record.source_id]))
                self._groups.setdefault(uid, []).append(entry)
                touched.add(uid)
        for uid in touched:
            group = self._groups[uid]
            if group:
                group.sort(key=_RANK)  # configuration order; the entries already in it are sorted
                self._exams[uid] = merge_exam([e[1] for e in group], self._sources, [e[2] for e in group])
            else:
                del self._groups[uid], self._exams[uid]
        if touched:
            self._sorted = None
        return frozenset(touched)

    def exams(self) -> list[Exam]:
        """Every exam so far, newest first (sorted again only after a change)."""
        if self._sorted is None:
            self._sorted = sort_newest_first(list(self._exams.values()))
        return list(self._sorted)
