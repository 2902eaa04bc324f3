"""DICOMweb sources behind a hospital's egress proxy (``proxy:`` per source), against the real Orthanc."""

from __future__ import annotations

from typing import Any

import pytest
from peers import OrthancPeer
from peers.dicomdata import CATALOGUE, ORTHANC_A
from peers.forward_proxy import ForwardProxy
from peers.ports import free_port
from pydantic import ValidationError

from connectors.base import ConnectorContext
from connectors.dicomweb import DicomwebConnector
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.errors import SourceUnreachable
from federation.models import Deadline, StudyQuery

pytestmark = pytest.mark.integration

PA_001 = CATALOGUE.study_uids(peer=ORTHANC_A, patient_id="PA-001")


def dicomweb(url: str, **settings: Any) -> DicomwebConnector:
    return DicomwebConnector(
        DicomwebSourceSettings(id="web", kind="dicomweb", url=url, **settings), ConnectorContext()
    )


async def test_a_proxied_source_is_asked_through_its_proxy(orthanc_a: OrthancPeer) -> None:
    with ForwardProxy() as proxy:
        connector = dicomweb(orthanc_a.dicomweb_url, proxy=proxy.url, page_size=1)
        try:
            answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
            await connector.ping(Deadline.after(5))
        finally:
            await connector.aclose()
    assert {r.study_instance_uid for r in answer.records} == PA_001
    origin = orthanc_a.dicomweb_url.split("/")[2]
    pages = len(PA_001) + 1  # one page a study (page_size 1), and the empty last page
    assert proxy.seen == [("GET", origin)] * (pages + 1)  # and the ping
    assert set(connector.protocols) == {"HTTP/1.1"}


async def test_a_source_without_a_proxy_goes_direct(orthanc_a: OrthancPeer) -> None:
    with ForwardProxy() as proxy:
        connector = dicomweb(orthanc_a.dicomweb_url)
        try:
            answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
        finally:
            await connector.aclose()
    assert {r.study_instance_uid for r in answer.records} == PA_001
    assert proxy.seen == []


async def test_a_proxy_that_cannot_be_reached_makes_the_source_unreachable(orthanc_a: OrthancPeer) -> None:
    connector = dicomweb(orthanc_a.dicomweb_url, proxy=f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(SourceUnreachable, match="connection refused"):
            await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(5))
    finally:
        await connector.aclose()


def test_the_proxy_is_an_http_url_whose_credentials_stay_secret() -> None:
    settings = DicomwebSourceSettings(
        id="web", kind="dicomweb", url="https://pacs.example", proxy="http://pacsfed:pr0xy-pw@proxy:3128"
    )
    assert "pr0xy-pw" not in repr(settings)
    with pytest.raises(ValidationError, match="http:// or https://"):
        DicomwebSourceSettings(
            id="web", kind="dicomweb", url="https://pacs.example", proxy="socks5://proxy:1080"
        )
