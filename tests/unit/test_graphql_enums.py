"""The sets pacsfed defines are GraphQL enums (UPPER_CASE); what peers send stays a string."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from itertools import product
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from dev_app import dev_app
from graphql import GraphQLEnumType, GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLScalarType

from federation.access.principals import PrincipalKind
from federation.audit.records import AuditAction, AuditOutcome
from federation.identity.names import Demographics, score, score_record
from federation.settings import settings_from_mapping
from schema.enums import CandidateReasonModel
from schema.query import build_schema

DATES = [None, dt.date(1970, 1, 2), dt.date(1970, 2, 1), dt.date(1970, 1, 3), dt.date(1985, 7, 9)]
SEXES = [None, "M", "F"]
NAMES = [None, "Dupont", "Dupond", "Dup", "Müller", "Mueller", "Jean", "Marie Claire", "Zhang"]


def test_candidate_reasons_are_exactly_what_scoring_gives() -> None:
    given = set()
    for (d1, d2), (s1, s2) in product(product(DATES, DATES), product(SEXES, SEXES)):
        given.update(
            score(Demographics("Dupont", "Jean", d1, s1), Demographics("Dupont", "Jean", d2, s2)).reasons
        )
    for f1, g1, f2, g2 in product(NAMES, repeat=4):
        given.update(score(Demographics(f1, g1), Demographics(f2, g2)).reasons)
        given.update(score_record(Demographics(f1, g1), Demographics(f2, g2)).reasons)
    assert given == {reason.value for reason in CandidateReasonModel}


def _field_type(type_name: str, field: str) -> Any:
    graphql_type = build_schema().graphql_schema.get_type(type_name)
    assert isinstance(graphql_type, GraphQLObjectType)
    field_type = graphql_type.fields[field].type
    while isinstance(field_type, (GraphQLNonNull, GraphQLList)):
        field_type = field_type.of_type
    return field_type


@pytest.mark.parametrize(
    ("type_name", "field", "enum_name", "values"),
    [
        ("Candidate", "reasons", "CandidateReason", {r.name for r in CandidateReasonModel}),
        ("AuditEvent", "action", "AuditAction", {"PATIENT_QUERY", *(a.name for a in AuditAction)}),
        ("AuditEvent", "outcome", "AuditOutcome", {"SUCCESS", "DENIED", "FAILURE"}),
        ("AuditEvent", "actorKind", "ActorKind", {k.name for k in PrincipalKind}),
    ],
)
def test_sets_pacsfed_defines_are_enums(type_name: str, field: str, enum_name: str, values: set[str]) -> None:
    enum_type = _field_type(type_name, field)
    assert isinstance(enum_type, GraphQLEnumType) and enum_type.name == enum_name
    assert set(enum_type.values) == values
    assert all(value == value.upper() for value in enum_type.values)


@pytest.mark.parametrize(
    ("type_name", "field"),
    [("Exam", "patientSex"), ("Candidate", "sex"), ("Source", "kind"), ("AuditEvent", "channel")],
)
def test_values_from_peers_and_plugins_stay_strings(type_name: str, field: str) -> None:
    field_type = _field_type(type_name, field)
    assert isinstance(field_type, GraphQLScalarType) and field_type.name == "String"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_from_mapping({"cache": {"backend": "memory"}, "sources": []})
    async with LifespanManager(dev_app(settings), startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as c:
            yield c


async def test_audit_events_answer_upper_case_values(client: httpx.AsyncClient) -> None:
    await client.post("/graphql", json={"query": '{ patientHistory(patient: {id: "A"}) { complete } }'})
    query = '{ auditEvents(patientId: "A") { action outcome actorKind channel } }'
    events = (await client.post("/graphql", json={"query": query})).json()["data"]["auditEvents"]
    assert {
        "action": "PATIENT_QUERY",
        "outcome": "SUCCESS",
        "actorKind": "DEVELOPMENT",
        "channel": "graphql",
    } in events
    assert AuditOutcome.SUCCESS.value == "success"  # the journal keeps its own spelling


@pytest.mark.parametrize("sex", ["X", "male", "MF"])
async def test_the_sex_input_stays_a_validated_string(client: httpx.AsyncClient, sex: str) -> None:
    query = "query($p: PatientInput!) { patientHistory(patient: $p) { complete } }"
    patient = {"familyName": "X", "birthDate": "1970-01-01", "sex": sex}
    body = (await client.post("/graphql", json={"query": query, "variables": {"p": patient}})).json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_PATIENT_INPUT"]
