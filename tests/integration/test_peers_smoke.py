"""The real peers answer as the seed catalogue says (no application code involved)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from peers import DcmqrscpPeer, ElasticsearchNode, OrthancPeer
from peers.dicomdata import DCMQRSCP_B, ORTHANC_A, ORTHANC_C, Catalogue
from peers.process import require_binary

pytestmark = pytest.mark.integration

STUDY_UID = "0020000D"
PATIENT_NAME = "00100010"


def qido_studies(peer: OrthancPeer, **params: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{peer.dicomweb_url}/studies",
        params=params,
        headers={"Accept": "application/dicom+json"},
        timeout=10.0,
    )
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


def dcmtk(tool: str) -> str:
    """dcmtk's ``tool`` (never pynetdicom's namesake in the virtualenv)."""
    return require_binary(tool, "install the Debian package dcmtk")


def findscu(host: str, port: int, aet: str, tmp_path: Path, *keys: str) -> list[pydicom.Dataset]:
    """A STUDY-level C-FIND from PACSFED with dcmtk's findscu; the answers, parsed."""
    argv = [
        dcmtk("findscu"),
        "-S",
        "-aec",
        aet,
        "-aet",
        "PACSFED",
        "-to",
        "10",
        "-ta",
        "10",
        "-td",
        "10",
        "-X",
        "-k",
        "QueryRetrieveLevel=STUDY",
    ]
    for key in keys:
        argv += ["-k", key]
    result = subprocess.run(
        [*argv, host, str(port)], capture_output=True, cwd=tmp_path, timeout=60, check=False
    )
    output = (result.stdout + result.stderr).decode("latin-1")
    # findscu exits 0 even when the peer aborts the association: look at the log too.
    assert result.returncode == 0, output
    assert "Peer aborted" not in output and "E: " not in output, output
    return [pydicom.dcmread(path) for path in sorted(tmp_path.glob("rsp*.dcm"))]


def test_orthanc_qido_finds_the_patients_studies(orthanc_a: OrthancPeer, seed: Catalogue) -> None:
    answers = qido_studies(orthanc_a, PatientID="PA-001", includefield="PatientName")
    assert {a[STUDY_UID]["Value"][0] for a in answers} == seed.study_uids(ORTHANC_A, "PA-001")
    assert {a[PATIENT_NAME]["Value"][0]["Alphabetic"] for a in answers} == {"Müller^Anna"}


def test_orthanc_qido_utf8_patient(orthanc_c: OrthancPeer, seed: Catalogue) -> None:
    answers = qido_studies(orthanc_c, PatientID="PA-002", includefield="PatientName")
    assert {a[STUDY_UID]["Value"][0] for a in answers} == seed.study_uids(ORTHANC_C, "PA-002")
    assert answers[0][PATIENT_NAME]["Value"][0]["Alphabetic"] == "Dupré^Élodie"


@pytest.mark.parametrize("peer_name", [ORTHANC_A, DCMQRSCP_B])
def test_cfind_study_level(
    peer_name: str, request: pytest.FixtureRequest, seed: Catalogue, tmp_path: Path
) -> None:
    peer: OrthancPeer | DcmqrscpPeer = request.getfixturevalue(peer_name)
    port = peer.dicom_port if isinstance(peer, OrthancPeer) else peer.port
    answers = findscu(
        peer.host, port, peer.aet, tmp_path, "PatientID=PA-001", "StudyInstanceUID", "PatientName"
    )
    assert {ds.StudyInstanceUID for ds in answers} == seed.study_uids(peer_name, "PA-001")
    # Both answer a query that names no character set in the stored one, Latin-1.
    assert {(ds.SpecificCharacterSet, str(ds.PatientName)) for ds in answers} == {
        ("ISO_IR 100", "Müller^Anna")
    }


def test_cfind_is_refused_to_an_unknown_calling_ae(orthanc_a: OrthancPeer, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            dcmtk("findscu"),
            "-S",
            "-aec",
            orthanc_a.aet,
            "-aet",
            "STRANGER",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "PatientID=PA-001",
            orthanc_a.host,
            str(orthanc_a.dicom_port),
        ],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert b"Peer aborted Association" in result.stdout + result.stderr


def test_dcmqrscp_converts_to_utf8_on_request(
    dcmqrscp_b: DcmqrscpPeer, seed: Catalogue, tmp_path: Path
) -> None:
    answers = findscu(
        dcmqrscp_b.host,
        dcmqrscp_b.port,
        dcmqrscp_b.aet,
        tmp_path,
        "SpecificCharacterSet=ISO_IR 192",
        "PatientID=PA-003",
        "StudyInstanceUID",
        "PatientName",
    )
    assert {ds.StudyInstanceUID for ds in answers} == seed.study_uids(DCMQRSCP_B, "PA-003")
    assert [(ds.SpecificCharacterSet, str(ds.PatientName)) for ds in answers] == [
        ("ISO_IR 192", "Østergård^Søren")
    ]


def test_dcmqrscp_survives_a_restart(dcmqrscp_b: DcmqrscpPeer, seed: Catalogue, tmp_path: Path) -> None:
    dcmqrscp_b.stop()
    try:
        assert not dcmqrscp_b.echo()
    finally:
        dcmqrscp_b.start()
    answers = findscu(
        dcmqrscp_b.host,
        dcmqrscp_b.port,
        dcmqrscp_b.aet,
        tmp_path,
        "PatientID=PA-002",
        "StudyInstanceUID",
    )
    assert {ds.StudyInstanceUID for ds in answers} == seed.study_uids(DCMQRSCP_B, "PA-002")


def test_elasticsearch_is_up(elasticsearch: ElasticsearchNode) -> None:
    health = httpx.get(f"{elasticsearch.url}/_cluster/health", timeout=10.0).json()
    assert health["status"] in ("green", "yellow")
