"""`pacsfed serve` from a clean install, searched at /dicom-web by `dicomweb-client`, and as OHIF's study list asks.

OHIF's study list (OHIF/Viewers, extensions/default/src/DicomWebDataSource/qido.js, commit
ddbff2f57751b698e6f2b29f14a20e952cdabe52) sends ``mapParams``' query (the PatientID as tag
``00100020``, ``limit=101``, ``offset=0``, ``fuzzymatching=false``, ``includefield=00081030,00080060``)
and reads, in ``processResults``, the tags of :data:`OHIF_STUDY_LIST`; its series list
(``processSeriesResults``) reads those of :data:`OHIF_SERIES_LIST`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from peers.dicomdata import CATALOGUE

from pacsfed.demo.signer import DemoSigner

SHARED_CT = CATALOGUE.study("SHARED-CT")
A_MR = CATALOGUE.study("A-MR")
C_US = CATALOGUE.study("C-US")
PUBLIC_URL = "https://pacsfed.example.org/imaging"
OHIF_STUDY_LIST = {
    "0020000D": "StudyInstanceUID",
    "00080020": "StudyDate",
    "00080030": "StudyTime",
    "00080050": "AccessionNumber",
    "00100020": "PatientID (mrn)",
    "00100010": "PatientName",
    "00201208": "NumberOfStudyRelatedInstances",
    "00081030": "StudyDescription",
    "00080061": "ModalitiesInStudy",
}
OHIF_SERIES_LIST = {
    "0020000D": "StudyInstanceUID",
    "0020000E": "SeriesInstanceUID",
    "00080060": "Modality",
    "00200011": "SeriesNumber",
    "00080021": "SeriesDate",
    "00201209": "NumberOfSeriesRelatedInstances",
    "0008103E": "SeriesDescription",
}


def _uids(items: list[dict[str, Any]], tag: str) -> list[str]:
    return [item[tag]["Value"][0] for item in items]


def test_dicomweb_client_searches_three_hospitals_with_a_bearer_token(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    three_hospitals: list[dict[str, Any]],
) -> None:
    public = {"public_url": PUBLIC_URL}  # as behind a reverse proxy: links name it, whatever the Host
    server = pacsfed_server(serve_config(three_hospitals, server=public))
    url = f"{server.url}/dicom-web"
    with pytest.raises(requests.HTTPError) as refused:
        DICOMwebClient(url).search_for_studies(search_filters={"PatientID": "PA-001"})
    assert refused.value.response.status_code == 401
    no_scope = DICOMwebClient(
        url, headers={"Authorization": f"Bearer {signer.token(scopes=('audit:read',))}"}
    )
    with pytest.raises(requests.HTTPError) as forbidden:
        no_scope.search_for_studies(search_filters={"PatientID": "PA-001"})
    assert forbidden.value.response.status_code == 403

    client = DICOMwebClient(
        url, headers={"Authorization": f"Bearer {signer.token(scopes=('history:read',))}"}
    )
    studies = client.search_for_studies(search_filters={"PatientID": "PA-001"})
    assert _uids(studies, "0020000D") == [SHARED_CT.study_uid, A_MR.study_uid, C_US.study_uid]
    assert studies[0]["00081190"]["Value"] == [f"{PUBLIC_URL}/dicom-web/studies/{SHARED_CT.study_uid}"]
    assert _uids(
        client.search_for_studies(search_filters={"PatientID": "PA-001"}, limit=1, offset=2), "0020000D"
    ) == [C_US.study_uid]
    series = client.search_for_series(SHARED_CT.study_uid)
    assert _uids(series, "0020000E") == [SHARED_CT.series_uid(1), SHARED_CT.series_uid(2)]
    instances = client.search_for_instances(SHARED_CT.study_uid, SHARED_CT.series_uid(1))
    assert _uids(instances, "00080018") == [
        SHARED_CT.sop_instance_uid(1, 1),
        SHARED_CT.sop_instance_uid(1, 2),
    ]
    whole = client.search_for_instances(SHARED_CT.study_uid)  # /studies/{uid}/instances
    assert _uids(whole, "00080018") == [SHARED_CT.sop_instance_uid(n, i) for n in (1, 2) for i in (1, 2)]


def test_qido_answers_carry_every_attribute_ohifs_study_list_reads_without_a_token_in_insecure_dev(
    pacsfed_server: Callable[..., Any], three_hospitals: list[dict[str, Any]]
) -> None:
    config = {
        "cache": {"backend": "memory"},
        "auth": {"mode": "none"},
        "sources": three_hospitals,
    }
    server = pacsfed_server(config, insecure_dev=True)
    client = DICOMwebClient(f"{server.url}/dicom-web")
    ohif_controls = {"limit": 101, "offset": 0, "fuzzymatching": "false", "includefield": "00081030,00080060"}
    studies = client.search_for_studies(
        search_filters={"00100020": "PA-002"}, additional_params=ohif_controls
    )
    assert len(studies) == 3  # C-MR at C, B-CR at dcmqrscp B (no ModalitiesInStudy there), A-CT at A
    for study in studies:
        missing = [name for tag, name in OHIF_STUDY_LIST.items() if tag not in study]
        assert not missing, f"{study['0020000D']['Value'][0]}: no {missing}"
        assert study["00100020"]["Value"] == ["PA-002"]
        assert study["00100010"]["Value"] == [{"Alphabetic": "Dupré^Élodie"}]
    for study in studies:
        for item in client.search_for_series(study["0020000D"]["Value"][0], fields=["0008103E", "00080021"]):
            missing = [name for tag, name in OHIF_SERIES_LIST.items() if tag not in item]
            assert not missing, f"a series: no {missing}"
