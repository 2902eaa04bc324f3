"""Reading searchset Bundles: ImagingStudy → StudyRecord, names in three scripts, values that cannot be read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir_endpoint import MRN, REPRESENTATION
from pacsfed_fhir_connector.imaging_study import PatientKey, outcome_summary, read_search_page

from federation.errors import SourceProtocolError

ASKED = PatientKey(MRN, "MRN-1")


def study(uid: str = "urn:oid:1.2.3", **fields: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": uid}],
        "subject": {"reference": "Patient/p1"},
    }
    return {**resource, **fields}


def bundle(*entries: dict[str, Any], mode: str = "match", valid: bool = True) -> dict[str, Any]:
    """A searchset Bundle of the entries, checked against the R4B model unless it is meant not to be valid."""
    answer = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": e, "search": {"mode": mode}} for e in entries],
    }
    if valid:
        Bundle.model_validate(answer)
    return answer


def test_names_in_three_scripts_become_the_pn_groups() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": MRN, "value": "MRN-1"}],
        "name": [
            {
                "extension": [{"url": REPRESENTATION, "valueCode": "ABC"}],
                "family": "Yamada",
                "given": ["Tarou"],
            },
            {"extension": [{"url": REPRESENTATION, "valueCode": "IDE"}], "family": "山田", "given": ["太郎"]},
            {
                "extension": [{"url": REPRESENTATION, "valueCode": "SYL"}],
                "family": "やまだ",
                "given": ["たろう"],
            },
        ],
    }
    page = read_search_page(
        {
            **bundle(study()),
            "entry": [*bundle(study())["entry"], {"resource": patient, "search": {"mode": "include"}}],
        },
        "a",
        ASKED,
    )
    [record] = page.records
    assert record.patient_name == "Yamada^Tarou"
    assert record.patient_pn == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert record.patient_id == "MRN-1"


def test_an_ideographic_name_alone_is_the_name() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p",
        "name": [
            {"extension": [{"url": REPRESENTATION, "valueCode": "IDE"}], "family": "김", "given": ["민준"]}
        ],
    }
    [record] = read_search_page(
        bundle(study(subject={"reference": "#p"}, contained=[patient])), "a", ASKED
    ).records
    assert record.patient_name == "김^민준"
    assert record.patient_name_groups == ("", "김^민준", "")
    assert record.patient_id is None


@pytest.mark.parametrize(
    ("started", "date", "time"),
    [
        ("2024", None, None),
        ("2024-03", None, None),
        ("2024-03-07", dt.date(2024, 3, 7), None),
        ("2024-03-07T23:59:60Z", None, None),
        ("2024-03-07T08:15:00-05:00", dt.date(2024, 3, 7), dt.time(8, 15)),
    ],
)
def test_started_gives_a_date_and_time_only_when_it_holds_them(
    started: str, date: dt.date | None, time: dt.time | None
) -> None:
    [record] = read_search_page(bundle(study(started=started)), "a", ASKED).records
    assert (record.study_date, record.study_time) == (date, time)


def test_a_study_without_a_usable_uid_is_left_out_with_a_warning() -> None:
    page = read_search_page(bundle(study("urn:oid:1.2.x"), study("urn:oid:1.2.4")), "a", ASKED)
    assert [r.study_instance_uid for r in page.records] == ["1.2.4"]
    assert page.warnings == ["an ImagingStudy without a valid DICOM StudyInstanceUID identifier was ignored"]


def test_included_studies_are_not_matches_and_outcome_entries_are_warnings_without_text() -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "warning", "code": "incomplete", "diagnostics": "Durand Anne: archive offline"}
        ],
    }
    answer = bundle(study(), outcome)
    answer["entry"].append({"resource": study("urn:oid:9.9"), "search": {"mode": "include"}})
    page = read_search_page(answer, "a", ASKED)
    assert [r.study_instance_uid for r in page.records] == ["1.2.3"]
    assert page.warnings == ["FHIR server said: OperationOutcome warning/incomplete"]
    assert "Durand" not in outcome_summary(outcome)


def test_counts_that_are_not_unsigned_integers_are_ignored() -> None:
    [record] = read_search_page(
        bundle(study(numberOfSeries=True, numberOfInstances=-1), valid=False), "a", ASKED
    ).records
    assert (record.number_of_series, record.number_of_instances) == (None, None)
    assert len(record.warnings) == 2


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ([], "not a JSON object"),
        ({"resourceType": "Patient"}, "not a Bundle"),
        (
            {"resourceType": "OperationOutcome", "issue": [{"severity": "fatal", "code": "exception"}]},
            "fatal/exception",
        ),
        ({"resourceType": "Bundle", "entry": {}}, "entry is not a list"),
    ],
)
def test_an_answer_that_is_no_bundle_is_a_protocol_error(answer: Any, message: str) -> None:
    with pytest.raises(SourceProtocolError, match=message):
        read_search_page(answer, "a", ASKED)


def test_an_entry_that_is_no_object_does_not_shift_the_others() -> None:
    answer = bundle(study("urn:oid:1.2.5"))
    answer["entry"].insert(0, "not an entry")
    page = read_search_page(answer, "a", ASKED)
    assert [r.study_instance_uid for r in page.records] == ["1.2.5"]
    assert page.warnings == ["a Bundle entry without a resource was ignored"]
