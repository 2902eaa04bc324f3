"""FHIR search parameters to pacsfed patient queries, and format negotiation."""

from __future__ import annotations

import pytest

from federation.errors import QueryError
from federation.models import PatientQuery
from web.fhir.search import accepts_json, parse_token, patient_search

SYSTEMS = {"HOSP_A": "urn:oid:1.2.3.4", "NISS": "urn:oid:2.16.56.1"}
KNOWN = {"HOSP_A", "HOSP_B", "NISS"}


def search(token: str) -> tuple[str | None, PatientQuery | None]:
    found = patient_search([token], SYSTEMS, KNOWN, "NISS")
    return found.subject.system, found.query


@pytest.mark.parametrize(
    ("token", "parsed"),
    [
        ("PA-001", (None, "PA-001")),
        ("|PA-001", ("", "PA-001")),
        ("urn:oid:1.2.3|PA-001", ("urn:oid:1.2.3", "PA-001")),
        ("HOSP_A|A\\|B", ("HOSP_A", "A|B")),
        ("a\\\\b|c", ("a\\b", "c")),
    ],
)
def test_tokens_parse_as_fhir_says(token: str, parsed: tuple[str | None, str]) -> None:
    assert parse_token(token) == parsed


def test_a_mapped_system_is_its_issuer_and_the_subject_keeps_the_system() -> None:
    assert search("urn:oid:1.2.3.4|PA-001") == (
        "urn:oid:1.2.3.4",
        PatientQuery(patient_id="PA-001", issuer="HOSP_A"),
    )


def test_an_issuer_name_as_system_is_that_issuer_shown_with_its_mapped_system() -> None:
    assert search("HOSP_A|PA-001") == ("urn:oid:1.2.3.4", PatientQuery(patient_id="PA-001", issuer="HOSP_A"))
    assert search("HOSP_B|PB-1") == ("HOSP_B", PatientQuery(patient_id="PB-1", issuer="HOSP_B"))
    assert search("OTHER|X-1") == ("OTHER", PatientQuery(patient_id="X-1", issuer="OTHER"))


def test_a_bare_value_is_an_id_without_issuer() -> None:
    assert search("PA-001") == (None, PatientQuery(patient_id="PA-001"))
    assert search("|PA-001") == (None, PatientQuery(patient_id="PA-001"))


def test_the_national_issuer_makes_a_national_id_query() -> None:
    assert search("urn:oid:2.16.56.1|85073003328") == (
        "urn:oid:2.16.56.1",
        PatientQuery(national_id="85073003328"),
    )


def test_an_unknown_uri_system_matches_nothing() -> None:
    assert search("urn:oid:9.9.9|PA-001") == ("urn:oid:9.9.9", None)
    assert search("https://ids.example/mrn|PA-001") == ("https://ids.example/mrn", None)


@pytest.mark.parametrize(
    "values",
    [[], ["PA-001", "PA-002"], ["PA-001,PA-002"], ["HOSP_A|"], ["HOSP_A|PA*"], ["x" * 65]],
)
def test_searches_that_are_not_one_exact_identifier_are_refused(values: list[str]) -> None:
    with pytest.raises(QueryError):
        patient_search(values, SYSTEMS, KNOWN, "NISS")


@pytest.mark.parametrize(
    ("format_param", "accept", "ok"),
    [
        (None, None, True),
        (None, "application/fhir+json", True),
        (None, "application/fhir+json; fhirVersion=4.0", True),
        (None, "application/json", True),
        (None, "text/html,application/xhtml+xml,*/*;q=0.8", True),
        (None, "application/fhir+xml", False),
        (None, "application/fhir+json;q=0, application/fhir+xml", False),
        ("json", "application/fhir+xml", True),
        ("application/fhir+json", None, True),
        ("xml", None, False),
        ("application/fhir+xml", "application/fhir+json", False),
    ],
)
def test_json_is_served_to_whoever_takes_it(format_param: str | None, accept: str | None, ok: bool) -> None:
    assert accepts_json(format_param, accept) is ok
