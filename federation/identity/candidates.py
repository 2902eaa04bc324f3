"""Demographic candidates: other patient records that may be the same person, scored apart.

Candidate exams are never mixed into a history's exams; the physician decides. The matching
keys sent to PACS are deliberately loose (a wildcard on the family name, or the birth date
alone) so that spelling variants are found; the scoring (federation.identity.names) then ranks them.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from federation.identity.names import Demographics, fold, group_parts, score_record
from federation.merge import merge_records
from federation.models import Candidate, PatientQuery, SourceInfo, StudyQuery, StudyRecord

_MAX_PATTERN_CHARS = 16


def reference_demographics(patient: PatientQuery, records: Iterable[StudyRecord]) -> Demographics | None:
    """Who we are looking for: the query's demographics, or the most common ones the sources gave."""
    if patient.family_name is not None:
        return Demographics(patient.family_name, patient.given_name, patient.birth_date, patient.sex)
    seen = Counter(
        (r.patient_pn, r.patient_birth_date, r.patient_sex)
        for r in records
        if r.patient_name and r.patient_birth_date
    )
    if not seen:
        return None
    # Most frequent first, then the name in more scripts (a Latin-1 PACS drops the kanji); remaining
    # ties broken on the values so the choice is deterministic.
    (name, birth_date, sex), _ = min(
        seen.items(), key=lambda item: (-item[1], -len(group_parts(item[0][0] or "")), str(item[0]))
    )
    return Demographics.from_pn(name, birth_date, sex)


# In a pattern, a separator matches any one character: Orthanc's QIDO does not percent-decode, so
# a space would find nothing there, and "Van den Bossche" is also written "Van-den-Bossche".
_PATTERN_SEPARATORS = " -'"


def name_pattern(family_name: str) -> str | None:
    """A PN wildcard key a PACS can match without folding: non-ASCII runs become ``*`` (``M*ller*``)."""
    pattern = ""
    for char in family_name.strip()[:_MAX_PATTERN_CHARS]:
        if char.isascii() and char.isalnum():
            pattern += char
        elif char in _PATTERN_SEPARATORS:
            pattern += "?"
        elif not pattern.endswith("*"):
            pattern += "*"
    pattern = pattern.rstrip("*") + "*"
    return pattern if any(c.isalnum() for c in pattern) else None


def script_name_pattern(family_name: str) -> str | None:
    """A PN wildcard key in the name's own script, for sources that take keys beyond ASCII: ``*山田*``.

    The leading ``*`` is needed: a PACS matches the whole PN, and kanji, hanzi and hangul live in
    its second and third groups (``Yamada^Tarou=山田^太郎=やまだ^たろう``); Orthanc and dcmqrscp
    found ``山田*`` nowhere. Only for names in a script other than Latin: for those, ``name_pattern``
    is looser (``M*ller*`` finds Mueller too) and works everywhere.
    """
    name = family_name.strip()[:_MAX_PATTERN_CHARS]
    if not any(_beyond_latin(char) for char in name):
        return None
    body = "".join("?" if char in _PATTERN_SEPARATORS or char in "*?\\^=" else char for char in name)
    return f"*{body}*"


def _beyond_latin(char: str) -> bool:
    """A letter of a script other than Latin (Greek, Cyrillic, CJK, Hangul, kana, Arabic, Hebrew, ...)."""
    return char.isalpha() and not char.isascii() and not unicodedata.name(char, "").startswith("LATIN")


def candidate_queries(reference: Demographics, *, non_ascii_name_keys: bool = False) -> list[StudyQuery]:
    """The loose queries that find namesakes and spelling variants: by name, and by birth date.

    One key of ASCII letters (the first group that gives one) and, for a source that takes keys
    beyond ASCII, one in the name's own script (the first group written in one).
    """
    ascii_key = script_key = None
    for family, _given in reference.names():
        if family:
            ascii_key = ascii_key or name_pattern(family)
            script_key = script_key or (script_name_pattern(family) if non_ascii_name_keys else None)
    queries = [StudyQuery(patient_name=key) for key in (ascii_key, script_key) if key]
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
        other = Demographics.from_pn(first.patient_pn, first.patient_birth_date, first.patient_sex)
        if not _plausible(reference, other):
            continue
        match = score_record(reference, other)
        unique = {r.study_instance_uid: r for r in group}
        candidates.append(
            Candidate(
                score=match.score,
                reasons=match.reasons,
                source=sources[source_id],
                patient_id=patient_id,
                issuer_of_patient_id=first.issuer_of_patient_id,
                patient_name=first.patient_name,
                patient_name_groups=first.name_groups,
                birth_date=first.patient_birth_date,
                sex=first.patient_sex,
                exams=tuple(merge_records(unique.values(), sources)),
            )
        )
    candidates.sort(key=lambda c: (-c.score, c.source.id, c.patient_id or ""))
    return candidates


def _plausible(reference: Demographics, other: Demographics) -> bool:
    """Drop what the loose queries bring in that shares neither the birth date nor a name (in any group)."""
    same_birth = reference.birth_date is not None and reference.birth_date == other.birth_date
    ref_families = {token for family, _ in reference.names() for token in fold(family or "").split()}
    other_parts = {token for name in other.names() for token in fold(" ".join(p or "" for p in name)).split()}
    return same_birth or bool(ref_families & other_parts)
