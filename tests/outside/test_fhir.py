"""`pacsfed serve` from a clean install, searched and read at /fhir by an EHR's HTTP client; answers parsed as FHIR R4."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from peers.dicomdata import CATALOGUE

from federation.access.auth import new_api_key

C_MR = CATALOGUE.study("C-MR")


def test_an_ehr_searches_imaging_studies_of_a_patient_over_fhir(
    pacsfed_server: Callable[..., Any], orthanc_c: Any
) -> None:
    key, digest = new_api_key("ehr-a")
    server = pacsfed_server(
        {
            "cache": {"backend": "memory"},
            "sources": [
                {
                    "id": "hosp-c",
                    "kind": "dicomweb",
                    "url": orthanc_c.dicomweb_url,
                    "issuer": "HOSP_C",
                    "viewer_url": "https://viewer.example/view?study={studyInstanceUid}",
                }
            ],
            "identity": {"issuer_systems": {"HOSP_C": "urn:oid:1.2.3.99"}},
            "auth": {"mode": "api_key", "api_keys": [{"id": "ehr-a", "sha256": digest}]},
        }
    )
    fhir_json = {"accept": "application/fhir+json"}
    with httpx.Client(base_url=f"{server.url}/fhir", headers=fhir_json, timeout=30) as ehr:
        refused = ehr.get("/ImagingStudy", params={"patient.identifier": "PA-002"})
        assert refused.status_code == 401
        assert OperationOutcome.model_validate_json(refused.content).issue[0].code == "login"

        statement = CapabilityStatement.model_validate_json(ehr.get("/metadata").content)
        assert statement.rest[0].resource[0].type == "ImagingStudy"
        assert [i.code for i in statement.rest[0].resource[0].interaction] == ["read", "search-type"]

        ehr.headers["authorization"] = f"Bearer {key}"
        for identifier in ("PA-002", "urn:oid:1.2.3.99|PA-002", "HOSP_C|PA-002"):
            response = ehr.get("/ImagingStudy", params={"patient.identifier": identifier})
            assert response.status_code == 200, response.text
            assert response.headers["content-type"].startswith("application/fhir+json")
            bundle = Bundle.model_validate_json(response.content)
            assert (bundle.type, bundle.total) == ("searchset", 1)
            [entry] = bundle.entry
            study = entry.resource
            assert isinstance(study, ImagingStudy)
            assert (entry.search.mode, study.id) == ("match", C_MR.study_uid)
            assert [m.code for m in study.modality] == ["MR"]
            [endpoint] = study.contained
            assert endpoint.connectionType.code == "dicom-wado-rs"
            # The Endpoint's address is a WADO-RS base the EHR can fetch the study's metadata from.
            metadata = httpx.get(
                f"{endpoint.address}/studies/{study.id}/metadata",
                headers={"accept": "application/dicom+json"},
            )
            assert metadata.status_code == 200 and metadata.json()[0]["0020000D"]["Value"] == [study.id]
            # The entry's fullUrl is where the study is: the EHR reads it there, as FHIR clients do.
            assert entry.fullUrl == f"{server.url}/fhir/ImagingStudy/{study.id}"
            read = ehr.get(entry.fullUrl)
            assert read.status_code == 200, read.text
            assert read.headers["content-type"].startswith("application/fhir+json")
            searched = response.json()["entry"][0]["resource"]
            ImagingStudy.model_validate_json(read.content)
            # The same resource. A read names no patient: its subject is the holder's identifier of
            # the patient, with its issuer's system, as a search by that identifier names it.
            assert read.json() | {"subject": None} == searched | {"subject": None}
            assert read.json()["subject"]["identifier"] == {"system": "urn:oid:1.2.3.99", "value": "PA-002"}
            if "|" in identifier:
                assert read.json() == searched

        missing = ehr.get(f"/ImagingStudy/{C_MR.study_uid}.404")
        assert missing.status_code == 404
        assert OperationOutcome.model_validate_json(missing.content).issue[0].code == "not-found"

        xml = ehr.get("/ImagingStudy", params={"patient.identifier": "PA-002", "_format": "xml"})
        assert xml.status_code == 406
        assert OperationOutcome.model_validate_json(xml.content).issue[0].code == "not-supported"
    assert "PA-002" not in server.log_text()
