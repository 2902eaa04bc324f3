"""Reports through `pacsfed serve`: a gql client reads an SR's text and a PDF's link, httpx fetches the PDF."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXTransport
from peers.reportdata import AUTHOR, FINDING, PDF_BYTES, PDF_STUDY, PLAIN_STUDY, REPORT_PATIENT, SR_STUDY
from report_fixtures import orthanc_reports, report_files

from pacsfed.demo.signer import DemoSigner

__all__ = ["orthanc_reports", "report_files"]

QUERY = """query($id: String!) { patientHistory(patient: {id: $id}, freshness: LIVE) {
      exams { studyInstanceUid report { status text author date mimeType url source { id } } } } }"""


def test_a_served_pacsfed_gives_reports_and_serves_the_pdf_to_its_caller_only(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_reports: Any,
) -> None:
    sources = [
        {
            "id": "hosp-r",
            "kind": "dimse",
            "host": orthanc_reports.host,
            "port": orthanc_reports.dicom_port,
            "called_ae": orthanc_reports.aet,
        },
        {"id": "hosp-r-web", "kind": "dicomweb", "url": orthanc_reports.dicomweb_url},
    ]
    server = pacsfed_server(serve_config(sources))
    token = signer.token(subject="dr-rita")
    transport = HTTPXTransport(
        url=server.graphql_url, headers={"authorization": f"Bearer {token}"}, timeout=60
    )
    with Client(transport=transport) as session:
        answer = session.execute(GraphQLRequest(QUERY, variable_values={"id": REPORT_PATIENT.patient_id}))
    reports = {e["studyInstanceUid"]: e["report"] for e in answer["patientHistory"]["exams"]}
    sr, pdf = reports[SR_STUDY.study_uid], reports[PDF_STUDY.study_uid]
    assert (sr["status"], sr["author"], sr["date"], sr["source"]) == (
        "AVAILABLE",
        AUTHOR,
        "2024-01-06",
        {"id": "hosp-r"},  # the first source in configuration order: DIMSE, by C-GET
    )
    assert f"    Finding: {FINDING}" in sr["text"].splitlines()
    assert reports[PLAIN_STUDY.study_uid]["status"] == "NOT_FOUND"
    assert (pdf["status"], pdf["mimeType"]) == ("AVAILABLE", "application/pdf")

    url = pdf["url"]
    assert url.startswith(server.url.rstrip("/") + "/reports/")
    assert httpx.get(url, timeout=30).status_code == 401
    other = httpx.get(
        url, headers={"authorization": f"Bearer {signer.token(subject='dr-other')}"}, timeout=30
    )
    assert other.status_code == 403
    opened = httpx.get(url, headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert opened.status_code == 200
    assert (opened.headers["content-type"], opened.content) == ("application/pdf", PDF_BYTES)

    log = server.log_text()
    assert REPORT_PATIENT.patient_id not in log and "Rapport" not in log and FINDING not in log


DEMO_REPORTS = """query($id: String!) { patientHistory(patient: {id: $id}) {
      exams { modalities report { status error text mimeType url } } } }"""


def test_the_demo_s_reports_read_as_the_page_reads_them(pacsfed_server: Callable[..., Any]) -> None:
    # DEMO-001: an SR at a DIMSE hospital, a PDF at the DICOMweb one, four exams without a report.
    demo = pacsfed_server(demo=True)
    token = demo.demo_token()
    transport = HTTPXTransport(url=demo.graphql_url, headers={"authorization": f"Bearer {token}"}, timeout=60)
    with Client(transport=transport) as session:
        answer = session.execute(GraphQLRequest(DEMO_REPORTS, variable_values={"id": "DEMO-001"}))
    reports = {tuple(e["modalities"]): e["report"] for e in answer["patientHistory"]["exams"]}
    sr, pdf = reports[("MR", "SR")], reports[("US", "DOC")]
    assert (sr["status"], sr["error"]) == ("AVAILABLE", None), sr
    assert "Impression: " in sr["text"]
    assert (pdf["status"], pdf["mimeType"]) == ("AVAILABLE", "application/pdf"), pdf
    opened = httpx.get(pdf["url"], headers={"authorization": f"Bearer {token}"}, timeout=30)
    assert (opened.status_code, opened.content[:8]) == (200, b"%PDF-1.4")
    others = [r for modalities, r in reports.items() if "SR" not in modalities and "DOC" not in modalities]
    assert len(others) == 4 and all((r["status"], r["error"]) == ("NOT_FOUND", None) for r in others), others
