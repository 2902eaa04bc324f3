"""Names in other scripts, end to end: real peers → connectors → GraphQL.

The seeded patients (``peers.dicomdata``): PA-JP1 ``Yamada^Tarou=山田^太郎=やまだ^たろう`` stored
in ``\\ISO 2022 IR 87`` (the PS3.5 H.3.1 example), PA-KR1 ``Hong^Gildong=洪^吉洞=홍^길동`` in
``\\ISO 2022 IR 149`` (PS3.5 I.2) and PA-GR1 ``Διονυσιος^Γεωργιος`` in ISO_IR 126, each held by
dcmqrscp_b, orthanc_a and orthanc_c.

What each peer sends (seen on dcmtk 3.6.7 and Orthanc 1.10.1):

- dcmqrscp answers in the stored character set when the query names none, so our ISO 2022
  decoding gets the stored escape sequences; asked for ISO_IR 192 or GB18030 it converts, except
  from ISO 2022 IR 87, which its iconv-based converter does not support: Japanese always comes
  back in ``\\ISO 2022 IR 87``.
- Orthanc re-encodes C-FIND and QIDO answers into its DefaultEncoding whatever the query asks.
  orthanc_c runs with ``Utf8``; orthanc_a keeps the default, Latin1, and drops what Latin-1
  cannot carry before the answer leaves it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from peers import free_port
from peers.dicomdata import CATALOGUE
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from connectors._normalize import _Reader
from integration.gql import history, running_app, statuses

pytestmark = pytest.mark.integration

PATIENTS = {
    # patient id: (PatientName as stored, StudyDescription, study key)
    "PA-JP1": ("Yamada^Tarou=山田^太郎=やまだ^たろう", "胸部 CT", "JP-CT"),
    "PA-GR1": ("Διονυσιος^Γεωργιος", "ΜΑΓΝΗΤΙΚΗ ΕΓΚΕΦΑΛΟΥ", "GR-MR"),
    "PA-KR1": ("Hong^Gildong=洪^吉洞=홍^길동", "흉부 CR", "KR-CR"),
}


def _sources(orthanc_a: Any, dcmqrscp_b: Any, orthanc_c: Any) -> dict[str, dict[str, Any]]:
    """Every way of asking the peers, by source id."""

    def dcmqrscp(source_id: str, charset: str | None) -> dict[str, Any]:
        return {
            "id": source_id,
            "kind": "dimse",
            "host": dcmqrscp_b.host,
            "port": dcmqrscp_b.port,
            "called_ae": dcmqrscp_b.aet,
            "query_charset": charset,
        }

    def orthanc_dimse(source_id: str, peer: Any, charset: str | None) -> dict[str, Any]:
        return {
            "id": source_id,
            "kind": "dimse",
            "host": peer.host,
            "port": peer.dicom_port,
            "called_ae": peer.aet,
            "query_charset": charset,
        }

    return {
        s["id"]: s
        for s in (
            dcmqrscp("dcmqrscp-stored", None),
            dcmqrscp("dcmqrscp-utf8", "ISO_IR 192"),
            dcmqrscp("dcmqrscp-gb18030", "GB18030"),
            orthanc_dimse("orthanc-c-dimse", orthanc_c, "ISO_IR 192"),
            orthanc_dimse("orthanc-c-dimse-nocharset", orthanc_c, None),
            {"id": "orthanc-c-qido", "kind": "dicomweb", "url": orthanc_c.dicomweb_url},
            orthanc_dimse("orthanc-a-dimse", orthanc_a, "ISO_IR 192"),
            {"id": "orthanc-a-qido", "kind": "dicomweb", "url": orthanc_a.dicomweb_url},
        )
    }


@pytest.fixture
def charset_sources(orthanc_a: Any, dcmqrscp_b: Any, orthanc_c: Any) -> dict[str, dict[str, Any]]:
    return _sources(orthanc_a, dcmqrscp_b, orthanc_c)


# The character set each answer arrives in, by source (dcmqrscp: by patient).
FAITHFUL = [
    "dcmqrscp-stored",  # ISO 2022 IR 87, ISO_IR 126, ISO 2022 IR 149: as stored
    "dcmqrscp-utf8",  # ISO 2022 IR 87 (not converted); ISO_IR 192 for the others
    "dcmqrscp-gb18030",  # ISO 2022 IR 87 (not converted); GB18030 for the others
    "orthanc-c-dimse",  # ISO_IR 192
    "orthanc-c-dimse-nocharset",  # ISO_IR 192 (DefaultEncoding Utf8)
    "orthanc-c-qido",  # DICOM JSON
]


@pytest.mark.parametrize("source_id", FAITHFUL)
async def test_names_in_other_scripts_come_back_exactly(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any, source_id: str
) -> None:
    async with running_app(make_settings([charset_sources[source_id]])) as client:
        for patient_id, (name, description, key) in PATIENTS.items():
            result = await history(client, patient_id)
            assert statuses(result) == {source_id: "OK"}, result["sources"]
            [exam] = result["exams"]
            assert exam["studyInstanceUid"] == CATALOGUE.study(key).study_uid
            assert exam["patientName"] == name.split("=")[0], patient_id
            assert exam["description"] == description, patient_id
            assert [s["warnings"] for s in result["sources"]] == [[]], patient_id


async def test_qido_returns_the_description(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any
) -> None:
    async with running_app(make_settings([charset_sources["orthanc-c-qido"]])) as client:
        result = await history(client, "PA-JP1")
    assert result["exams"][0]["description"] == "胸部 CT"


async def test_the_whole_fan_out_merges_each_patient_into_one_exam(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any
) -> None:
    sources = [charset_sources[s] for s in ("dcmqrscp-stored", "orthanc-c-dimse", "orthanc-c-qido")]
    async with running_app(make_settings(sources)) as client:
        for patient_id, (name, description, _key) in PATIENTS.items():
            result = await history(client, patient_id)
            assert result["complete"], result["sources"]
            [exam] = result["exams"]
            assert (exam["patientName"], exam["description"]) == (name.split("=")[0], description)
            assert {loc["source"]["id"] for loc in exam["locations"]} == {s["id"] for s in sources}
            assert all(not s["warnings"] for s in result["sources"])


async def test_a_latin1_orthanc_loses_what_latin1_cannot_carry(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any
) -> None:
    # Orthanc's DefaultEncoding Latin1 re-encodes answers whatever the query asks: Greek and
    # CJK characters are dropped by Orthanc itself. The answers are well-formed Latin-1, so they
    # decode without a warning; the Alphabetic group of the Japanese and Korean names survives.
    sources = [charset_sources["orthanc-a-dimse"], charset_sources["orthanc-a-qido"]]
    async with running_app(make_settings(sources)) as client:
        for source in sources:
            japanese = await history(client, "PA-JP1", sources=[source["id"]])
            greek = await history(client, "PA-GR1", sources=[source["id"]])
            assert japanese["exams"][0]["patientName"] == "Yamada^Tarou"
            if source["kind"] == "dimse":  # QIDO: see test_qido_returns_the_description
                assert japanese["exams"][0]["description"] == "CT"
            assert greek["exams"][0]["patientName"] is None
            assert all(not s["warnings"] for s in japanese["sources"] + greek["sources"])


def test_the_seed_catalogue_has_unique_study_uids_and_accession_numbers() -> None:
    # Study UIDs are derived from the accession number's first digit (peers.dicomdata._study).
    studies = CATALOGUE.studies
    assert len({s.study_uid for s in studies}) == len(studies)
    assert len({s.accession for s in studies}) == len(studies)


# -- The query side: what a C-FIND identifier with a non-ASCII value declares ----------------


class RecordingFindScp:
    """An in-process Study Root C-FIND SCP that keeps every identifier it receives, unanswered."""

    def __init__(self) -> None:
        self.port = free_port()
        self.identifiers: list[Dataset] = []
        self._lock = threading.Lock()
        self._ae = AE(ae_title="RECORDER")
        self._ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._server: Any = None

    def _on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        with self._lock:
            self.identifiers.append(event.identifier)
        yield from ()

    def __enter__(self) -> RecordingFindScp:
        self._server = self._ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_FIND, self._on_find)]
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()


@pytest.mark.parametrize(
    ("query_charset", "patient_id"),
    [
        (None, "ΔΙΟ-001"),  # nothing configured: the default repertoire cannot carry it
        ("ISO_IR 192", "ΔΙΟ-001"),
        ("ISO_IR 100", "MÜL-001"),  # configured and able to carry it
        ("ISO_IR 100", "ΔΙΟ-001"),  # configured but cannot carry it: UTF-8 instead, never wildcards
    ],
)
async def test_a_non_ascii_patient_id_is_sent_under_a_character_set_that_carries_it(
    make_settings: Any, query_charset: str | None, patient_id: str
) -> None:
    with RecordingFindScp() as scp:
        source = {
            "id": "recorder",
            "kind": "dimse",
            "host": "127.0.0.1",
            "port": scp.port,
            "called_ae": "RECORDER",
            "query_charset": query_charset,
        }
        async with running_app(make_settings([source])) as client:
            result = await history(client, patient_id)
    assert statuses(result) == {"recorder": "OK"}, result["sources"]
    [identifier] = scp.identifiers
    read = _Reader(identifier)
    assert read.values("PatientID") == [patient_id]
    assert read.warnings == []
    if query_charset is not None:
        assert read.character_set_terms[0] in (query_charset, "ISO_IR 192")
