"""`pacsfed serve` as a DICOM node: dcmtk's findscu and an Orthanc "workstation" search three hospitals through it.

One served pacsfed for the module, its ``dicom_facade`` letting in three calling AEs (the mapping
form): FINDSCU and WORKSTN see the three real hospitals (orthanc_a, dcmqrscp_b, orthanc_c), ALLSRC
also a fourth whose port is closed, so its answers are partial. findscu is dcmtk's (``/usr/bin``,
not pynetdicom's of the same name); the workstation is an Orthanc with pacsfed as a remote
modality, asked through its REST API (``POST /modalities/{id}/query``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from peers.dicomdata import CATALOGUE
from peers.orthanc import OrthancPeer
from peers.pacsfed import PacsfedServer
from peers.ports import LOOPBACK, free_port

from federation.access.auth import new_api_key

FINDSCU = "/usr/bin/findscu"
SHARED_CT = CATALOGUE.study("SHARED-CT")
A_MR = CATALOGUE.study("A-MR")
C_US = CATALOGUE.study("C-US")
THREE = ["hosp-a", "hosp-b", "hosp-c"]


@pytest.fixture(scope="module")
def facade(
    pacsfed_install: Path,
    tmp_path_factory: pytest.TempPathFactory,
    three_hospitals: list[dict[str, Any]],
) -> Iterator[tuple[PacsfedServer, int]]:
    dicom_port = free_port()
    sources = [
        *three_hospitals,
        {
            "id": "hosp-down",
            "name": "Closed Hospital",
            "kind": "dimse",
            "host": LOOPBACK,
            "port": free_port(),  # nothing listens there
            "called_ae": "DOWN",
            "calling_ae": "PACSFED",
        },
    ]
    config = {
        "cache": {"backend": "memory"},
        "sources": sources,
        "auth": {"mode": "api_key", "api_keys": [{"id": "nobody", "sha256": new_api_key("nobody")[1]}]},
        "dicom_facade": {
            "port": dicom_port,
            "ae_title": "PACSFED",
            "allowed_calling_aes": {
                "FINDSCU": {"sources": THREE},
                "WORKSTN": {"partial_status": "success"},  # Orthanc 1.10 drops answers ending in a warning
                "ALLSRC": {"scopes": ["history:read"]},
            },
        },
    }
    server = PacsfedServer(pacsfed_install, tmp_path_factory.mktemp("pacsfed-dicom"), config)
    try:
        server.start()
    except Exception as exc:
        server.stop()
        pytest.fail(f"pacsfed serve with a dicom_facade could not be started: {exc}", pytrace=False)
    yield server, dicom_port
    server.stop()


def _findscu(port: int, calling: str, *keys: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [FINDSCU, "-S", "-aet", calling, "-aec", "PACSFED", "-to", "30", "-ta", "30", "-td", "60"]
    argv += ["-d"] if debug else ["-v"]
    for key in keys:
        argv += ["-k", key]
    return subprocess.run(
        [*argv, LOOPBACK, str(port)], capture_output=True, text=True, timeout=120, check=False
    )


def _answers(output: str) -> list[dict[str, str]]:
    """findscu's printed responses (not its printed request), each as {keyword: value}."""
    answers: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    request = False
    for line in output.splitlines():
        text = line.removeprefix("I: ").removeprefix("D: ")
        if "Request Identifiers" in text:
            request = True
        elif text.startswith("# Dicom-Data-Set"):
            current = {}
            if not request:
                answers.append(current)
            request = False
        elif current is not None and text.startswith("(") and "#" in text:
            value = text.split("[", 1)[1].rsplit("]", 1)[0] if "[" in text else ""
            current[text.rsplit(" ", 1)[-1]] = value.replace("\x00", "").strip()
    return [a for a in answers if "StudyInstanceUID" in a]


