"""The simulated hospitals answer real C-FIND and QIDO-RS queries over loopback, as the standard says."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

import pacsfed.demo as demo
from connectors.base import ConnectorContext
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.errors import SourceUnreachable
from federation.models import Deadline
from federation.settings import settings_from_mapping
from pacsfed.demo import (
    DEMO_PATIENTS,
    DEMO_SOURCES,
    SimulatedDimsePacs,
    SimulatedQidoServer,
    demo_reports,
    demo_studies,
    start_demo_hospitals,
    study_uid,
)
from pacsfed.demo.patients import patient_summaries

STUDY_ROOT = "1.2.840.10008.5.1.4.1.2.2.1"
PATIENT_ROOT = "1.2.840.10008.5.1.4.1.2.1.1"
VERIFICATION = "1.2.840.10008.1.1"
ALWAYS_RETURNED = {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle"}


def uids(datasets: list[Dataset], patient_id: str | None = None) -> set[str]:
    return {str(ds.StudyInstanceUID) for ds in datasets if patient_id is None or ds.PatientID == patient_id}


# --- the catalogue -------------------------------------------------------------------------------


def test_sources_are_the_three_demo_hospitals() -> None:
    assert [(s.id, s.name, s.kind) for s in DEMO_SOURCES] == [
        ("demo-chu-nord", "CHU Nord", "dimse"),
        ("demo-az-sint-jan", "AZ Sint-Jan", "dicomweb"),
        ("demo-clinique-sud", "Clinique du Sud", "dimse"),
    ]


def test_catalogue_is_deterministic_and_rooted() -> None:
    for source in DEMO_SOURCES:
        first, second = demo_studies(source.id), demo_studies(source.id)
        assert [ds.to_json_dict() for ds in first] == [ds.to_json_dict() for ds in second]
        assert first is not second
        assert first[0] is not second[0]
        for ds in first:
            assert ds.StudyInstanceUID.startswith("1.2.826.0.1.3680043.10.999.")
            assert 1 <= ds.NumberOfStudyRelatedSeries <= ds.NumberOfStudyRelatedInstances
    with pytest.raises(KeyError):
        demo_studies("demo-nowhere")


def test_mueller_has_exams_everywhere_with_one_shared() -> None:
    per_source = {s.id: uids(demo_studies(s.id), "DEMO-001") for s in DEMO_SOURCES}
    assert all(per_source.values())
    nord, sint_jan, sud = per_source.values()
    assert nord & sint_jan == {study_uid(1, 2)}
    assert not sud & (nord | sint_jan)
    assert len(nord | sint_jan | sud) == 6


def test_every_patient_has_one_to_six_studies() -> None:
    everything = [ds for s in DEMO_SOURCES for ds in demo_studies(s.id)]
    for patient in DEMO_PATIENTS:
        mine = uids(everything, patient.patient_id)
        assert 1 <= len(mine) <= 6
        assert {str(ds.PatientName) for ds in everything if ds.PatientID == patient.patient_id} == {
            patient.name
        }


def test_an_exam_has_a_report_exactly_when_it_lists_sr_or_doc() -> None:
    for source in DEMO_SOURCES:
        listed = {
            (str(ds.StudyInstanceUID), kind)
            for ds in demo_studies(source.id)
            for kind in ds.ModalitiesInStudy
            if kind in ("SR", "DOC")
        }
        reports = demo_reports(source.id)
        assert {(str(ds.StudyInstanceUID), ds.Modality) for ds in reports} == listed
        for ds in reports:
            assert ds.SOPInstanceUID.startswith(ds.SeriesInstanceUID + ".")
            assert ds.SeriesInstanceUID.startswith(ds.StudyInstanceUID + ".")
    assert {ds.Modality for s in DEMO_SOURCES for ds in demo_reports(s.id)} == {"SR", "DOC"}


def test_the_banner_s_summaries_and_the_readme_name_every_patient() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    summaries = patient_summaries()
    assert [line.split()[0] for line in summaries] == [p.patient_id for p in DEMO_PATIENTS]
    for patient, line in zip(DEMO_PATIENTS, summaries, strict=True):
        assert f"`{patient.patient_id}`" in readme
        has_report = any(
            kind in ds.ModalitiesInStudy
            for s in DEMO_SOURCES
            for ds in demo_studies(s.id)
            if ds.PatientID == patient.patient_id
            for kind in ("SR", "DOC")
        )
        assert ("report" in line) is has_report, line


def test_exports_are_sorted_and_real() -> None:
    assert demo.__all__ == sorted(demo.__all__)
    for name in demo.__all__:
        assert getattr(demo, name) is not None


# --- DIMSE ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chu_nord() -> Iterator[SimulatedDimsePacs]:
    """One peer for the module: it holds no state, and each stop takes pynetdicom ~0.5 s."""
    with SimulatedDimsePacs(
        "CHUNORD", demo_studies("demo-chu-nord"), reports=demo_reports("demo-chu-nord")
    ) as peer:
        yield peer


def no_nagle(event: Any) -> None:
    """pynetdicom leaves Nagle on; with it, each C-FIND waits ~40 ms for delayed ACKs."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def c_find(peer: SimulatedDimsePacs, query: Dataset, model: str = STUDY_ROOT) -> tuple[int, list[Dataset]]:
    """Run one C-FIND; return the final status and the pending identifiers."""
    ae = AE("PACSFED")
    ae.add_requested_context(model)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    assoc = ae.associate(
        "127.0.0.1", peer.port, ae_title=peer.ae_title, evt_handlers=[(evt.EVT_CONN_OPEN, no_nagle)]
    )
    assert assoc.is_established
    try:
        found, final = [], None
        for status, identifier in assoc.send_c_find(query, model):
            assert "Status" in status, "no response: timeout or abort"
            if status.Status in (0xFF00, 0xFF01):
                found.append(identifier)
            else:
                final = int(status.Status)
        assert final is not None
        return final, found
    finally:
        assoc.release()


