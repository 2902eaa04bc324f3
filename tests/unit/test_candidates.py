"""Candidate search keys and grouping (scoring itself is tested in test_names)."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.identity.candidates import (
    build_candidates,
    candidate_queries,
    name_pattern,
    reference_demographics,
    script_name_pattern,
)
from federation.identity.names import MERGE_THRESHOLD, Demographics
from federation.models import PatientQuery, PersonNameGroups, SourceInfo, StudyRecord

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
        ("O'Neil", "O?Neil*"),
        ("Van den Bossche", "Van?den?Bossche*"),  # Orthanc's QIDO would not decode %20
    ],
)
def test_name_pattern(family: str, pattern: str | None) -> None:
    assert name_pattern(family) == pattern


@pytest.mark.parametrize(
    ("family", "pattern"),
    [
        ("山田", "*山田*"),
        ("홍", "*홍*"),
        ("Διονυσιος", "*Διονυσιος*"),
        ("Иванов-Петров", "*Иванов?Петров*"),
        ("Müller", None),  # Latin script: name_pattern's M*ller* is looser and works everywhere
        ("Janssens", None),
    ],
)
def test_script_name_pattern(family: str, pattern: str | None) -> None:
    assert script_name_pattern(family) == pattern


def test_a_name_in_another_script_gets_its_own_key_only_where_the_source_takes_it() -> None:
    reference = Demographics.from_pn("Yamada^Tarou=山田^太郎=やまだ^たろう", BIRTH, "M")
    plain = candidate_queries(reference)
    assert [(q.patient_name, q.patient_birth_date) for q in plain] == [("Yamada*", None), (None, BIRTH)]
    wide = candidate_queries(reference, non_ascii_name_keys=True)
    assert [q.patient_name for q in wide] == ["Yamada*", "*山田*", None]
    kanji = candidate_queries(Demographics("山田", None, BIRTH), non_ascii_name_keys=True)
    assert [q.patient_name for q in kanji] == ["*山田*", None]
    assert [q.patient_name for q in candidate_queries(Demographics("山田", None, BIRTH))] == [None]


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


def test_candidates_are_scored_and_found_in_every_group() -> None:
    born = dt.date(1965, 3, 17)
    kanji_search = Demographics("山田", "太郎", dt.date(1965, 3, 18), "M")
    record = StudyRecord(
        source_id="a",
        study_instance_uid="9",
        patient_id="PA-JP1",
        patient_name="Yamada^Tarou",
        patient_name_groups=("Yamada^Tarou", "山田^太郎", "やまだ^たろう"),
        patient_birth_date=born,
        patient_sex="M",
    )
    # Another birth date: only the kanji name makes it plausible.
    [candidate] = build_candidates(kanji_search, [record], SOURCES, exclude=set(), exclude_patients=set())
    assert candidate.reasons[-2:] == ("family_name_equal", "given_name_equal")
    assert candidate.patient_name == "Yamada^Tarou"
    assert candidate.patient_name_groups == PersonNameGroups(
        alphabetic="Yamada^Tarou", ideographic="山田^太郎", phonetic="やまだ^たろう"
    )


def test_the_reference_taken_from_the_records_keeps_every_group() -> None:
    record = StudyRecord(
        source_id="a",
        study_instance_uid="9",
        patient_name="Hong^Gildong",
        patient_name_groups=("Hong^Gildong", "洪^吉洞", "홍^길동"),
        patient_birth_date=BIRTH,
    )
    latin1 = StudyRecord(  # the same study from a PACS whose Latin-1 answers lost the other groups
        source_id="b", study_instance_uid="9", patient_name="Hong^Gildong", patient_birth_date=BIRTH
    )
    for records in ([record], [latin1, record], [record, latin1]):
        derived = reference_demographics(PatientQuery(patient_id="PA-KR1"), records)
        assert derived is not None
        assert derived.names() == (("Hong", "Gildong"), ("洪", "吉洞"), ("홍", "길동"))


def test_a_name_search_without_sex_or_given_name_does_not_blame_the_record() -> None:
    # The page's search has no sex field: "no sex recorded" would be said of every candidate.
    reference = reference_demographics(PatientQuery(family_name="Peeters", birth_date=BIRTH), [])
    assert reference is not None
    records = [rec("b", "5", "B-9", "PEETERS^JAN", BIRTH)]
    [candidate] = build_candidates(reference, records, SOURCES, exclude=set(), exclude_patients=set())
    assert "sex_missing" not in candidate.reasons and "given_name_missing" not in candidate.reasons
    assert {"sex_not_compared", "given_name_not_compared"} <= set(candidate.reasons)
