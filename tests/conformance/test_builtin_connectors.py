"""The conformance kit (``connectors.testing``) run on the built-in connectors against real peers."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import pytest
from peers import DcmqrscpPeer, OrthancPeer

from connectors.base import Connector
from connectors.dicomweb import DicomwebConnector
from connectors.dimse import DimseConnector
from connectors.testing import Endpoint, KitStudy, NetworkConnectorConformance

from .conftest import seed_files


class TestDimseOnOrthanc(NetworkConnectorConformance):
    """C-FIND to Orthanc (DefaultEncoding Utf8)."""

    connector_class: ClassVar[type[Connector]] = DimseConnector

    @pytest.fixture
    def conformance_peer(self, kit_orthanc: OrthancPeer) -> OrthancPeer:
        return kit_orthanc

    def source_settings(self, peer: OrthancPeer, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        host, port = (endpoint.host, endpoint.port) if endpoint else (peer.host, peer.dicom_port)
        return {"kind": "dimse", "id": "kit-dimse", "host": host, "port": port, "called_ae": peer.aet}

    def seed(self, peer: OrthancPeer, studies: Sequence[KitStudy]) -> None:
        files = seed_files(studies)
        try:
            peer.upload(files)
        finally:
            shutil.rmtree(files[0].parent, ignore_errors=True)


class TestDicomwebOnOrthanc(TestDimseOnOrthanc):
    """QIDO-RS to the same Orthanc."""

    connector_class = DicomwebConnector

    def source_settings(self, peer: OrthancPeer, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        url = f"http://{endpoint.host}:{endpoint.port}/dicom-web" if endpoint else peer.dicomweb_url
        return {"kind": "dicomweb", "id": "kit-dicomweb", "url": url}


class TestDimseOnDcmqrscp(NetworkConnectorConformance):
    """C-FIND to dcmtk's dcmqrscp, which leaves ModalitiesInStudy out of its answers."""

    connector_class = DimseConnector
    may_omit = frozenset({"modalities"})

    @pytest.fixture
    def conformance_peer(self, kit_dcmqrscp: DcmqrscpPeer) -> DcmqrscpPeer:
        return kit_dcmqrscp

    def source_settings(self, peer: DcmqrscpPeer, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        host, port = (endpoint.host, endpoint.port) if endpoint else (peer.host, peer.port)
        return {"kind": "dimse", "id": "kit-dcmqrscp", "host": host, "port": port, "called_ae": peer.aet}

    def seed(self, peer: DcmqrscpPeer, studies: Sequence[KitStudy]) -> None:
        files = seed_files(studies)
        try:
            peer.load(files)
        finally:
            shutil.rmtree(files[0].parent, ignore_errors=True)
