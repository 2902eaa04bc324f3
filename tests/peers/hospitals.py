"""The three seeded test hospitals as pacsfed ``sources``: one Orthanc over DIMSE, dcmqrscp, one Orthanc over DICOMweb."""

from __future__ import annotations

from typing import Any

from .dcmqrscp import DcmqrscpPeer
from .orthanc import OrthancPeer


def hospital_sources(
    orthanc_a: OrthancPeer, dcmqrscp_b: DcmqrscpPeer, orthanc_c: OrthancPeer
) -> list[dict[str, Any]]:
    """hosp-a (``orthanc_a``, C-FIND), hosp-b (``dcmqrscp_b``, C-FIND), hosp-c (``orthanc_c``, QIDO-RS), in that order."""
    return [
        {
            "id": "hosp-a",
            "name": "Hôpital A",
            "kind": "dimse",
            "host": orthanc_a.host,
            "port": orthanc_a.dicom_port,
            "called_ae": orthanc_a.aet,
            "calling_ae": "PACSFED",
        },
        {
            "id": "hosp-b",
            "name": "Ziekenhuis B",
            "kind": "dimse",
            "host": dcmqrscp_b.host,
            "port": dcmqrscp_b.port,
            "called_ae": dcmqrscp_b.aet,
            "calling_ae": "PACSFED",
        },
        {"id": "hosp-c", "name": "Clinique C", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
    ]
