"""A real hospital (Orthanc) goes down: its report reads and retrievals answer at once once its circuit opens."""

from __future__ import annotations

from typing import Any

import pytest
from peers.orthanc import OrthancPeer
from peers.reportdata import REPORT_PATIENT, SR_STUDY
from report_fixtures import orthanc_reports, report_files

from federation.settings import settings_from_mapping
from integration.gql import graphql, running_app

pytestmark = pytest.mark.integration
__all__ = ["orthanc_reports", "report_files"]  # fixtures used here

EXAM_REPORT = """
query ($patient: PatientInput!, $study: ID!, $freshness: Freshness) {
  examReport(patient: $patient, studyInstanceUid: $study, freshness: $freshness) { status error }
}
"""


async def _report(client: Any, freshness: str) -> dict[str, Any]:
    body = await graphql(
        client,
        EXAM_REPORT,
        patient={"id": REPORT_PATIENT.patient_id},
        study=SR_STUDY.study_uid,
        freshness=freshness,
    )
    assert "errors" not in body, body["errors"]
    report: dict[str, Any] = body["data"]["examReport"]
    return report


async def test_a_hospital_down_fails_one_report_read_then_reads_and_retrievals_are_unavailable_at_once(
    orthanc_reports: OrthancPeer,
) -> None:
    source = {
        "id": "hosp-r",
        "kind": "dicomweb",
        "url": orthanc_reports.dicomweb_url,
        "circuit": {"failures": 1, "reset_s": 600},
    }
    settings = settings_from_mapping({"cache": {"backend": "memory"}, "sources": [source]})
    async with running_app(settings) as client:
        assert (await _report(client, "LIVE"))["status"] == "AVAILABLE"  # the exam is cached now
        orthanc_reports.stop()
        failed = await _report(client, "CACHE_ONLY")  # the exam from the cache, its report from the source
        assert failed["status"] == "ERROR"  # its failure opens the source's circuit (failures: 1)
        skipped = await _report(client, "CACHE_ONLY")
        retrieved = await client.get(f"/dicom-web/studies/{SR_STUDY.study_uid}/metadata")
    assert skipped["status"] == "UNAVAILABLE" and "circuit open" in skipped["error"]
    assert retrieved.status_code == 503, retrieved.text
    assert retrieved.json()["error"]["code"] == "SOURCE_UNAVAILABLE"
    assert int(retrieved.headers["retry-after"]) > 0
