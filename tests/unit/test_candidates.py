"""Candidate search keys and grouping (scoring itself is tested in test_names)."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.candidates import build_candidates, candidate_queries, name_pattern, reference_demographics
from federation.models import PatientQuery, SourceInfo, StudyRecord
from federation.names import MERGE_THRESHOLD, Demographics

SOURCES = {
    "a": SourceInfo(id="a", name="A", kind="dimse"),
    "b": SourceInfo(id="b", name="B", kind="dicomweb"),
}
BIRTH = dt.date(1970, 3, 15)


@pytest.mark.parametrize(
    ("family", "pattern"),
    [
        ("Janssens", "Janssens*"),
        ("Müller", "M*ller*"),
        ("Østergård", "*sterg*rd*"),
        ("山田", None),
        ("O'Neil", "O'Neil*"),
    ],
)
def test_name_pattern(family: str, pattern: str | None) -> None:
    assert name_pattern(family) == pattern


def test_queries_by_name_and_by_birth_date() -> None:
    queries = candidate_queries(Demographics("Janssens", "Marie", BIRTH, "F"))
    assert [(q.patient_name, q.patient_birth_date) for q in queries] == [("Janssens*", None), (None, BIRTH)]


def rec(source: str, uid: str, pid: str, name: str, birth: dt.date) -> StudyRecord:
    return StudyRecord(
        source_id=source, study_instance_uid=uid, patient_id=pid, patient_name=name, patient_birth_date=birth
    )


def test_namesake_with_other_birth_date_is_a_low_candidate_and_own_records_are_excluded() -> None:
    reference = Demographics("Janssens", "Marie", BIRTH, "F")
    records = [
        rec("a", "1", "A123", "Janssens^Marie", BIRTH),  # the patient's own, already in exams
        rec("a", "2", "A-NAMESAKE", "Janssens^Marie", dt.date(1988, 1, 1)),
        rec("b", "3", "B-1", "JANSSENS^MARIE", BIRTH),
        rec("b", "4", "B-OTHER", "Peeters^Jan", dt.date(1950, 5, 5)),  # shares nothing: dropped
    ]
    candidates = build_candidates(
        reference, records, SOURCES, exclude={("a", "1")}, exclude_patients={("a", "A123")}
    )
    assert [(c.source.id, c.patient_id) for c in candidates] == [("b", "B-1"), ("a", "A-NAMESAKE")]
    assert candidates[0].score >= MERGE_THRESHOLD
    assert candidates[1].score < MERGE_THRESHOLD
    assert [e.study_instance_uid for e in candidates[1].exams] == ["2"]


def test_reference_from_query_or_from_the_records() -> None:
    query = PatientQuery(family_name="Janssens", given_name="Marie", birth_date=BIRTH)
    assert reference_demographics(query, []) == Demographics("Janssens", "Marie", BIRTH, None)
    records = [rec("a", "1", "A123", "Janssens^Marie", BIRTH), rec("b", "2", "B-77", "Janssens^Marie", BIRTH)]
    derived = reference_demographics(PatientQuery(patient_id="A123"), records)
    assert derived is not None
    assert (derived.family_name, derived.birth_date) == ("Janssens", BIRTH)
    assert reference_demographics(PatientQuery(patient_id="A123"), []) is None
