"""Demographic candidates: other patient records that may be the same person, scored apart.

Candidate exams are never mixed into a history's exams; the physician decides. The matching
keys sent to PACS are deliberately loose (a wildcard on the family name, or the birth date
alone) so that spelling variants are found; the scoring (federation.names) then ranks them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from federation.merge import merge_records
from federation.models import Candidate, PatientQuery, SourceInfo, StudyQuery, StudyRecord
from federation.names import Demographics, fold, score

_MAX_PATTERN_CHARS = 16


def reference_demographics(patient: PatientQuery, records: Iterable[StudyRecord]) -> Demographics | None:
    """Who we are looking for: the query's demographics, or the most common ones the sources gave."""
    if patient.family_name is not None:
        return Demographics(patient.family_name, patient.given_name, patient.birth_date, patient.sex)
    seen = Counter(
        (r.patient_name, r.patient_birth_date, r.patient_sex)
        for r in records
        if r.patient_name and r.patient_birth_date
    )
    if not seen:
        return None
    # Most frequent first; ties broken on the values so the choice is deterministic.
    (name, birth_date, sex), _ = sorted(seen.items(), key=lambda item: (-item[1], str(item[0])))[0]
    return Demographics.from_pn(name, birth_date, sex)


def name_pattern(family_name: str) -> str | None:
    """A PN wildcard key a PACS can match without folding: non-ASCII runs become ``*`` (``M*ller*``)."""
    pattern = ""
    for char in family_name.strip()[:_MAX_PATTERN_CHARS]:
        if char.isascii() and (char.isalnum() or char in " -'"):
            pattern += char
        elif not pattern.endswith("*"):
            pattern += "*"
    pattern = pattern.rstrip("*") + "*"
    return pattern if any(c.isalnum() for c in pattern) else None


def candidate_queries(reference: Demographics) -> list[StudyQuery]:
    """The loose queries that find namesakes and spelling variants: by name, and by birth date."""
    queries: list[StudyQuery] = []
    if reference.family_name:
        pattern = name_pattern(reference.family_name)
        if pattern:
            queries.append(StudyQuery(patient_name=pattern))
    if reference.birth_date:
        queries.append(StudyQuery(patient_birth_date=reference.birth_date))
    return queries


def build_candidates(
    reference: Demographics,
    records: Sequence[StudyRecord],
    sources: Mapping[str, SourceInfo],
    exclude: set[tuple[str, str]],
    exclude_patients: set[tuple[str, str]],
) -> list[Candidate]:
    """One candidate per (source, PatientID), best score first; the patient's own records excluded."""
    groups: dict[tuple[str, str], list[StudyRecord]] = {}
    for record in records:
        if (record.source_id, record.study_instance_uid) in exclude or not record.patient_id:
            continue
        if (record.source_id, record.patient_id) in exclude_patients:
            continue
        groups.setdefault((record.source_id, record.patient_id), []).append(record)
    candidates: list[Candidate] = []
    for (source_id, patient_id), group in groups.items():
        first = group[0]
        other = Demographics.from_pn(first.patient_name, first.patient_birth_date, first.patient_sex)
        if not _plausible(reference, other):
            continue
        match = score(reference, other)
        unique = {r.study_instance_uid: r for r in group}
        candidates.append(
            Candidate(
                score=match.score,
                reasons=match.reasons,
                source=sources[source_id],
                patient_id=patient_id,
                issuer_of_patient_id=first.issuer_of_patient_id,
                patient_name=first.patient_name,
                birth_date=first.patient_birth_date,
                sex=first.patient_sex,
                exams=tuple(merge_records(unique.values(), sources)),
            )
        )
    candidates.sort(key=lambda c: (-c.score, c.source.id, c.patient_id or ""))
    return candidates


def _plausible(reference: Demographics, other: Demographics) -> bool:
    """Drop what the loose queries bring in that shares neither the birth date nor a name."""
    same_birth = reference.birth_date is not None and reference.birth_date == other.birth_date
    ref_family = fold(reference.family_name or "")
    other_parts = fold(" ".join((other.family_name or "", other.given_name or "")))
    shares_name = bool(ref_family) and any(token in other_parts.split() for token in ref_family.split())
    return same_birth or shares_name
