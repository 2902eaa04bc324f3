"""The FHIR view's DiagnosticReport entries: a real SR document in a real Orthanc, read back over DICOMweb."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from peers.dicomdata import UID_ROOT, SeedPatient, SeedStudy, make_instance
from peers.orthanc import OrthancPeer
from pydicom.sr.coding import Code

from federation.settings import settings_from_mapping
from integration.gql import graphql, running_app

pytestmark = pytest.mark.integration

PATIENT = SeedPatient("PA-FHIR-1", "Report^Rita", "19700101", "F", "ISO_IR 192")
STUDY = SeedStudy(
    study_uid=UID_ROOT + "9.1.1",
    date="20240301",
    time="090000",
    modality="CT",
    description="CT CHEST",
    accession="ACC-9001",
    n_series=1,
    instances_per_series=1,
    key="FHIR-CT",
)
AUDIT = '{ auditEventsPage(patientId: "PA-FHIR-1") { events { channel action outcome } } }'


def _files(directory: Path) -> list[Path]:
    """One CT image and a verified Enhanced SR report on it (highdicom), written to ``directory``."""
    image = make_instance(PATIENT, STUDY, 1, 1)
    finding = hd.sr.TextContentItem(
        name=Code("121071", "DCM", "Finding"),
        value="No acute findings.",
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    root = hd.sr.ContainerContentItem(name=Code("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = [finding]
    report = hd.sr.EnhancedSR(
        evidence=[image],
        content=root,
        series_instance_uid=UID_ROOT + "9.1.1.99",
        series_number=99,
        sop_instance_uid=UID_ROOT + "9.1.1.99.1",
        instance_number=1,
        manufacturer="pacsfed tests",
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name="House^Gregory",
        verifying_organization="Hospital R",
    )
    paths = [directory / "image.dcm", directory / "report.dcm"]
    image.save_as(paths[0], enforce_file_format=True)
    report.save_as(paths[1], enforce_file_format=True)
    return paths


@pytest.fixture(scope="module")
def orthanc_r(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """An Orthanc of its own holding one reported study (the shared peers' catalogue stays as it is)."""
    with OrthancPeer("HOSPR", tmp_path_factory.mktemp("orthanc-r"), default_encoding="Utf8") as peer:
        peer.upload(_files(tmp_path_factory.mktemp("reported")))
        yield peer


async def test_an_available_report_is_an_included_diagnostic_report_pointing_to_its_study(
    orthanc_r: OrthancPeer,
) -> None:
    settings = settings_from_mapping(
        {
            "cache": {"backend": "memory"},
            "sources": [{"id": "hosp-r", "kind": "dicomweb", "url": orthanc_r.dicomweb_url}],
        }
    )
    async with running_app(settings) as client:
        response = await client.get("/fhir/ImagingStudy", params={"patient.identifier": PATIENT.patient_id})
        # An EHR follows each entry's fullUrl (a read) and gets the resource the search gave.
        reads = [await client.get(httpx.URL(entry["fullUrl"]).path) for entry in response.json()["entry"]]
        audit = await graphql(client, AUDIT)
    assert response.status_code == 200, response.text
    bundle = Bundle.model_validate_json(response.content)
    assert bundle.total == 1
    assert [entry.search.mode for entry in bundle.entry] == ["match", "include"]
    study, report = bundle.entry[0].resource, bundle.entry[1].resource
    assert isinstance(study, ImagingStudy) and isinstance(report, DiagnosticReport)
    assert study.id == STUDY.study_uid
    assert [ref.reference for ref in report.imagingStudy] == [f"ImagingStudy/{STUDY.study_uid}"]
    assert "No acute findings." in report.conclusion
    assert report.resultsInterpreter[0].display == "House Gregory"
    assert report.status == "final"  # a COMPLETE and VERIFIED SR
    assert report.subject.identifier.value == PATIENT.patient_id
    assert [read.status_code for read in reads] == [200, 200]
    assert [read.json() for read in reads] == [entry["resource"] for entry in response.json()["entry"]]
    assert report.id == STUDY.study_uid  # a report's id is its study's (ids are per resource type)
    events = audit["data"]["auditEventsPage"]["events"]
    assert {"channel": "fhir", "action": "REPORT_READ", "outcome": "SUCCESS"} in events
