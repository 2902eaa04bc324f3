"""Connector behaviour against real peers: QIDO paging and auth on Orthanc, Patient Root fallback."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from fakes import OutOfProcess, PendingFloodPeer
from peers import OrthancPeer
from peers.dicomdata import CATALOGUE, ORTHANC_A

from connectors.base import ConnectorContext
from connectors.dicomweb import DicomwebConnector
from connectors.dicomweb_settings import DicomwebSourceSettings
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.engine.request import HistoryRequest
from federation.errors import SourceAuthError
from federation.models import Deadline, StudyQuery
from pacsfed.demo import SimulatedDimsePacs, demo_studies

pytestmark = pytest.mark.integration


def dicomweb(url: str, **settings: Any) -> DicomwebConnector:
    return DicomwebConnector(
        DicomwebSourceSettings(id="web", kind="dicomweb", url=url, **settings), ConnectorContext()
    )


@pytest.mark.parametrize("page_size", [1, 2, 100])
async def test_qido_pages_until_exhausted(orthanc_a: OrthancPeer, page_size: int) -> None:
    connector = dicomweb(orthanc_a.dicomweb_url, page_size=page_size)
    try:
        answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
    finally:
        await connector.aclose()
    assert {r.study_instance_uid for r in answer.records} == CATALOGUE.study_uids(
        peer=ORTHANC_A, patient_id="PA-001"
    )
    assert not answer.truncated


async def test_qido_max_results_truncates_with_a_warning(orthanc_a: OrthancPeer) -> None:
    connector = dicomweb(orthanc_a.dicomweb_url, page_size=1, max_results=1)
    try:
        answer = await connector.find_studies(StudyQuery(patient_id="PA-001"), Deadline.after(10))
    finally:
        await connector.aclose()
    assert len(answer.records) == 1
    assert answer.truncated
    assert any("max_results" in w for w in answer.warnings)


async def test_qido_basic_auth(tmp_path: Any, dicom_files: dict[str, list[Any]]) -> None:
    secured = OrthancPeer(
        "SECURED",
        tmp_path / "orthanc",
        extra_config={"AuthenticationEnabled": True, "RegisteredUsers": {"pacsfed": "s3cret-pw"}},
    )
    secured.start()
    try:
        secured.upload(path for key in ("SHARED-CT", "A-MR") for path in dicom_files[key])
        query, deadline = StudyQuery(patient_id="PA-001"), Deadline.after(10)
        anonymous = dicomweb(secured.dicomweb_url)
        wrong = dicomweb(
            secured.dicomweb_url, auth={"type": "basic", "username": "pacsfed", "password": "nope"}
        )
        right = dicomweb(
            secured.dicomweb_url, auth={"type": "basic", "username": "pacsfed", "password": "s3cret-pw"}
        )
        for refused in (anonymous, wrong):
            with pytest.raises(SourceAuthError):
                await refused.find_studies(query, deadline)
        answer = await right.find_studies(query, deadline)
        assert {r.study_instance_uid for r in answer.records} == CATALOGUE.study_uids(
            peer=ORTHANC_A, patient_id="PA-001"
        )
        for connector in (anonymous, wrong, right):
            await connector.aclose()
    finally:
        secured.close()


async def test_dimse_falls_back_to_patient_root() -> None:
    with SimulatedDimsePacs("OLDPACS", demo_studies("demo-chu-nord"), study_root=False) as pacs:
        connector = DimseConnector(
            DimseSourceSettings(
                id="old", kind="dimse", host="127.0.0.1", port=pacs.port, called_ae="OLDPACS"
            ),
            ConnectorContext(),
        )
        try:
            answer = await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
        finally:
            await connector.aclose()
    assert answer.records
    assert {r.patient_id for r in answer.records} == {"DEMO-001"}


async def test_a_query_abandoned_at_the_deadline_is_c_cancelled() -> None:
    from federation.engine.engine import FederationEngine
    from federation.models import Freshness, PatientQuery, SourceStatus

    with SimulatedDimsePacs("SLOWPACS", demo_studies("demo-chu-nord"), latency_s=5.0) as pacs:
        connector = DimseConnector(
            DimseSourceSettings(
                id="slow", kind="dimse", host="127.0.0.1", port=pacs.port, called_ae="SLOWPACS"
            ),
            ConnectorContext(),
        )
        engine = FederationEngine([connector], None)
        try:
            history = await engine.patient_history(
                PatientQuery(patient_id="DEMO-001"), HistoryRequest(deadline_ms=300, freshness=Freshness.LIVE)
            )
            for _ in range(100):  # the cancel is sent from a helper thread
                if pacs.cancelled_queries:
                    break
                await asyncio.sleep(0.02)
        finally:
            await engine.aclose()
    assert history.sources[0].status is SourceStatus.TIMEOUT
    assert pacs.cancelled_queries == 1


A_ABORT_PDU = bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0])
"""A-ABORT from the service-user, no reason (PS3.8 9.3.8)."""


def _abort_as_the_peer(association: Any) -> None:
    """The simulated PACS aborts an idle association: its A-ABORT PDU, on the association's own socket.

    Written straight to the socket rather than through pynetdicom's ``Association.abort()``: called
    from the test's thread, that one races the association's own thread as the association ends
    (InvalidEventError, Evt15 in Sta13, raised in the simulated PACS's thread on a loaded machine).
    The client closes the connection on the A-ABORT; the peer's state machine sees it closed.
    """
    association.dul.socket.socket.sendall(A_ABORT_PDU)


def _slow_pacs_connector(pacs: SimulatedDimsePacs, **settings: Any) -> DimseConnector:
    return DimseConnector(
        DimseSourceSettings(
            id="pooled", kind="dimse", host="127.0.0.1", port=pacs.port, called_ae=pacs.ae_title, **settings
        ),
        ConnectorContext(),
    )


async def test_an_association_is_reused_across_queries() -> None:
    with SimulatedDimsePacs("POOLPACS", demo_studies("demo-chu-nord")) as pacs:
        connector = _slow_pacs_connector(pacs)
        try:
            for _ in range(3):
                answer = await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
                assert answer.records
        finally:
            await connector.aclose()
        assert pacs.associations_accepted == 1


async def test_an_association_opened_by_a_short_query_outlives_that_deadline_in_the_pool() -> None:
    with SimulatedDimsePacs("POOLPACS", demo_studies("demo-chu-nord")) as pacs:
        connector = _slow_pacs_connector(pacs)
        try:
            # Opened under a 1 s deadline: pynetdicom's network timeout must not follow it to the pool.
            await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(1))
            await asyncio.sleep(1.5)
            answer = await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
        finally:
            await connector.aclose()
        assert answer.records
        assert pacs.associations_accepted == 1


async def test_an_aborted_association_is_re_established() -> None:
    with SimulatedDimsePacs("POOLPACS", demo_studies("demo-chu-nord")) as pacs:
        connector = _slow_pacs_connector(pacs)
        try:
            await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
            [pooled] = pacs.active_associations()
            _abort_as_the_peer(pooled)  # the peer drops the idle association
            await asyncio.sleep(0.2)
            answer = await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
        finally:
            await connector.aclose()
        assert answer.records
        assert pacs.associations_accepted == 2


async def test_idle_associations_are_released() -> None:
    with SimulatedDimsePacs("POOLPACS", demo_studies("demo-chu-nord")) as pacs:
        connector = _slow_pacs_connector(pacs, association_idle_s=0.3)
        try:
            await connector.find_studies(StudyQuery(patient_id="DEMO-001"), Deadline.after(10))
            assert len(pacs.active_associations()) == 1
            for _ in range(50):
                if not pacs.active_associations():
                    break
                await asyncio.sleep(0.05)
            assert pacs.active_associations() == []
        finally:
            await connector.aclose()


async def test_pooled_associations_hold_no_thread() -> None:
    # A busy department keeps its associations open all day: they must cost no thread (nor a
    # polling one) in this process, however many sources hold one. The peer runs out of process.
    with OutOfProcess(PendingFloodPeer, count=3) as peer:  # three studies, Success, then silence
        connectors = [
            DimseConnector(
                DimseSourceSettings(
                    id=f"pooled-{i}", kind="dimse", host="127.0.0.1", port=peer.port, called_ae="POOLED"
                ),
                ConnectorContext(),
            )
            for i in range(8)
        ]
        before = {thread.ident for thread in threading.enumerate()}
        try:
            answers = await asyncio.gather(
                *(c.find_studies(StudyQuery(patient_id="X"), Deadline.after(10)) for c in connectors)
            )
            await asyncio.sleep(0.2)
            pooled = sum(len(c._pool) for c in connectors)
            started = [t.name for t in threading.enumerate() if t.ident not in before]
        finally:
            await asyncio.gather(*(connector.aclose() for connector in connectors))
    assert [len(answer.records) for answer in answers] == [3] * 8
    assert pooled == 8
    assert started == [], started
