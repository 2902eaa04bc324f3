"""The /fhir front end over HTTP (in process, its lifespan running): authentication, formats, errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from dev_app import dev_app
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome

from federation.access.auth import new_api_key
from federation.settings import settings_from_mapping

READER, READER_HASH = new_api_key("ehr")
AUDITOR, AUDITOR_HASH = new_api_key("auditor")
SEARCH = "/fhir/ImagingStudy"


@contextlib.asynccontextmanager
async def fhir_client() -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_from_mapping(
        {
            "cache": {"backend": "memory"},
            "identity": {"issuer_systems": {"HOSP_A": "urn:oid:1.2.3.4"}},
            "auth": {
                "mode": "api_key",
                "api_keys": [
                    {"id": "ehr", "sha256": READER_HASH, "scopes": ["history:read"]},
                    {"id": "auditor", "sha256": AUDITOR_HASH, "scopes": ["audit:read"]},
                ],
            },
        }
    )
    async with LifespanManager(dev_app(settings), startup_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as client:
            yield client


def _outcome(response: httpx.Response, status: int, code: str) -> OperationOutcome:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    outcome = OperationOutcome.model_validate_json(response.content)
    assert outcome.issue[0].code == code
    return outcome


def _auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_a_caller_without_credentials_gets_401_as_an_operation_outcome() -> None:
    async with fhir_client() as client:
        response = await client.get(SEARCH, params={"patient.identifier": "PA-001"})
    _outcome(response, 401, "login")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_caller_without_history_read_gets_403() -> None:
    async with fhir_client() as client:
        response = await client.get(SEARCH, params={"patient.identifier": "PA-001"}, headers=_auth(AUDITOR))
    outcome = _outcome(response, 403, "forbidden")
    assert outcome.issue[0].details.coding[0].code == "FORBIDDEN"


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"patient.identifier": "PA-001"}, {"accept": "application/fhir+xml"}),
        ({"patient.identifier": "PA-001", "_format": "xml"}, {}),
    ],
)
async def test_anything_but_json_is_406(params: dict[str, str], headers: dict[str, str]) -> None:
    async with fhir_client() as client:
        response = await client.get(SEARCH, params=params, headers=_auth(READER) | headers)
    _outcome(response, 406, "not-supported")


@pytest.mark.parametrize(
    "params",
    [{}, {"patient": "Patient/1"}, {"patient.identifier": "PA-001,PA-002"}, {"patient.identifier": "PA*"}],
)
async def test_a_search_that_is_not_one_exact_identifier_is_400(params: dict[str, str]) -> None:
    async with fhir_client() as client:
        response = await client.get(SEARCH, params=params, headers=_auth(READER))
    _outcome(response, 400, "invalid")


@pytest.mark.parametrize(
    ("identifier", "params"),
    [("PA-001", {}), ("urn:oid:1.2.3.4|PA-001", {"_format": "json"}), ("HOSP_A|PA-001", {})],
)
async def test_a_search_answers_a_searchset_bundle(identifier: str, params: dict[str, str]) -> None:
    async with fhir_client() as client:
        response = await client.get(
            SEARCH,
            params={"patient.identifier": identifier, **params},
            headers=_auth(READER) | {"accept": "application/fhir+json"},
        )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/fhir+json; charset=utf-8"
    result = Bundle.model_validate_json(response.content)
    assert (result.type, result.total) == ("searchset", 0)


async def test_an_unknown_system_matches_nothing_and_says_so() -> None:
    async with fhir_client() as client:
        response = await client.get(
            SEARCH, params={"patient.identifier": "urn:oid:9.9.9|PA-001"}, headers=_auth(READER)
        )
    assert response.status_code == 200, response.text
    result = Bundle.model_validate_json(response.content)
    assert result.total == 0
    [entry] = result.entry
    assert entry.search.mode == "outcome"
    assert entry.resource.issue[0].severity == "information"


async def test_metadata_and_unknown_paths() -> None:
    async with fhir_client() as client:
        metadata = await client.get("/fhir/metadata")
        unknown = await client.get("/fhir/Patient/1", headers=_auth(READER))
    assert metadata.status_code == 200
    statement: Any = CapabilityStatement.model_validate_json(metadata.content)
    assert statement.fhirVersion == "4.0.1"
    _outcome(unknown, 404, "not-supported")


async def test_reads_authenticate_and_answer_404_for_what_no_source_holds() -> None:
    async with fhir_client() as client:
        anonymous = await client.get(f"{SEARCH}/1.2.3")
        unknown = await client.get(f"{SEARCH}/1.2.3", headers=_auth(READER))
        report = await client.get("/fhir/DiagnosticReport/1.2.3", headers=_auth(READER))
        no_uid = await client.get(f"{SEARCH}/not-a-uid", headers=_auth(READER))
        refused = await client.get(f"{SEARCH}/1.2.3", headers=_auth(AUDITOR))
        xml = await client.get(f"{SEARCH}/1.2.3", params={"_format": "xml"}, headers=_auth(READER))
    _outcome(anonymous, 401, "login")
    for response in (unknown, report, no_uid):
        _outcome(response, 404, "not-found")
    _outcome(refused, 403, "forbidden")
    _outcome(xml, 406, "not-supported")
