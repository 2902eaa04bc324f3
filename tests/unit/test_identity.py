"""Identity resolution: per-source plans, cross-references, verification of what comes back."""

from __future__ import annotations

import datetime as dt

import pytest

from federation.errors import ConfigError, QueryError
from federation.identity.resolver import (
    Identifier,
    IdentityLink,
    IdentityResolver,
    MemoryIdentityStore,
    PlannedQuery,
    SourceIdentity,
    parse_links_csv,
    record_matches,
)
from federation.models import MatchedBy, MatchKind, PatientQuery, StudyQuery, StudyRecord

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SOURCES = [
    SourceIdentity("hosp-a", "HOSP_A"),
    SourceIdentity("hosp-b", "HOSP_B", match_issuer=True),
    SourceIdentity("hosp-c", "HOSP_C", national_id_in="patient_id"),
    SourceIdentity("hosp-d", "HOSP_D", national_id_in="other_patient_ids"),
    SourceIdentity("hosp-e", None),
]
LINKS_CSV = """person,issuer,patient_id
p1,HOSP_A,A123
p1,HOSP_B,B-77
p1,NISS,70031512345
p2,HOSP_A,A999
"""


async def store_with_links() -> MemoryIdentityStore:
    store = MemoryIdentityStore()
    await store.add_links(parse_links_csv(LINKS_CSV, "test", NOW))
    return store


def described(plans: dict[str, list[PlannedQuery]]) -> dict[str, list[tuple[str, str | None, str | None]]]:
    return {
        source: [
            (
                p.matched_by.kind.value,
                p.query.patient_id or p.query.other_patient_id,
                p.query.issuer_of_patient_id,
            )
            for p in planned
        ]
        for source, planned in plans.items()
    }


async def test_local_id_with_issuer_expands_through_links() -> None:
    resolver = IdentityResolver(await store_with_links(), national_issuer="NISS")
    plans = await resolver.plan(PatientQuery(patient_id="A123", issuer="HOSP_A"), SOURCES)
    assert described(plans) == {
        "hosp-a": [("LOCAL_ID", "A123", None)],
        "hosp-b": [("XREF", "B-77", "HOSP_B")],  # match_issuer: the issuer is a matching key
        "hosp-c": [("NATIONAL_ID", "70031512345", None)],
        "hosp-d": [("NATIONAL_ID", "70031512345", None)],
        "hosp-e": [],  # unknown domain: NO_IDENTIFIER, never a guess
    }
    assert plans["hosp-d"][0].query.other_patient_id_issuer == "NISS"


async def test_national_id_finds_local_ids() -> None:
    resolver = IdentityResolver(await store_with_links(), national_issuer="NISS")
    plans = await resolver.plan(PatientQuery(national_id="70031512345"), SOURCES)
    assert described(plans)["hosp-a"] == [("XREF", "A123", None)]
    assert described(plans)["hosp-c"] == [("NATIONAL_ID", "70031512345", None)]


async def test_links_are_transitive_across_imports() -> None:
    store = await store_with_links()
    await store.add_links([IdentityLink("other-file", Identifier("HOSP_A", "A123"), "t", NOW)])
    await store.add_links([IdentityLink("other-file", Identifier("HOSP_E", "E-5"), "t", NOW)])
    linked = await store.linked(Identifier("HOSP_B", "B-77"))
    assert Identifier("HOSP_E", "E-5") in linked
    assert Identifier("HOSP_A", "A999") not in linked  # another person


async def test_id_without_issuer_goes_to_every_source_as_is() -> None:
    resolver = IdentityResolver(await store_with_links(), national_issuer="NISS")
    plans = await resolver.plan(PatientQuery(patient_id="A123"), SOURCES)
    assert all(described(plans)[s.source_id] == [("LOCAL_ID", "A123", None)] for s in SOURCES)


async def test_national_id_without_national_issuer_is_refused() -> None:
    with pytest.raises(QueryError) as caught:
        await IdentityResolver(None, None).plan(PatientQuery(national_id="1"), SOURCES)
    assert caught.value.code == "BAD_PATIENT_INPUT"


@pytest.mark.parametrize(
    ("record_id", "record_issuer", "expected"),
    [
        ("B-77", None, True),
        ("B-77", "HOSP_B", True),
        ("B-77", "HOSP_X", False),  # the same string in another domain is another patient
        ("B-770", None, False),  # a PACS that ignored or widened the key
        (None, None, False),
    ],
)
def test_records_must_carry_the_identifier_asked_for(
    record_id: str | None, record_issuer: str | None, expected: bool
) -> None:
    planned = PlannedQuery(
        StudyQuery(patient_id="B-77"), MatchedBy(kind=MatchKind.XREF, issuer="HOSP_B", value="B-77")
    )
    record = StudyRecord(
        source_id="hosp-b", study_instance_uid="1", patient_id=record_id, issuer_of_patient_id=record_issuer
    )
    assert record_matches(record, planned, SourceIdentity("hosp-b", "HOSP_B")) is expected


def test_other_patient_ids_must_be_returned_to_match() -> None:
    planned = PlannedQuery(
        StudyQuery(other_patient_id="7003", other_patient_id_issuer="NISS"),
        MatchedBy(kind=MatchKind.NATIONAL_ID, issuer="NISS", value="7003"),
    )
    source = SourceIdentity("d", "HOSP_D", national_id_in="other_patient_ids")
    silent = StudyRecord(source_id="d", study_instance_uid="1", patient_id="D-1")
    carrying = silent.model_copy(update={"other_patient_ids": (("NISS", "7003"),)})
    assert not record_matches(silent, planned, source)
    assert record_matches(carrying, planned, source)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("who,issuer,patient_id\n", "header"),
        ("person,issuer,patient_id\np1,HOSP_A,\n", "line 2"),
        ("person,issuer,patient_id\np1,HOSP_A,A1\np1,HOSP_B,B*\n", "line 3"),
    ],
)
def test_bad_links_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_links_csv(text, "t", NOW)


@pytest.mark.parametrize(
    "patient",
    [
        {},
        {"patient_id": "A", "national_id": "1"},
        {"national_id": "1", "issuer": "X"},
        {"family_name": "Janssens"},  # a name alone is too broad
        {"patient_id": "A", "family_name": "Janssens", "birth_date": dt.date(1970, 1, 1)},
        {"family_name": "Jans*", "birth_date": dt.date(1970, 1, 1)},
        {"family_name": "Janssens", "birth_date": dt.date(1970, 1, 1), "sex": "X"},
    ],
)
def test_invalid_patient_inputs(patient: dict[str, object]) -> None:
    with pytest.raises(QueryError) as caught:
        PatientQuery(**patient)  # type: ignore[arg-type]
    assert caught.value.code == "BAD_PATIENT_INPUT"
