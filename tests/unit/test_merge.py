"""Merging per-source records into exams."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from federation.cache.base import MemoryExamCache
from federation.merge import merge_exam, merge_records
from federation.models import (
    MatchedBy,
    MatchKind,
    PatientHistory,
    PatientQuery,
    PersonNameGroups,
    SourceInfo,
    StudyRecord,
)
from pacsfed.cli import render_history

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


def test_each_location_keeps_the_patient_as_its_source_records_them() -> None:
    # The exam's patient fields are the first source's; where sources disagree, the locations tell.
    [exam] = merge_records(
        [
            rec(
                "a", "1", patient_name="Peeters^Jan", patient_birth_date=dt.date(1949, 6, 5), patient_sex="M"
            ),
            rec("b", "1", patient_name="PEETERS^JAN", patient_birth_date=dt.date(1949, 5, 6)),
        ],
        SOURCES,
    )
    assert exam.patient_birth_date == dt.date(1949, 6, 5)
    assert [(loc.patient_name, loc.patient_birth_date, loc.patient_sex) for loc in exam.locations] == [
        ("Peeters^Jan", dt.date(1949, 6, 5), "M"),
        ("PEETERS^JAN", dt.date(1949, 5, 6), None),
    ]


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


def _reference_merge(records: list[StudyRecord]) -> dict[str, object]:
    """What merge_exam must give, written the plain way: each field from the first record that has it."""

    def first(values: list[object]) -> object:
        return next((value for value in values if value), None)

    def largest(values: list[int | None]) -> int | None:
        present = [value for value in values if value is not None]
        return max(present) if present else None

    return {
        "study_date": first([r.study_date for r in records]),
        "study_time": first([r.study_time for r in records]),
        "modalities": tuple(dict.fromkeys(m for r in records for m in r.modalities)),
        "description": first([r.description for r in records]),
        "accession_number": first([r.accession_number for r in records]),
        "patient_name": first([r.patient_name for r in records]),
        "patient_birth_date": first([r.patient_birth_date for r in records]),
        "patient_sex": first([r.patient_sex for r in records]),
        "referring_physician_name": first([r.referring_physician_name for r in records]),
        "number_of_series": largest([r.number_of_series for r in records]),
        "number_of_instances": largest([r.number_of_instances for r in records]),
    }


_maybe_text = st.sampled_from([None, "", "CT HEAD", "MR KNEE"])
_study_records = st.builds(
    StudyRecord,
    source_id=st.sampled_from(["a", "b"]),
    study_instance_uid=st.just("1.2.3"),
    study_date=st.none() | st.dates(dt.date(2000, 1, 1), dt.date(2001, 1, 1)),
    study_time=st.none() | st.times(),
    modalities=st.lists(st.sampled_from(["CT", "MR", "SR", "US"]), max_size=3).map(tuple),
    description=_maybe_text,
    accession_number=_maybe_text,
    patient_name=_maybe_text,
    patient_birth_date=st.none() | st.dates(dt.date(1950, 1, 1), dt.date(1951, 1, 1)),
    patient_sex=st.sampled_from([None, "", "F", "M"]),
    referring_physician_name=_maybe_text,
    number_of_series=st.none() | st.integers(0, 5),
    number_of_instances=st.none() | st.integers(0, 50),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_study_records, min_size=1, max_size=6))
def test_merging_one_study_takes_the_first_value_set_and_the_largest_counts(
    records: list[StudyRecord],
) -> None:
    exam = merge_exam(records, SOURCES)
    assert exam.model_dump(include=set(_reference_merge(records))) == _reference_merge(records)
    assert [location.source.id for location in exam.locations] == [r.source_id for r in records]


def test_the_exam_takes_the_name_groups_a_latin1_source_lost_from_another() -> None:
    groups = ("Hong^Gildong", "洪^吉洞", "홍^길동")
    latin1 = rec("a", "1", patient_name="Hong^Gildong")
    full = rec("b", "1", patient_name="Hong^Gildong", patient_name_groups=groups)
    for records in ([latin1, full], [full, latin1]):
        exam = merge_exam(records, SOURCES)
        assert exam.patient_name == "Hong^Gildong"
        assert exam.patient_name_groups == PersonNameGroups(
            alphabetic="Hong^Gildong", ideographic="洪^吉洞", phonetic="홍^길동"
        )
    alone = merge_exam([latin1], SOURCES)
    assert alone.patient_name_groups == PersonNameGroups(alphabetic="Hong^Gildong")
    assert merge_exam([rec("a", "1")], SOURCES).patient_name_groups is None


async def test_the_memory_cache_finds_a_name_by_the_family_name_of_any_group() -> None:
    cache = MemoryExamCache()
    record = rec(
        "a", "1", patient_name="Hong^Gildong", patient_name_groups=("Hong^Gildong", "洪^吉洞", "홍^길동")
    )
    await cache.store(SOURCES["a"], PatientQuery(patient_id="PA-KR1"), [record])
    found = [await cache.search_by_name(name) for name in ("hong", "洪", "홍", "kim")]
    assert [len(records) for records in found] == [1, 1, 1, 0]


def test_the_terminal_view_shows_the_name_in_every_script() -> None:
    groups = ("Yamada^Tarou", "山田^太郎", "やまだ^たろう")
    exam = merge_exam([rec("a", "1", patient_name="Yamada^Tarou", patient_name_groups=groups)], SOURCES)
    view = render_history(PatientHistory(complete=True, exams=(exam,), sources=()))
    assert "Yamada^Tarou=山田^太郎=やまだ^たろう" in view


def test_an_exam_is_cached_only_when_every_location_came_from_the_cache() -> None:
    older, newer = dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    cached = merge_exam([rec("a", "1.2.3", cached_at=older), rec("b", "1.2.3", cached_at=newer)], SOURCES)
    mixed = merge_exam([rec("a", "1.2.3", cached_at=older), rec("b", "1.2.3")], SOURCES)
    assert cached.cached_at == newer
    assert mixed.cached_at is None
