"""Merging per-source records into exams."""

from __future__ import annotations

import datetime as dt

from federation.merge import merge_records
from federation.models import MatchedBy, MatchKind, SourceInfo, StudyRecord

SOURCES = {
    "a": SourceInfo(id="a", name="A", kind="dimse"),
    "b": SourceInfo(id="b", name="B", kind="dicomweb"),
}


def rec(source: str, uid: str, date: str | None = None, time: str | None = None, **kw: object) -> StudyRecord:
    return StudyRecord(
        source_id=source,
        study_instance_uid=uid,
        study_date=dt.date.fromisoformat(date) if date else None,
        study_time=dt.time.fromisoformat(time) if time else None,
        **kw,  # type: ignore[arg-type]
    )


def test_same_study_at_two_sources_is_one_exam_with_two_locations() -> None:
    exams = merge_records(
        [
            rec(
                "b",
                "1.1",
                "2024-01-05",
                modalities=("CT",),
                retrieve_url="http://b/studies/1.1",
                number_of_instances=3,
            ),
            rec(
                "a",
                "1.1",
                "2024-01-05",
                modalities=("CT", "SR"),
                retrieve_ae_title="A",
                number_of_instances=4,
            ),
        ],
        SOURCES,
    )
    assert len(exams) == 1
    exam = exams[0]
    assert [loc.source.id for loc in exam.locations] == ["a", "b"]  # configuration order
    assert exam.locations[0].retrieve_ae_title == "A"
    assert exam.locations[1].retrieve_url == "http://b/studies/1.1"
    assert exam.modalities == ("CT", "SR")
    assert exam.number_of_instances == 4


def test_newest_first_by_date_then_time_undated_last() -> None:
    exams = merge_records(
        [
            rec("a", "old", "2020-01-01"),
            rec("a", "nodate"),
            rec("b", "new-morning", "2024-01-05", "08:00:00"),
            rec("b", "new-evening", "2024-01-05", "20:00:00"),
            rec("a", "new-notime", "2024-01-05"),
        ],
        SOURCES,
    )
    assert [e.study_instance_uid for e in exams] == [
        "new-evening",
        "new-morning",
        "new-notime",
        "old",
        "nodate",
    ]


def test_missing_fields_are_filled_from_another_source() -> None:
    [exam] = merge_records(
        [rec("a", "1", "2024-01-05"), rec("b", "1", description="CT THORAX", patient_name="Müller^Anna")],
        SOURCES,
    )
    assert exam.description == "CT THORAX"
    assert exam.patient_name == "Müller^Anna"
    assert exam.study_date == dt.date(2024, 1, 5)


def test_ties_are_deterministic() -> None:
    records = [rec("a", uid, "2024-01-01") for uid in ("3", "1", "2")]
    first = [e.study_instance_uid for e in merge_records(records, SOURCES)]
    second = [e.study_instance_uid for e in merge_records(list(reversed(records)), SOURCES)]
    assert first == second == ["1", "2", "3"]


def test_tagging_a_record_copies_it_as_model_copy_would() -> None:
    original = StudyRecord(source_id="a", study_instance_uid="1.2.3", patient_id="P1")
    matched = MatchedBy(kind=MatchKind.LOCAL_ID)
    tagged = original.found_by(matched)
    assert tagged == original.model_copy(update={"matched_by": matched})
    assert tagged.model_fields_set == original.model_fields_set | {"matched_by"}
    assert original.matched_by is None
    assert "matched_by" not in original.model_fields_set
