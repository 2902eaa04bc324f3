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

What each peer matches a PatientName key against (seen by hand with findscu and curl): the whole
PN, all groups, so ``山田*`` finds nothing and ``*山田*`` finds PA-JP1. Orthanc's C-FIND (either
DefaultEncoding) matches kanji, kana, hangul and Greek keys sent under ISO_IR 192; dcmqrscp matches
hangul and Greek (case-sensitively) but nothing stored in ISO 2022 IR 87. Orthanc's QIDO does not
percent-decode values at all (``%5E``, ``%2A``, ``%C3%BC`` match nothing) and answers HTTP 400 to
raw UTF-8 in the request line: no non-ASCII key can match there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from peers import free_port
from peers.dicomdata import CATALOGUE
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from connectors.normalize import DatasetReader
from federation.cache.elasticsearch import MAPPING, ElasticsearchExamCache
from integration.gql import graphql, history, running_app, statuses

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
    read = DatasetReader(identifier)
    assert read.values("PatientID") == [patient_id]
    assert read.warnings == []
    if query_charset is not None:
        assert read.character_set_terms[0] in (query_charset, "ISO_IR 192")


# -- Names in every script: the groups, a search in any script, the keys sent -----------------

NAMES_QUERY = """
query Names($patient: PatientInput!, $sources: [ID!], $freshness: Freshness, $candidates: Boolean) {
  patientHistory(patient: $patient, sources: $sources, freshness: $freshness, includeCandidates: $candidates) {
    complete
    exams { studyInstanceUid patientName patientNameGroups { alphabetic ideographic phonetic } }
    candidates {
      score reasons patientId source { id } patientName
      patientNameGroups { alphabetic ideographic phonetic }
    }
    sources { source { id } status warnings }
  }
}
"""


async def names(client: Any, patient: dict[str, Any], **variables: Any) -> dict[str, Any]:
    """patientHistory with the names' groups; fails on GraphQL errors."""
    body = await graphql(client, NAMES_QUERY, patient=patient, **variables)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]["patientHistory"]
    return result


def groups_of(name: str) -> dict[str, str | None]:
    """The patientNameGroups a stored PN should come back as."""
    alphabetic, ideographic, phonetic = (*name.split("="), "", "")[:3]
    return {
        "alphabetic": alphabetic or None,
        "ideographic": ideographic or None,
        "phonetic": phonetic or None,
    }


def reasons_of(candidate: dict[str, Any]) -> set[str]:
    """The candidate's reasons, whatever their case (strings or enum values)."""
    return {reason.lower() for reason in candidate["reasons"]}


@pytest.mark.parametrize("source_id", FAITHFUL)
async def test_every_group_of_a_name_comes_back(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any, source_id: str
) -> None:
    async with running_app(make_settings([charset_sources[source_id]])) as client:
        for patient_id, (name, _description, _key) in PATIENTS.items():
            result = await names(client, {"id": patient_id})
            [exam] = result["exams"]
            assert exam["patientName"] == name.split("=")[0], patient_id
            assert exam["patientNameGroups"] == groups_of(name), patient_id


async def test_a_latin1_orthanc_gives_the_alphabetic_group_only(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any
) -> None:
    sources = [charset_sources["orthanc-a-dimse"], charset_sources["orthanc-a-qido"]]
    async with running_app(make_settings(sources)) as client:
        for source in sources:
            result = await names(client, {"id": "PA-JP1"}, sources=[source["id"]])
            [exam] = result["exams"]
            assert exam["patientNameGroups"] == groups_of("Yamada^Tarou"), source["id"]


async def test_the_merged_exam_keeps_the_groups_a_latin1_source_lost(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any
) -> None:
    # Orthanc A (Latin-1) first in the configuration: its name wins patientName, not the groups.
    sources = [charset_sources["orthanc-a-dimse"], charset_sources["orthanc-c-dimse"]]
    async with running_app(make_settings(sources)) as client:
        result = await names(client, {"id": "PA-KR1"})
    [exam] = result["exams"]
    assert exam["patientName"] == "Hong^Gildong"
    assert exam["patientNameGroups"] == groups_of(PATIENTS["PA-KR1"][0])


@pytest.mark.parametrize(
    ("family", "given"),
    [("山田", "太郎"), ("やまだ", "たろう"), ("Yamada", "Tarou")],
)
async def test_a_search_in_kanji_kana_or_romaji_matches_the_family_name(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any, family: str, given: str
) -> None:
    source_ids = ["orthanc-c-dimse", "orthanc-c-qido", "dcmqrscp-stored"]
    async with running_app(make_settings([charset_sources[s] for s in source_ids])) as client:
        patient = {"familyName": family, "givenName": given, "birthDate": "1965-03-17", "sex": "M"}
        result = await names(client, patient)
    found = {c["source"]["id"]: c for c in result["candidates"] if c["patientId"] == "PA-JP1"}
    assert set(found) == set(source_ids), result["sources"]
    for source_id, candidate in found.items():
        assert {"family_name_equal", "given_name_equal"} <= reasons_of(candidate), source_id
        assert candidate["score"] == 1.0, source_id
        assert candidate["patientNameGroups"] == groups_of(PATIENTS["PA-JP1"][0]), source_id


