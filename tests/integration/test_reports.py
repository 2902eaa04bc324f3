"""Reports read back from real peers: highdicom SRs and an encapsulated PDF through DICOMweb and DIMSE.

Orthanc answers QIDO/WADO-RS and C-FIND/C-GET (C-GET only for the AEs its DicomModalities allow);
dcmqrscp answers C-FIND/C-GET. The whole path (GraphQL → service → engine → connectors, and the
PDF link) runs through the app with its lifespan and its real audit journal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from dev_app import dev_app
from peers.dicomdata import UID_ROOT, SeedPatient, SeedStudy, make_instance
from peers.reportdata import (
    AUTHOR,
    FINDING,
    IMPRESSION,
    PDF_BYTES,
    PDF_STUDY,
    PLAIN_STUDY,
    SR_STUDY,
    sr_document,
)
from report_fixtures import dcmqrscp_reports, orthanc_no_get, orthanc_reports, report_files

from connectors import ConnectorContext, DicomwebConnector, DimseConnector
from connectors.base import Connector
from connectors.dicomweb_settings import DicomwebSourceSettings
from connectors.dimse_settings import DimseSourceSettings
from federation.models import Deadline
from federation.reports import ReportCompletion, ReportStatus, ReportVerification, StudyRef
from federation.settings import settings_from_mapping

__all__ = ["dcmqrscp_reports", "orthanc_no_get", "orthanc_reports", "report_files"]

EXPECTED_TEXT = f"""Diagnostic imaging report
  Person Observer Name: {AUTHOR}
  Study Date: 2024-01-05
  Procedure Study Instance UID: {SR_STUDY.study_uid}
  Findings
    Finding: {FINDING}
    Finding site: Lung
    Length: 12.5 mm
  Impressions
    Impression: {IMPRESSION}"""


def _dicomweb(peer: Any) -> Connector:
    return DicomwebConnector(
        DicomwebSourceSettings(kind="dicomweb", id="web", url=peer.dicomweb_url), ConnectorContext()
    )


def _dimse(peer: Any) -> Connector:
    port = getattr(peer, "dicom_port", None) or peer.port
    settings = DimseSourceSettings(kind="dimse", id="dimse", host=peer.host, port=port, called_ae=peer.aet)
    return DimseConnector(settings, ConnectorContext())


async def _read_all(connector: Connector) -> None:
    """The SR study's text, the PDF study's document (fetched again, byte for byte), and no report."""
    try:
        sr = await connector.fetch_report(StudyRef(study_instance_uid=SR_STUDY.study_uid), Deadline.after(20))
        assert sr.status is ReportStatus.AVAILABLE, sr.error
        assert sr.text == EXPECTED_TEXT
        assert (sr.author, sr.date, sr.mime_type, sr.document) == (AUTHOR, dt.date(2024, 1, 6), None, None)
        assert (sr.completion, sr.verification, sr.verified_by) == (
            ReportCompletion.COMPLETE,
            ReportVerification.VERIFIED,
            AUTHOR,
        )

        study = StudyRef(study_instance_uid=PDF_STUDY.study_uid)
        pdf = await connector.fetch_report(study, Deadline.after(20))
        assert (pdf.status, pdf.mime_type, pdf.text) == (ReportStatus.AVAILABLE, "application/pdf", None)
        assert pdf.date == dt.date(2024, 2, 11)
        assert pdf.document is not None
        document = await connector.fetch_report_document(study, pdf.document, Deadline.after(20))
        assert (document.mime_type, document.content) == ("application/pdf", PDF_BYTES)

        none = await connector.fetch_report(
            StudyRef(study_instance_uid=PLAIN_STUDY.study_uid), Deadline.after(20)
        )
        assert none.status is ReportStatus.NOT_FOUND
        unknown = await connector.fetch_report(StudyRef(study_instance_uid="1.2.3.999"), Deadline.after(20))
        assert unknown.status is ReportStatus.NOT_FOUND
    finally:
        await connector.aclose()


async def test_dicomweb_reads_the_sr_and_the_pdf_from_orthanc(orthanc_reports: Any) -> None:
    await _read_all(_dicomweb(orthanc_reports))


async def test_dimse_reads_the_sr_and_the_pdf_from_orthanc_with_c_get(orthanc_reports: Any) -> None:
    await _read_all(_dimse(orthanc_reports))


async def test_dimse_reads_the_sr_and_the_pdf_from_dcmqrscp_with_c_get(dcmqrscp_reports: Any) -> None:
    await _read_all(_dimse(dcmqrscp_reports))


PRELIMINARY_PATIENT = SeedPatient("RPT-002", "Voorlopig^Vera", "19800405", "F", "ISO_IR 192")
PRELIMINARY_STUDY = SeedStudy(
    UID_ROOT + "9.4", "20240401", "031500", "CT", "CT hersenen", "ACC-R4", 1, 1, "RPT-PRELIM"
)


async def test_an_unverified_sr_reads_back_as_preliminary_over_dicomweb_and_dimse(
    orthanc_reports: Any, tmp_path: Path
) -> None:
    """A night-time report not yet verified: UNVERIFIED, no verifier, through QIDO/WADO-RS and C-FIND/C-GET.

    Another patient's study, added to this module's Orthanc: RPT-001's studies are unchanged.
    """
    image, sr = tmp_path / "image.dcm", tmp_path / "sr.dcm"
    make_instance(PRELIMINARY_PATIENT, PRELIMINARY_STUDY, 1, 1).save_as(image, enforce_file_format=True)
    sr_document(PRELIMINARY_PATIENT, PRELIMINARY_STUDY, verified=False).save_as(sr, enforce_file_format=True)
    orthanc_reports.upload([image, sr])
    study = StudyRef(study_instance_uid=PRELIMINARY_STUDY.study_uid)
    for connector in (_dicomweb(orthanc_reports), _dimse(orthanc_reports)):
        try:
            answer = await connector.fetch_report(study, Deadline.after(20))
        finally:
            await connector.aclose()
        assert answer.status is ReportStatus.AVAILABLE, answer.error
        assert FINDING in (answer.text or "")
        assert (answer.completion, answer.verification, answer.verified_by) == (
            ReportCompletion.COMPLETE,
            ReportVerification.UNVERIFIED,
            None,
        ), connector.id


# Orthanc aborts a C-GET it does not allow right after its command PDU; when the abort lands before
# our identifier PDU is sent, pynetdicom's reactor thread dies on it (InvalidEventError, Evt9 in
# Sta13): connectors.dimse_reports closes what it leaves behind; the warning is pynetdicom's own.
PYNETDICOM_RACE = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@PYNETDICOM_RACE
async def test_a_peer_that_refuses_our_c_get_gives_an_error_naming_it(orthanc_no_get: Any) -> None:
    connector = _dimse(orthanc_no_get)
    try:
        study = StudyRef(study_instance_uid=SR_STUDY.study_uid)
        with pytest.raises(Exception, match="refused the C-GET") as caught:
            await connector.fetch_report(study, Deadline.after(20))
        assert type(caught.value).__name__ == "SourceProtocolError"
        # No report series at all: known without any C-GET.
        none = await connector.fetch_report(
            StudyRef(study_instance_uid=PLAIN_STUDY.study_uid), Deadline.after(20)
        )
        assert none.status is ReportStatus.NOT_FOUND
    finally:
        await connector.aclose()


AUDIT_QUERY = '{ auditEvents(patientId: "RPT-001", first: 100) { action outcome detail sources } }'
REPORT_QUERY = """query($id: String!) { patientHistory(patient: {id: $id}, freshness: LIVE) {
  exams { studyInstanceUid report { status text author date mimeType url source { id } error } } } }"""


@pytest.fixture
async def client(
    tmp_path: Path, orthanc_reports: Any, orthanc_no_get: Any, dcmqrscp_reports: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The app over three report peers: one refusing C-GET first, in configuration order."""
    settings = settings_from_mapping(
        {
            "cache": {"backend": "memory"},
            "audit": {"journal_dir": str(tmp_path / "journal")},
            "sources": [
                {
                    "id": "no-get",
                    "kind": "dimse",
                    "host": orthanc_no_get.host,
                    "port": orthanc_no_get.dicom_port,
                    "called_ae": orthanc_no_get.aet,
                },
                {"id": "web", "kind": "dicomweb", "url": orthanc_reports.dicomweb_url},
                {
                    "id": "qr",
                    "kind": "dimse",
                    "host": dcmqrscp_reports.host,
                    "port": dcmqrscp_reports.port,
                    "called_ae": dcmqrscp_reports.aet,
                },
            ],
        }
    )
    app = dev_app(settings)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pacsfed.test") as http:
            yield http


