"""Test hospitals holding reports: real SR and PDF documents (``peers.reportdata``) in Orthanc and dcmqrscp.

Import the fixtures into a test module (``from report_fixtures import ...``). Each module gets its
own peers: the session's seeded hospitals keep their catalogue unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from peers.dcmqrscp import DcmqrscpPeer
from peers.orthanc import CALLING_AET, OrthancPeer
from peers.process import PeerError
from peers.reportdata import REPORT_STUDIES, ReportFiles, write_report_files


def _orthanc(aet: str, workdir: Path, files: ReportFiles, *, allow_get: bool) -> OrthancPeer:
    """An Orthanc whose DicomModalities let PACSFED C-GET (``AllowGet``) or not."""
    entry = {"AET": CALLING_AET, "Host": "127.0.0.1", "Port": 104, "AllowGet": allow_get}
    peer = OrthancPeer(aet, workdir, extra_config={"DicomModalities": {"pacsfed": entry}})
    try:
        peer.start()
        peer.upload(files.all)
        if peer.study_uids() != {s.study_uid for s in REPORT_STUDIES}:
            raise PeerError(f"{aet} does not hold the report studies after seeding")
    except (PeerError, OSError) as exc:
        peer.close()
        pytest.fail(f"Orthanc {aet} could not be started: {exc}", pytrace=False)
    return peer


@pytest.fixture(scope="module")
def report_files(tmp_path_factory: pytest.TempPathFactory) -> ReportFiles:
    return write_report_files(tmp_path_factory.mktemp("reports"))


@pytest.fixture(scope="module")
def orthanc_reports(
    tmp_path_factory: pytest.TempPathFactory, report_files: ReportFiles
) -> Iterator[OrthancPeer]:
    """Orthanc (DICOMweb and DIMSE) holding the report studies; PACSFED may C-GET."""
    peer = _orthanc("HOSPR", tmp_path_factory.mktemp("orthanc-reports"), report_files, allow_get=True)
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def orthanc_no_get(
    tmp_path_factory: pytest.TempPathFactory, report_files: ReportFiles
) -> Iterator[OrthancPeer]:
    """The same studies in an Orthanc that refuses PACSFED's C-GET (``AllowGet: false``)."""
    peer = _orthanc("HOSPN", tmp_path_factory.mktemp("orthanc-no-get"), report_files, allow_get=False)
    yield peer
    peer.close()


@pytest.fixture(scope="module")
def dcmqrscp_reports(tmp_path_factory: pytest.TempPathFactory, report_files: ReportFiles) -> Iterator[Any]:
    """dcmqrscp holding the report studies (it answers C-GET from the hosts it knows)."""
    peer = DcmqrscpPeer("HOSPQ", tmp_path_factory.mktemp("dcmqrscp-reports"))
    try:
        peer.start()
        peer.load(report_files.all)
    except (PeerError, OSError) as exc:
        peer.close()
        pytest.fail(f"dcmqrscp HOSPQ could not be started: {exc}", pytrace=False)
    yield peer
    peer.close()