def test_findscu_lists_one_patient_s_exams_from_three_hospitals(facade: tuple[PacsfedServer, int]) -> None:
    server, port = facade
    result = _findscu(
        port,
        "FINDSCU",
        "QueryRetrieveLevel=STUDY",
        "PatientID=PA-001",
        "StudyInstanceUID",
        "StudyDate",
        "ModalitiesInStudy",
        "SpecificCharacterSet=ISO_IR 192",
        "PatientName",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    answers = {a["StudyInstanceUID"]: a for a in _answers(result.stdout + result.stderr)}
    assert set(answers) == {SHARED_CT.study_uid, A_MR.study_uid, C_US.study_uid}, result.stdout
    assert answers[SHARED_CT.study_uid]["InstitutionName"] == "Hôpital A\\Ziekenhuis B"
    assert answers[C_US.study_uid]["InstitutionName"] == "Clinique C"
    assert answers[A_MR.study_uid]["PatientName"] == "Müller^Anna"  # UTF-8, as asked
    assert "AccessionNumber" not in answers[A_MR.study_uid]  # only the keys asked for
    assert "Received Final Find Response (Success)" in result.stdout + result.stderr
    journal = b"".join(p.read_bytes() for p in (server.workdir / "audit").rglob("*") if p.is_file())
    assert b"dicom:FINDSCU" in journal  # audited through the service, as the calling AE


def test_findscu_narrows_by_study_date_and_modality(facade: tuple[PacsfedServer, int]) -> None:
    _, port = facade
    date = SHARED_CT.date
    result = _findscu(
        port,
        "FINDSCU",
        "QueryRetrieveLevel=STUDY",
        "PatientID=PA-001",
        f"StudyDate={date}-{date}",
        f"ModalitiesInStudy={SHARED_CT.modality}",
        "StudyInstanceUID",
    )
    answers = [a["StudyInstanceUID"] for a in _answers(result.stdout + result.stderr)]
    assert answers == [SHARED_CT.study_uid], result.stdout + result.stderr


def test_an_unlisted_calling_ae_is_refused_at_association(facade: tuple[PacsfedServer, int]) -> None:
    _, port = facade
    result = _findscu(port, "STRANGER", "QueryRetrieveLevel=STUDY", "PatientID=PA-001")
    output = result.stdout + result.stderr
    assert "Association Rejected" in output, output
    assert "Calling AE Title Not Recognized" in output, output
    assert "StudyInstanceUID" not in output


def test_a_partial_answer_lists_what_arrived_and_names_the_failed_source(
    facade: tuple[PacsfedServer, int],
) -> None:
    _, port = facade
    result = _findscu(
        port, "ALLSRC", "QueryRetrieveLevel=STUDY", "PatientID=PA-001", "StudyInstanceUID", debug=True
    )
    output = result.stdout + result.stderr
    uids = {a["StudyInstanceUID"] for a in _answers(output) if "StudyInstanceUID" in a}
    assert uids == {SHARED_CT.study_uid, A_MR.study_uid, C_US.study_uid}, output
    assert "DIMSE Status                  : 0xb000: Warning" in output, output
    assert "partial: hosp-down UNREACHABLE" in output, output


def test_an_orthanc_workstation_lists_a_partial_answer_through_pacsfed_as_a_remote_modality(
    facade: tuple[PacsfedServer, int], tmp_path: Path
) -> None:
    _, port = facade
    workstation = OrthancPeer(
        "WORKSTN", tmp_path / "workstation", modalities={"pacsfed": ["PACSFED", LOOPBACK, port]}
    )
    try:
        workstation.start()
        with httpx.Client(base_url=workstation.http_url, timeout=90) as client:
            asked = client.post(
                "/modalities/pacsfed/query",
                json={
                    "Level": "Study",
                    "Query": {"PatientID": "PA-001", "StudyInstanceUID": "", "StudyDescription": ""},
                },
            )
            assert asked.status_code == 200, asked.text
            answers = client.get(
                f"/queries/{asked.json()['ID']}/answers", params={"expand": "", "simplify": ""}
            )
            assert answers.status_code == 200, answers.text
            found = {a["StudyInstanceUID"]: a for a in answers.json()}
    finally:
        workstation.close()
    assert set(found) == {SHARED_CT.study_uid, A_MR.study_uid, C_US.study_uid}
    assert found[SHARED_CT.study_uid]["InstitutionName"] == "Hôpital A\\Ziekenhuis B"


def test_findscu_by_name_pattern_keeps_each_hospital_s_patient(facade: tuple[PacsfedServer, int]) -> None:
    _, port = facade
    result = _findscu(
        port, "FINDSCU", "QueryRetrieveLevel=STUDY", "PatientName=Janssens*", "PatientID", "StudyInstanceUID"
    )
    answers = _answers(result.stdout + result.stderr)
    ids = {a["PatientID"] for a in answers}
    assert {"A123", "B-77", "B-99"} <= ids, result.stdout + result.stderr
    assert all("\\" not in a["PatientID"] for a in answers)  # never merged across patients


def test_findscu_lists_a_study_s_series_at_series_level(facade: tuple[PacsfedServer, int]) -> None:
    _, port = facade
    result = _findscu(
        port,
        "FINDSCU",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={SHARED_CT.study_uid}",
        "SeriesInstanceUID",
        "Modality",
    )
    answers = _answers(result.stdout + result.stderr)
    assert {a["SeriesInstanceUID"] for a in answers} == set(SHARED_CT.series_uids), result.stdout
    assert all(a["Modality"] == SHARED_CT.modality for a in answers)
    assert all(a["InstitutionName"] == "Hôpital A\\Ziekenhuis B" for a in answers)


@pytest.mark.parametrize(
    ("asked", "declared", "name"),
    [
        ("ISO_IR 100", b"ISO_IR 100", "Müller^Anna".encode("latin-1")),  # Latin-1, as asked
        (None, b"ISO_IR 192", "Müller^Anna".encode()),  # the default repertoire cannot hold it: UTF-8
    ],
)
def test_the_answer_is_written_in_the_character_set_asked_for(
    facade: tuple[PacsfedServer, int], asked: str | None, declared: bytes, name: bytes
) -> None:
    _, port = facade
    keys = [
        "QueryRetrieveLevel=STUDY",
        "PatientID=PA-001",
        f"StudyInstanceUID={A_MR.study_uid}",
        "PatientName",
    ]
    if asked is not None:
        keys.append(f"SpecificCharacterSet={asked}")
    argv = [FINDSCU, "-S", "-v", "-aet", "FINDSCU", "-aec", "PACSFED"]
    for key in keys:
        argv += ["-k", key]
    result = subprocess.run([*argv, LOOPBACK, str(port)], capture_output=True, timeout=120, check=False)
    output = result.stdout + result.stderr
    answer = output.split(b"Find Response: 1 (Pending)", 1)[-1]
    assert b"[" + declared + b"]" in answer, output
    assert b"[" + name in answer, output


def test_patient_root_answers_studies_and_refuses_the_patient_level(
    facade: tuple[PacsfedServer, int],
) -> None:
    _, port = facade
    keys = ["-P", "-aet", "FINDSCU", "-aec", "PACSFED", "-v"]

    def run(*asked: str) -> str:
        argv = [FINDSCU, *keys]
        for key in asked:
            argv += ["-k", key]
        done = subprocess.run(
            [*argv, LOOPBACK, str(port)], capture_output=True, text=True, timeout=120, check=False
        )
        return done.stdout + done.stderr

    studies = run("QueryRetrieveLevel=STUDY", "PatientID=PA-001", "StudyInstanceUID")
    assert {a["StudyInstanceUID"] for a in _answers(studies)} == {
        SHARED_CT.study_uid,
        A_MR.study_uid,
        C_US.study_uid,
    }
    assert all(a["PatientID"] == "PA-001" for a in _answers(studies))  # Patient Root's unique key
    assert "Final Find Response (Failed: UnableToProcess)" in run(
        "QueryRetrieveLevel=PATIENT", "PatientID=PA-001"
    )
    assert "Final Find Response (Failed: UnableToProcess)" in run(
        "QueryRetrieveLevel=STUDY", "StudyDate=20200101-"
    )


def test_a_study_search_without_a_patient_is_refused_in_one_whole_error_comment(
    facade: tuple[PacsfedServer, int],
) -> None:
    """ErrorComment is LO (64 characters): the reason is written to fit, not cut mid-word."""
    _, port = facade
    output = _findscu(port, "FINDSCU", "QueryRetrieveLevel=STUDY", "StudyDate=20200101-20251231", debug=True)
    text = output.stdout + output.stderr
    assert "[a STUDY query needs a PatientID, PatientName, UID or accession]" in text, text


def test_findscu_with_a_study_uid_list_gets_each_listed_study_once(facade: tuple[PacsfedServer, int]) -> None:
    server, port = facade
    b_cr = CATALOGUE.study("B-CR")  # another patient's, at dcmqrscp B only
    listed = [SHARED_CT.study_uid, C_US.study_uid, b_cr.study_uid, "1.2.3.4.5.404"]
    result = _findscu(
        port, "FINDSCU", "QueryRetrieveLevel=STUDY", "StudyInstanceUID=" + "\\".join(listed), "PatientID"
    )
    output = result.stdout + result.stderr
    answers = {a["StudyInstanceUID"]: a["PatientID"] for a in _answers(output)}
    assert answers == {SHARED_CT.study_uid: "PA-001", C_US.study_uid: "PA-001", b_cr.study_uid: "PA-002"}, (
        output
    )
    assert "Received Final Find Response (Success)" in output
    journal = b"".join(p.read_bytes() for p in (server.workdir / "audit").rglob("*") if p.is_file())
    assert journal.count(f"studies {', '.join(listed)}; access".encode()) == 1  # one request, one record


def test_findscu_with_series_and_image_uid_lists(facade: tuple[PacsfedServer, int]) -> None:
    _, port = facade
    first, second = SHARED_CT.series_uids
    series = _findscu(
        port,
        "FINDSCU",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={SHARED_CT.study_uid}",
        f"SeriesInstanceUID={second}\\1.2.3.4.5.404",
    )
    assert [a["SeriesInstanceUID"] for a in _answers(series.stdout + series.stderr)] == [second], (
        series.stdout
    )
    sops = [SHARED_CT.sop_instance_uid(1, 2), SHARED_CT.sop_instance_uid(2, 1)]
    images = _findscu(
        port,
        "FINDSCU",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={SHARED_CT.study_uid}",
        f"SeriesInstanceUID={first}",
        "SOPInstanceUID=" + "\\".join(sops),
    )
    assert [a["SOPInstanceUID"] for a in _answers(images.stdout + images.stderr)] == sops[:1], images.stdout


@pytest.mark.parametrize(("name", "found"), [("MULLER*", 3), ("Dupré*", 0)])
def test_findscu_with_a_patient_id_and_name_gets_only_studies_matching_both(
    facade: tuple[PacsfedServer, int], name: str, found: int
) -> None:
    _, port = facade
    result = _findscu(
        port,
        "FINDSCU",
        "QueryRetrieveLevel=STUDY",
        "SpecificCharacterSet=ISO_IR 192",
        "PatientID=PA-001",
        f"PatientName={name}",
        "StudyInstanceUID",
    )
    output = result.stdout + result.stderr
    assert len(_answers(output)) == found, output  # another patient's name: none of PA-001's studies
    assert "Received Final Find Response (Success)" in output