def study_query(**keys: Any) -> Dataset:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 192"
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def test_echo(chu_nord: SimulatedDimsePacs) -> None:
    ae = AE("ANYONE")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("127.0.0.1", chu_nord.port, ae_title="CHUNORD")
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0
    finally:
        assoc.release()


def test_dimse_patient_id_returns_exactly_that_patients_studies(chu_nord: SimulatedDimsePacs) -> None:
    held = demo_studies("demo-chu-nord")
    for patient in DEMO_PATIENTS:
        status, found = c_find(chu_nord, study_query(PatientID=patient.patient_id))
        assert status == 0
        assert uids(found) == uids(held, patient.patient_id)
        assert all(ds.PatientID == patient.patient_id for ds in found)


def test_dimse_returns_only_requested_keys(chu_nord: SimulatedDimsePacs) -> None:
    status, found = c_find(chu_nord, study_query(PatientID="DEMO-001", StudyDate="", StudyID=""))
    assert status == 0
    assert found
    for ds in found:
        assert {e.keyword for e in ds} == ALWAYS_RETURNED | {
            "StudyInstanceUID",
            "PatientID",
            "StudyDate",
            "StudyID",
        }
        assert ds.RetrieveAETitle == "CHUNORD"
        assert ds.QueryRetrieveLevel == "STUDY"
        assert ds.StudyID == ""  # not held: returned empty, as an unsupported optional key


def test_dimse_utf8_names_round_trip(chu_nord: SimulatedDimsePacs) -> None:
    status, found = c_find(chu_nord, study_query(PatientName="müller*", ModalitiesInStudy=""))
    assert status == 0
    assert uids(found) == uids(demo_studies("demo-chu-nord"), "DEMO-001")
    for ds in found:
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == "Müller^Anna"

    sud = demo_studies("demo-clinique-sud")
    with SimulatedDimsePacs("CLINSUD", sud) as peer:
        status, found = c_find(peer, study_query(PatientName="Çelik^Ayşe"))
    assert status == 0
    assert [str(ds.PatientName) for ds in found] == ["Çelik^Ayşe"]


def test_dimse_date_ranges(chu_nord: SimulatedDimsePacs) -> None:
    held = demo_studies("demo-chu-nord")

    def between(low: str, high: str) -> set[str]:
        return {ds.StudyInstanceUID for ds in held if low <= ds.StudyDate <= high}

    for key, low, high in [
        ("20200101-20221231", "20200101", "20221231"),
        ("20230101-", "20230101", "99999999"),
        ("-20191231", "00000000", "20191231"),
        ("20210602", "20210602", "20210602"),
    ]:
        status, found = c_find(chu_nord, study_query(StudyDate=key))
        assert status == 0
        assert uids(found) == between(low, high), key
        assert uids(found)