@PYNETDICOM_RACE
async def test_graphql_reads_each_exam_s_report_from_the_first_location_that_has_one(
    client: httpx.AsyncClient,
) -> None:
    answer = (
        await client.post("/graphql", json={"query": REPORT_QUERY, "variables": {"id": "RPT-001"}})
    ).json()
    assert "errors" not in answer, answer
    reports = {e["studyInstanceUid"]: e["report"] for e in answer["data"]["patientHistory"]["exams"]}
    sr, pdf, plain = reports[SR_STUDY.study_uid], reports[PDF_STUDY.study_uid], reports[PLAIN_STUDY.study_uid]
    # "no-get" comes first but refuses C-GET: the next location in configuration order has it.
    assert (sr["status"], sr["source"], sr["author"], sr["date"]) == (
        "AVAILABLE",
        {"id": "web"},
        AUTHOR,
        "2024-01-06",
    )
    assert sr["text"] == EXPECTED_TEXT
    assert (pdf["status"], pdf["mimeType"], pdf["text"]) == ("AVAILABLE", "application/pdf", None)
    assert pdf["url"].startswith("http://pacsfed.test/reports/")
    assert PDF_STUDY.study_uid not in pdf["url"] and "RPT-001" not in pdf["url"]
    assert (plain["status"], plain["url"]) == ("NOT_FOUND", None)

    opened = await client.get(pdf["url"])
    assert opened.status_code == 200
    assert (opened.headers["content-type"], opened.content) == ("application/pdf", PDF_BYTES)
    assert opened.headers["cache-control"] == "no-store"
    assert (await client.get("/reports/not-a-link")).status_code == 404

    expected = {
        f"report AVAILABLE; study {SR_STUDY.study_uid}",
        f"report NOT_FOUND; study {PLAIN_STUDY.study_uid}",
        f"document; study {PDF_STUDY.study_uid}",
    }
    for _ in range(100):  # outcomes ride the journal's next batch: read until they are there
        events = (await client.post("/graphql", json={"query": AUDIT_QUERY})).json()["data"]["auditEvents"]
        if {e["detail"] for e in events if e["action"] == "REPORT_READ"} >= expected:
            break
        await asyncio.sleep(0.1)
    assert {e["detail"] for e in events if e["action"] == "REPORT_READ"} >= expected
