"""The demo's reports read end to end through GraphQL, as the page reads them: from every simulated hospital."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from federation.settings import settings_from_mapping
from pacsfed.app import create_app
from pacsfed.demo import DEMO_PATIENTS, DEMO_SOURCES, demo_reports, start_demo_hospitals
from pacsfed.demo.patients import study_uid
from pacsfed.demo.signer import DemoSigner

PRELIMINARY = study_uid(5, 1)
"""DEMO-005's head CT: the demo's one unverified (preliminary) SR, from the DICOMweb hospital."""

QUERY = """query($id: String!) { patientHistory(patient: {id: $id}) {
  exams { studyInstanceUid modalities report { status error text author mimeType url source { id }
    completion verification verifiedBy } } } }"""


async def test_every_demo_report_reads_available_and_every_other_exam_says_not_found(tmp_path: Path) -> None:
    reported = {
        str(ds.StudyInstanceUID): (source.id, ds.Modality)
        for source in DEMO_SOURCES
        for ds in demo_reports(source.id)
    }
    async with await start_demo_hospitals() as hospitals:
        signer = DemoSigner(tmp_path / "keys")
        settings = settings_from_mapping(
            {
                "cache": {"backend": "memory"},
                "sources": hospitals.sources_config(),
                "auth": signer.auth_config(),
                "audit": {"journal_dir": str(tmp_path / "audit")},
            }
        )
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            headers = {"authorization": f"Bearer {signer.token()}"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://pacsfed.test", headers=headers, timeout=60
            ) as client:
                seen: dict[str, dict[str, Any]] = {}
                for patient in DEMO_PATIENTS:
                    variables = {"id": patient.patient_id}
                    body = (
                        await client.post("/graphql", json={"query": QUERY, "variables": variables})
                    ).json()
                    assert "errors" not in body, body
                    for exam in body["data"]["patientHistory"]["exams"]:
                        seen[exam["studyInstanceUid"]] = exam["report"]
                assert reported.keys() <= seen.keys()
                for uid, report in seen.items():
                    if uid not in reported:
                        assert (report["status"], report["error"]) == ("NOT_FOUND", None), uid
                        continue
                    source, kind = reported[uid]
                    assert (report["status"], report["error"], report["source"]) == (
                        "AVAILABLE",
                        None,
                        {"id": source},
                    ), uid
                    if kind == "SR":
                        assert report["text"].startswith("Diagnostic imaging report\n"), report
                        assert "  Impressions\n    Impression: " in report["text"]
                        assert report["author"]
                        verified = uid != PRELIMINARY
                        assert (report["completion"], report["verification"], report["verifiedBy"]) == (
                            "COMPLETE",
                            "VERIFIED" if verified else "UNVERIFIED",
                            report["author"] if verified else None,
                        ), uid
                    else:  # the PDF, fetched again from the DICOMweb hospital by WADO-RS
                        assert report["mimeType"] == "application/pdf"
                        assert (report["completion"], report["verification"]) == (None, None)
                        document = await client.get(report["url"])
                        assert document.status_code == 200, document.text
                        assert document.content.startswith(b"%PDF-1.4") and document.content.endswith(
                            b"%%EOF\n"
                        )
    assert {source for source, _ in reported.values()} == {s.id for s in DEMO_SOURCES}
    assert reported[PRELIMINARY][1] == "SR"