def test_dimse_list_of_uids_and_modalities(chu_nord: SimulatedDimsePacs) -> None:
    wanted = [study_uid(1, 1), study_uid(3, 2), "1.2.3.4"]
    _, found = c_find(chu_nord, study_query(StudyInstanceUID=wanted))
    assert uids(found) == {study_uid(1, 1), study_uid(3, 2)}

    _, found = c_find(chu_nord, study_query(ModalitiesInStudy="SR"))
    assert [list(ds.ModalitiesInStudy) for ds in found] == [["CT", "SR"]]


def test_dimse_patient_root_levels(chu_nord: SimulatedDimsePacs) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = "DEMO-00?"
    query.PatientName = ""
    query.NumberOfPatientRelatedStudies = None
    status, found = c_find(chu_nord, query, PATIENT_ROOT)
    assert status == 0
    counts = {ds.PatientID: int(ds.NumberOfPatientRelatedStudies) for ds in found}
    held = demo_studies("demo-chu-nord")
    assert counts == {pid: len(uids(held, pid)) for pid in {ds.PatientID for ds in held}}

    # Patient Root below PATIENT needs the PatientID; the Study Root has no PATIENT level.
    assert c_find(chu_nord, study_query(), PATIENT_ROOT)[0] == 0xA900
    assert c_find(chu_nord, study_query(PatientID="DEMO-001"), PATIENT_ROOT)[0] == 0
    assert c_find(chu_nord, query, STUDY_ROOT)[0] == 0xA900
    series = study_query(PatientID="DEMO-001")
    series.QueryRetrieveLevel = "SERIES"
    assert c_find(chu_nord, series)[0] == 0xA900  # below STUDY, one StudyInstanceUID is needed


def test_dimse_series_level_lists_the_report_series_only(chu_nord: SimulatedDimsePacs) -> None:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = study_uid(4, 3)  # the coroscanner, "CT, SR"
    query.SeriesInstanceUID = query.Modality = query.SeriesNumber = ""
    status, found = c_find(chu_nord, query)
    assert status == 0
    assert [(ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber) for ds in found] == [
        ("SR", study_uid(4, 3) + ".90", 90)
    ]
    query.StudyInstanceUID = study_uid(1, 1)  # a CT without report: no image series is simulated
    assert c_find(chu_nord, query) == (0, [])


def test_dimse_rejects_an_association_called_for_another_ae_title(chu_nord: SimulatedDimsePacs) -> None:
    ae = AE("PACSFED")
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = 5
    assoc = ae.associate("127.0.0.1", chu_nord.port, ae_title="CLINSUD")
    assert assoc.is_rejected


async def test_a_swapped_port_is_reported_as_the_wrong_called_ae(chu_nord: SimulatedDimsePacs) -> None:
    # A configuration that sends Clinique du Sud's AE title to CHU Nord's port: the ping says so.
    settings = DimseSourceSettings(
        id="sud", kind="dimse", host="127.0.0.1", port=chu_nord.port, called_ae="CLINSUD"
    )
    connector = DimseConnector(settings, ConnectorContext())
    try:
        with pytest.raises(
            SourceUnreachable, match=r"the peer is not CLINSUD \(called AE title not recognised"
        ):
            await connector.ping(Deadline.after(5))
    finally:
        await connector.aclose()


def test_dimse_bad_date_is_a_failure(chu_nord: SimulatedDimsePacs) -> None:
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        query = study_query(StudyDate="2020-2021-2022")
    status, found = c_find(chu_nord, query)
    assert (status, found) == (0xC000, [])


def test_dimse_cancel_during_latency() -> None:
    with SimulatedDimsePacs("SLOW", demo_studies("demo-chu-nord"), latency_s=2.0) as peer:
        ae = AE("PACSFED")
        ae.add_requested_context(STUDY_ROOT)
        ae.dimse_timeout = 5
        assoc = ae.associate("127.0.0.1", peer.port, ae_title="SLOW")
        assert assoc.is_established
        try:
            cancel = threading.Timer(0.2, assoc.send_c_cancel, args=(7,), kwargs={
                "query_model": STUDY_ROOT
            })  # fmt: skip
            started = time.monotonic()
            cancel.start()
            statuses = [int(s.Status) for s, _ in assoc.send_c_find(study_query(), STUDY_ROOT, 7)]
            assert statuses == [0xFE00]
            assert time.monotonic() - started < 1.5
        finally:
            assoc.release()


