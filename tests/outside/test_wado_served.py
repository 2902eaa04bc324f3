"""WADO-RS through `pacsfed serve`, as a viewer retrieves: the `dicomweb-client` package against /dicom-web/.

The origin is a real Orthanc that asks for credentials: pacsfed holds them, its callers never do.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from peers.orthanc import OrthancPeer
from peers.ports import free_port
from peers.wadodata import WADO_PATIENT_ID, WADO_PATIENT_NAME, WadoStudy
from requests.exceptions import HTTPError
from wado_fixtures import ORTHANC_USER, orthanc_wado, wado_study

from pacsfed.demo.signer import DemoSigner

__all__ = ["orthanc_wado", "wado_study"]


AUDITED = """{ auditEvents(first: 100) { action outcome channel sources detail } }"""


def test_dicomweb_client_retrieves_instances_metadata_frames_and_bulk_data_through_pacsfed(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_wado: OrthancPeer,
    wado_study: WadoStudy,
) -> None:
    user, password = ORTHANC_USER
    auth = {"type": "basic", "username": user, "password": password}
    source = {"id": "hosp-w", "kind": "dicomweb", "url": orthanc_wado.dicomweb_url, "auth": auth}
    # dicomweb-client 0.61 sends Host without the port: pacsfed's links start with server.public_url.
    port = free_port()
    public = {"public_url": f"http://127.0.0.1:{port}"}
    server = pacsfed_server(serve_config([source], server=public), port=port)
    root = f"{server.url}/dicom-web"
    token = signer.token(subject="dr-wado", scopes=("history:read",))
    client = DICOMwebClient(url=root, headers={"Authorization": f"Bearer {token}"})
    study, series = wado_study.study_uid, wado_study.series_uid
    first, second = wado_study.sop_uids

    (found,) = client.search_for_studies(search_filters={"PatientID": WADO_PATIENT_ID})  # QIDO-RS
    assert found["00081190"]["Value"] == [f"{root}/studies/{study}"]  # a viewer retrieves here

    instance = client.retrieve_instance(study, series, first)
    written = io.BytesIO()
    instance.save_as(written, enforce_file_format=False)  # as read: pydicom writes back the bytes it read
    origin = orthanc_wado.get(f"/instances/{_orthanc_id(orthanc_wado, first)}/file").content
    assert instance.SOPInstanceUID == first
    assert written.getvalue() == origin == wado_study.paths[0].read_bytes()  # byte-identical to the origin's

    metadata = client.retrieve_series_metadata(study, series)
    bulk = {item["00080018"]["Value"][0]: item["7FE00010"]["BulkDataURI"] for item in metadata}
    assert set(bulk) == {first, second}
    assert bulk[second].startswith(f"{root}/studies/{study}/series/{series}/instances/{second}/")
    pixels = b"".join(client.retrieve_bulkdata(bulk[second], media_types=("application/octet-stream",)))
    assert pixels == b"".join(wado_study.frame(1, n) for n in range(1, wado_study.frames + 1))
    # Orthanc 1.10 refuses dicomweb-client's default ``transfer-syntax=*``: name the media type.
    frames = client.retrieve_instance_frames(
        study, series, second, [2], media_types=("application/octet-stream",)
    )
    assert frames == [wado_study.frame(1, 2)]

    anonymous = DICOMwebClient(url=root)
    with pytest.raises(HTTPError) as refused:
        anonymous.retrieve_instance(study, series, first)
    assert refused.value.response.status_code == 401
    with pytest.raises(HTTPError) as missing:
        client.retrieve_study_metadata("1.2.3.404")
    assert missing.value.response.status_code == 404

    auditor = {"authorization": f"Bearer {signer.token(subject='auditor', scopes=('audit:read',))}"}
    events = httpx.post(server.graphql_url, json={"query": AUDITED}, headers=auditor, timeout=30).json()
    reads = [e for e in events["data"]["auditEvents"] if e["action"] == "IMAGE_READ"]
    assert {(e["outcome"], e["channel"]) for e in reads} == {("SUCCESS", "dicomweb")}, reads
    assert any(e["sources"] == ["hosp-w"] and e["detail"].startswith("HTTP 200") for e in reads), reads
    assert all(e["detail"].endswith(f"study {study}") for e in reads if "404" not in e["detail"]), reads

    log = server.log_text()
    for secret in (WADO_PATIENT_ID, WADO_PATIENT_NAME.split("^")[0], password):
        assert secret not in log


def _orthanc_id(peer: OrthancPeer, sop_uid: str) -> str:
    found = httpx.post(f"{peer.http_url}/tools/lookup", content=sop_uid, auth=peer.auth, timeout=30).json()
    return str(found[0]["ID"])
