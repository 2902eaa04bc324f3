"""Search parameters for a StudyQuery, and the check that keeps a lenient server's extra answers out."""

from __future__ import annotations

import datetime as dt

import pytest
from pacsfed_fhir_connector.search import demographic_params, matches_demographics, search_token

from federation.models import StudyQuery, StudyRecord


def test_token_values_are_escaped() -> None:
    assert search_token("urn:oid:1.2", "A|1,2$3\\4") == "urn:oid:1.2|A\\|1\\,2\\$3\\\\4"
    assert search_token(None, "A|1") == "A\\|1"


@pytest.mark.parametrize(
    ("pattern", "params"),
    [
        ("Durand*", {"patient.family": "Durand"}),
        ("Durand^Anne", {"patient.family": "Durand"}),
        ("M*ller*", {"patient.family:contains": "ller"}),
        ("*山田*", {"patient.family:contains": "山田"}),
        ("*", {}),
    ],
)
def test_a_name_pattern_becomes_its_longest_plain_run(pattern: str, params: dict[str, str]) -> None:
    assert demographic_params(StudyQuery(patient_name=pattern)) == params


def test_a_birth_date_alone_is_searched_alone() -> None:
    born = dt.date(1961, 3, 4)
    assert demographic_params(StudyQuery(patient_birth_date=born)) == {"patient.birthdate": "1961-03-04"}


def test_only_records_the_whole_pattern_and_the_birth_date_match_are_kept() -> None:
    def record(name: str, born: dt.date | None = dt.date(1961, 3, 4)) -> StudyRecord:
        groups = (*name.split("="), "", "")
        return StudyRecord(
            source_id="a",
            study_instance_uid="1.2",
            patient_name=groups[0],
            patient_name_groups=groups[:3] if "=" in name else None,
            patient_birth_date=born,
        )

    query = StudyQuery(patient_name="Dur?nd^A*", patient_birth_date=dt.date(1961, 3, 4))
    assert matches_demographics(record("DURAND^Anne"), query)
    assert not matches_demographics(record("Durandal^Anne"), query)
    assert not matches_demographics(record("Durand^Anne", dt.date(1961, 3, 5)), query)
    assert not matches_demographics(record("Durand^Anne", None), query)
    assert matches_demographics(record("Yamada^Tarou=山田^太郎"), StudyQuery(patient_name="*山田*"))