def test_dimse_port_is_real_and_stop_frees_it() -> None:
    peer = SimulatedDimsePacs("TMP", [])
    port = peer.start()
    assert port > 0
    assert peer.start() == port
    peer.stop()
    peer.stop()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_dimse_turns_nagle_off_on_accepted_sockets(chu_nord: SimulatedDimsePacs) -> None:
    seen: list[int] = []

    def record(event: Any) -> None:
        seen.append(event.assoc.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    chu_nord._server.bind(evt.EVT_ACCEPTED, record)  # a notification: adds, replaces nothing
    try:
        c_find(chu_nord, study_query(PatientID="DEMO-001"))
    finally:
        chu_nord._server.unbind(evt.EVT_ACCEPTED, record)
    assert seen
    assert all(seen)


# --- QIDO-RS -------------------------------------------------------------------------------------


@pytest.fixture
async def sint_jan() -> AsyncIterator[tuple[httpx.AsyncClient, SimulatedQidoServer]]:
    server = SimulatedQidoServer(demo_studies("demo-az-sint-jan"), reports=demo_reports("demo-az-sint-jan"))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=5) as client:
            yield client, server
    finally:
        await server.stop()


def json_uids(body: list[dict[str, Any]]) -> set[str]:
    return {study["0020000D"]["Value"][0] for study in body}


async def test_qido_patient_id_returns_exactly_that_patients_studies(
    sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer],
) -> None:
    client, server = sint_jan
    held = demo_studies("demo-az-sint-jan")
    for patient in DEMO_PATIENTS:
        response = await client.get("/studies", params={"PatientID": patient.patient_id})
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/dicom+json"
        assert json_uids(response.json()) == uids(held, patient.patient_id)
    body = (await client.get("/studies", params={"00100020": "DEMO-003"})).json()
    assert json_uids(body) == uids(held, "DEMO-003")
    for study in body:
        uid = study["0020000D"]["Value"][0]
        assert study["00081190"] == {"vr": "UR", "Value": [f"{server.base_url}/studies/{uid}"]}


async def test_qido_returns_defaults_and_included_fields(
    sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer],
) -> None:
    client, _ = sint_jan
    plain = (await client.get("/studies", params={"PatientID": "DEMO-005"})).json()
    assert len(plain) == 1
    assert "00081030" not in plain[0]  # StudyDescription is not a default attribute
    assert "00100040" in plain[0]
    assert "00201206" in plain[0]

    params = [("PatientID", "DEMO-005"), ("includefield", "StudyDescription,00100021")]
    study = (await client.get("/studies", params=params)).json()[0]
    assert study["00081030"]["Value"] == ["CT hersenen zonder contrast"]
    assert study["00100021"]["Value"] == ["PACSFED-DEMO"]

    everything = (
        await client.get("/studies", params={"PatientID": "DEMO-005", "includefield": "all"})
    ).json()
    assert set(study) <= set(everything[0])


async def test_qido_utf8_names_round_trip(
    sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer],
) -> None:
    client, _ = sint_jan
    for pattern, name in [("Østergård^Søren", "Østergård^Søren"), ("van den b*", "Van den Bossche^Maërle")]:
        body = (await client.get("/studies", params={"PatientName": pattern})).json()
        assert body
        assert {s["00100010"]["Value"][0]["Alphabetic"] for s in body} == {name}
    body = (await client.get("/studies", params={"PatientID": "DEMO-001"})).json()
    assert body[0]["00100010"]["Value"] == [{"Alphabetic": "Müller^Anna"}]
    assert body[0]["00080005"]["Value"] == ["ISO_IR 192"]


async def test_qido_listens_with_nagle_off_for_accepted_connections(
    sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer],
) -> None:
    client, server = sint_jan
    assert (await client.get("/studies", params={"limit": 1})).status_code == 200
    assert server._server is not None
    listening = [sock for srv in server._server.servers for sock in srv.sockets]
    assert listening
    # asyncio sets TCP_NODELAY on accepted sockets only if the listener's proto is IPPROTO_TCP.
    assert all(sock.proto == socket.IPPROTO_TCP for sock in listening)


async def test_qido_paging(sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer]) -> None:
    client, _ = sint_jan
    everything = (await client.get("/studies")).json()
    assert len(everything) == len(demo_studies("demo-az-sint-jan")) > 4
    pages = []
    for offset in range(0, len(everything), 3):
        response = await client.get("/studies", params={"limit": 3, "offset": offset})
        pages.extend(response.json())
        more = offset + 3 < len(everything)
        assert ("warning" in response.headers) is more
        if more:
            assert response.headers["warning"].startswith("299 ")
    assert pages == everything
    assert (await client.get("/studies", params={"offset": len(everything)})).json() == []