async def test_a_hangul_name_key_finds_a_patient_the_birth_date_does_not(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any
) -> None:
    # Born 1987-09-09, searched with a digit wrong: only the name key, sent in hangul under
    # ISO_IR 192, can find the patient (dcmqrscp converts it to ISO 2022 IR 149 to match).
    source_ids = ["dcmqrscp-utf8", "orthanc-c-dimse"]
    async with running_app(make_settings([charset_sources[s] for s in source_ids])) as client:
        result = await names(client, {"familyName": "홍", "givenName": "길동", "birthDate": "1987-09-19"})
    assert {s["source"]["id"]: s["status"] for s in result["sources"]} == dict.fromkeys(source_ids, "OK")
    found = {c["source"]["id"]: c for c in result["candidates"] if c["patientId"] == "PA-KR1"}
    assert set(found) == set(source_ids)
    for candidate in found.values():
        assert {"family_name_equal", "given_name_equal", "birth_date_one_digit"} <= reasons_of(candidate)


async def test_a_name_search_with_a_wildcard_finds_the_patient_over_qido(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any
) -> None:
    # Another birth date: only the name key (Yamada*, sent with its '*' as it is) finds the study.
    sources = [charset_sources["orthanc-c-qido"], charset_sources["orthanc-a-qido"]]
    async with running_app(make_settings(sources)) as client:
        result = await names(client, {"familyName": "Yamada", "birthDate": "1965-03-18"})
    found = {c["source"]["id"] for c in result["candidates"] if c["patientId"] == "PA-JP1"}
    assert found == {"orthanc-c-qido", "orthanc-a-qido"}, result["sources"]


async def test_orthanc_understands_the_accept_header_of_every_qido_request(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any, orthanc_c: Any
) -> None:
    async with running_app(make_settings([charset_sources["orthanc-c-qido"]])) as client:
        await names(client, {"id": "PA-JP1"})
        await names(client, {"familyName": "Yamada", "birthDate": "1965-03-17"})
    # Orthanc writes the line while it answers, before the answer leaves it.
    log = orthanc_c.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Unsupported return MIME type" not in log


async def test_the_groups_survive_the_cache(
    charset_sources: dict[str, dict[str, Any]], make_settings: Any, elasticsearch: Any, index_prefix: str
) -> None:
    # An index made by a version without the groups field (layout 1): start-up puts it in the read
    # alias as it is, and answers go to the current period's index, which has the field.
    index = f"{index_prefix}-exams"
    old = {k: v for k, v in MAPPING["properties"].items() if k != "patient_name_groups"}
    created = httpx.put(
        f"{elasticsearch.url}/{index}",
        json={"mappings": {"dynamic": "strict", "properties": old}, "settings": {"number_of_replicas": 0}},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    async with running_app(make_settings([charset_sources["orthanc-c-dimse"]])) as client:
        live = await names(client, {"id": "PA-KR1"}, freshness="LIVE")
        cached = await names(client, {"id": "PA-KR1"}, freshness="CACHE_ONLY")
    assert [s["status"] for s in cached["sources"]] == ["OK"], cached["sources"]
    assert cached["exams"] == live["exams"]
    assert cached["exams"][0]["patientNameGroups"] == groups_of(PATIENTS["PA-KR1"][0])
    httpx.post(f"{elasticsearch.url}/{index_prefix}-cache-exams/_refresh", timeout=10).raise_for_status()
    cache = ElasticsearchExamCache(make_settings([]).cache)
    try:  # the cache is searchable by the family name of every group
        found = [await cache.search_by_name(name) for name in ("Hong", "洪", "홍", "Kim")]
    finally:
        await cache.aclose()
    assert [[r.patient_id for r in records] for records in found] == [["PA-KR1"]] * 3 + [[]]


@pytest.mark.parametrize(("setting", "keys"), [(None, {"*山田*", ""}), (False, {""})])
async def test_a_name_key_beyond_ascii_goes_only_to_sources_that_take_it(
    make_settings: Any, setting: bool | None, keys: set[str]
) -> None:
    with RecordingFindScp() as scp:
        source = {
            "id": "recorder",
            "kind": "dimse",
            "host": "127.0.0.1",
            "port": scp.port,
            "called_ae": "RECORDER",
            "non_ascii_name_keys": setting,
        }
        async with running_app(make_settings([source])) as client:
            await names(client, {"familyName": "山田", "birthDate": "1965-03-17"})
    readers = [DatasetReader(identifier) for identifier in scp.identifiers]
    assert {read.text("PatientName") or "" for read in readers} == keys
    for read in readers:
        if read.text("PatientName"):
            assert read.character_set_terms == ["ISO_IR 192"]
        assert read.warnings == []