async def test_qido_date_ranges(sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer]) -> None:
    client, _ = sint_jan
    held = demo_studies("demo-az-sint-jan")
    for key, low, high in [
        ("20210101-20221231", "20210101", "20221231"),
        ("20240101-", "20240101", "99999999"),
        ("-20181231", "00000000", "20181231"),
    ]:
        body = (await client.get("/studies", params={"StudyDate": key})).json()
        expected = {ds.StudyInstanceUID for ds in held if low <= ds.StudyDate <= high}
        assert expected, key
        assert json_uids(body) == expected, key


async def test_qido_series_instances_and_wado_of_a_report(
    sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer],
) -> None:
    client, _ = sint_jan
    study = study_uid(5, 1)  # "CT, SR" at AZ Sint-Jan
    series = (await client.get(f"/studies/{study}/series", params={"Modality": "SR"})).json()
    assert [s["0020000E"]["Value"] for s in series] == [[f"{study}.90"]]
    assert (await client.get(f"/studies/{study}/series", params={"Modality": "DOC"})).json() == []
    instances = (await client.get(f"/studies/{study}/series/{study}.90/instances")).json()
    assert [i["00080018"]["Value"] for i in instances] == [[f"{study}.90.1"]]
    wado = await client.get(
        f"/studies/{study}/series/{study}.90/instances/{study}.90.1",
        headers={"accept": 'multipart/related; type="application/dicom"'},
    )
    assert wado.status_code == 200
    assert wado.headers["content-type"].startswith('multipart/related; type="application/dicom"; boundary=')
    assert b"DICM" in wado.content
    # What this PACS does not hold is 404, a study it holds without a report has no report series.
    assert (await client.get(f"/studies/{study_uid(4, 3)}/series")).status_code == 404
    assert (await client.get(f"/studies/{study}/series/{study}.1/instances")).status_code == 404
    assert (await client.get(f"/studies/{study_uid(1, 4)}/series")).json() == []


async def test_qido_lists_and_no_match(sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer]) -> None:
    client, _ = sint_jan
    wanted = f"{study_uid(1, 2)},{study_uid(6, 1)},1.2.3"
    body = (await client.get("/studies", params={"StudyInstanceUID": wanted})).json()
    assert json_uids(body) == {study_uid(1, 2), study_uid(6, 1)}
    body = (await client.get("/studies", params={"ModalitiesInStudy": "CR", "fuzzymatching": "true"})).json()
    assert json_uids(body) == {study_uid(1, 4)}
    response = await client.get("/studies", params={"PatientID": "DEMO-404"})
    assert (response.status_code, response.json()) == (200, [])


@pytest.mark.parametrize(
    "params",
    [
        {"Nonsense": "1"},
        {"StudyDate": "2020"},
        {"StudyDate": "20200101-20210101-20220101"},
        {"limit": "0"},
        {"offset": "-1"},
        {"includefield": "NoSuchKeyword"},
        {"00400275.00401001": "X"},
        [("PatientID", "A"), ("PatientID", "B")],
    ],
)
async def test_qido_bad_parameters(
    sint_jan: tuple[httpx.AsyncClient, SimulatedQidoServer], params: Any
) -> None:
    client, _ = sint_jan
    response = await client.get("/studies", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert "DEMO" not in response.json()["error"]


# --- all three together --------------------------------------------------------------------------


async def test_start_demo_hospitals_gives_valid_reachable_sources() -> None:
    async with await start_demo_hospitals() as hospitals:
        config = hospitals.sources_config()
        settings = settings_from_mapping({"sources": config})
        assert [s.id for s in settings.sources] == [s.id for s in DEMO_SOURCES]
        found: set[str] = set()
        for source in settings.sources:
            if isinstance(source, DimseSourceSettings):
                peer = hospitals.dimse[source.id]
                assert (source.port, source.called_ae, source.calling_ae) == (
                    peer.port,
                    peer.ae_title,
                    "PACSFED",
                )
                query = study_query(PatientID="DEMO-001")
                _, studies = await asyncio.to_thread(c_find, peer, query)
                found |= uids(studies)
            else:
                async with httpx.AsyncClient(timeout=5) as client:
                    response = await client.get(f"{source.url}/studies?PatientID=DEMO-001")
                found |= json_uids(response.json())
        assert found == {study_uid(1, n) for n in range(1, 7)}
    assert hospitals.dimse == {}
    assert hospitals.dicomweb == {}
