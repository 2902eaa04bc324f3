"""UID list matching (PS3.4 C.2.2.2.2) and a PatientName beside a PatientID, through the door and the facade."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from starlette.datastructures import QueryParams
from unit.test_search_service import JAN, JUN, Catalog, make, reader, statuses, study

from connectors.base import SourceAnswer
from dicom_facade import facade_from_settings
from federation.access.principals import AccessContext, Principal, PrincipalKind, ShareGrant
from federation.audit.records import AuditOutcome
from federation.errors import AccessError, QueryError, SourceUnreachable
from federation.identity.patterns import matches_name_pattern
from federation.models import Deadline, InstanceQuery, PatientQuery, SeriesQuery, SourceStatus, StudyQuery
from federation.search import MAX_UIDS, InstanceSearch, SeriesSearch, StudySearch
from federation.settings import DicomFacadeSettings
from web.dicomweb.qido_params import read_query


class ListCatalog(Catalog):
    """A source whose connector sends a UID list whole, as dcmqrscp and Orthanc take it."""

    supports_uid_lists = True


def asked_uids(connector: Catalog) -> list[tuple[str | None, tuple[str, ...]]]:
    return [
        (q.study_instance_uid, q.study_instance_uids) for q in connector.asked if isinstance(q, StudyQuery)
    ]


async def test_a_uid_list_is_one_audited_search_each_source_asked_once_where_it_takes_a_list() -> None:
    a = ListCatalog("a", [study("1.1", "A-1", JAN), study("1.2", "A-2", JUN), study("1.9", "A-9", JUN)])
    b = Catalog("b", [study("1.2", "B-2", JUN), study("1.3", "B-3", JAN)])
    service, audit = make(a, b)
    search = StudySearch(study_instance_uids=("1.1", "1.2", "1.3", "1.2"))
    result = await service.search_studies(search, reader())
    assert sorted(m.exam.study_instance_uid for m in result.studies) == ["1.1", "1.2", "1.3"]
    assert statuses(result) == {"a": SourceStatus.OK, "b": SourceStatus.OK}
    assert asked_uids(a) == [(None, ("1.1", "1.2", "1.3"))]  # once, the whole list
    assert asked_uids(b) == [("1.1", ()), ("1.2", ()), ("1.3", ())]  # once per UID
    access, outcome = audit.records  # one request, one access record and one outcome
    assert access.detail == "study search; studies 1.1, 1.2, 1.3; access"
    assert sorted(outcome.patient_ids) == ["A-1^^^", "A-2^^^", "B-3^^^"]


class OneAtATime(Catalog):
    """A source whose connector takes one StudyInstanceUID a request: it counts requests running at once."""

    def __init__(self, source_id: str, max_concurrency: int, failing: str | None = None) -> None:
        super().__init__(source_id, [study(f"6.{n}", "P", JAN) for n in range(8)])
        self.settings = self.settings.model_copy(update={"max_concurrency": max_concurrency})
        self.failing, self.running, self.most, self.cancelled = failing, 0, 0, 0

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if query.study_instance_uid == self.failing:
                await asyncio.sleep(0.01)
                raise SourceUnreachable("down")
            await asyncio.sleep(0.02 if self.failing is None else 5)
            return await super().find_studies(query, deadline)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


async def test_a_uid_list_asked_one_uid_a_request_keeps_to_the_sources_slots() -> None:
    a = OneAtATime("a", max_concurrency=3)
    service, _ = make(a)
    uids = tuple(f"6.{n}" for n in range(8))
    result = await service.search_studies(StudySearch(study_instance_uids=uids), reader())
    assert sorted(m.exam.study_instance_uid for m in result.studies) == sorted(uids)
    assert a.most == 3  # the source's max_concurrency, not one request per UID at once
    slots = service.engine._limits["a"]
    await slots.acquire()  # another caller's request holds one of the three
    await slots.acquire()  # and another's
    a.most = 0
    result = await service.search_studies(StudySearch(study_instance_uids=uids), reader())
    assert (len(result.studies), a.most) == (8, 1)  # one at a time, on the search's own slot
    slots.release()
    slots.release()


async def test_a_failed_request_of_a_uid_list_stops_the_others_before_the_source_is_judged() -> None:
    a = OneAtATime("a", max_concurrency=4, failing="6.1")
    service, _ = make(a)
    uids = tuple(f"6.{n}" for n in range(8))
    result = await service.search_studies(StudySearch(study_instance_uids=uids), reader())
    assert statuses(result) == {"a": SourceStatus.UNREACHABLE}
    assert (a.running, a.cancelled, a.most) == (0, 3, 4)  # nothing left running past the answer
    assert service.engine._limits["a"]._value == 4  # every slot given back


async def test_a_uid_list_of_one_is_a_single_uid_and_a_list_is_checked() -> None:
    assert StudySearch(study_instance_uids=("1.2",)).study_keys().study_instance_uid == "1.2"
    for refused in (("1.2", "1.*"), tuple(f"1.{n}" for n in range(MAX_UIDS + 1))):
        with pytest.raises(QueryError) as caught:
            StudySearch(study_instance_uids=refused)
        assert caught.value.code == "BAD_QUERY"
    with pytest.raises(QueryError):
        StudySearch(study_instance_uid="1.1", study_instance_uids=("1.2", "1.3"))


async def test_series_and_instance_uid_lists_keep_the_listed_ones() -> None:
    a = Catalog("a", [study("3.1", "A", JAN)])
    service, audit = make(a)
    series = await service.search_series(
        SeriesSearch(study_instance_uid="3.1", series_instance_uids=("3.1.2", "3.1.7")), reader()
    )
    assert [m.record.series_instance_uid for m in series.series] == ["3.1.2"]
    assert audit.records[-1].detail == "series search; study 3.1; 1 series"
    found = await service.search_instances(
        InstanceSearch(
            study_instance_uid="3.1", series_instance_uid="3.1.1", sop_instance_uids=("3.1.1.3", "3.1.1.1")
        ),
        reader(),
    )
    assert [m.record.sop_instance_uid for m in found.instances] == ["3.1.1.1", "3.1.1.3"]


async def test_one_series_or_instance_uid_is_sent_to_the_source_as_the_single_key() -> None:
    # A list of one asked as a listing would stop at max_results: one image of a 3,000-image series lost.
    a = Catalog("a", [study("3.1", "A", JAN)])
    service, _ = make(a)
    instances = read_query(QueryParams("SOPInstanceUID=3.1.1.2"), "instances").instance_search("3.1", "3.1.1")
    found = await service.search_instances(instances, reader())
    assert a.asked[-1] == InstanceQuery(
        study_instance_uid="3.1", series_instance_uid="3.1.1", sop_instance_uid="3.1.1.2"
    )
    assert [m.record.sop_instance_uid for m in found.instances] == ["3.1.1.2"]
    series = await service.search_series(
        read_query(QueryParams("SeriesInstanceUID=3.1.2"), "series").series_search("3.1"), reader()
    )
    assert a.asked[-1] == SeriesQuery(study_instance_uid="3.1", series_instance_uid="3.1.2")
    assert [m.record.series_instance_uid for m in series.series] == ["3.1.2"]
    await service.search_series(SeriesSearch(study_instance_uid="3.1", series_instance_uid="3.1.2"), reader())
    assert a.asked[-1] == SeriesQuery(study_instance_uid="3.1", series_instance_uid="3.1.2")
    listed = InstanceSearch(
        study_instance_uid="3.1", series_instance_uid="3.1.1", sop_instance_uids=("3.1.1.1", "3.1.1.3")
    )
    await service.search_instances(listed, reader())
    assert a.asked[-1] == InstanceQuery(
        study_instance_uid="3.1", series_instance_uid="3.1.1"
    )  # a list: listed, kept
    for both in (
        lambda: SeriesSearch(
            study_instance_uid="3.1", series_instance_uid="3.1.1", series_instance_uids=("3.1.2",)
        ),
        lambda: InstanceSearch(
            study_instance_uid="3.1",
            series_instance_uid="3.1.1",
            sop_instance_uid="1",
            sop_instance_uids=("2",),
        ),
    ):
        with pytest.raises(QueryError):
            both()


async def test_with_a_patient_id_the_name_pattern_is_matched_by_pacsfed() -> None:
    a = Catalog(
        "a",
        [
            study("5.1", "123", JAN, patient_name="Smith^John"),
            study("5.2", "123", JUN, patient_name="JONES^MARY"),  # the id reused for another patient
            study("5.3", "123", JUN),  # no name given: cannot be shown to be this patient's
        ],
    )
    service, _ = make(a)
    search = StudySearch(patient=PatientQuery(patient_id="123"), patient_name="SMITH*")
    result = await service.search_studies(search, reader())
    assert [m.exam.study_instance_uid for m in result.studies] == ["5.1"]
    assert all(q.patient_name is None for q in a.asked if isinstance(q, StudyQuery))  # asked by id alone
    everything = await service.search_studies(StudySearch(patient=PatientQuery(patient_id="123")), reader())
    assert len(everything.studies) == 3
    short = StudySearch(patient=PatientQuery(patient_id="123"), patient_name="S*")  # an id narrows enough
    assert short.patient_name == "S*"


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("SMITH*", "Smith^John", True),
        ("smith^john", "SMITH^JOHN^^^", True),
        ("Muller^Anna", "Müller^Anna", True),
        ("Müller^A*", "MULLER^ANNA", True),
        ("M?LLER*", "Müller^Anna", True),
        ("Van den*", "VANDENBOSSCHE^JAN", True),
        ("SMITH", "Smith^John", False),
        ("SMITH*", "Jones^Mary", False),
        ("SMITH*", None, False),
        ("山田*", "Yamada^Tarou=山田^太郎=やまだ^たろう", True),
        ("Yamada^Tarou=山田*", "YAMADA^TAROU", True),
        ("*", None, True),
    ],
)
def test_a_name_pattern_matches_folded_names(pattern: str, name: str | None, matches: bool) -> None:
    assert matches_name_pattern(pattern, [name]) is matches


def test_qido_reads_a_uid_list_and_a_name_beside_an_id_into_one_search() -> None:
    params = QueryParams(
        "PatientID=123&PatientName=SMITH*&StudyInstanceUID=1.2.3,1.2.4&StudyInstanceUID=1.2.5"
    )
    search = read_query(params, "studies").study_search()
    assert search.study_instance_uids == ("1.2.3", "1.2.4", "1.2.5")
    assert (search.patient, search.patient_name) == (PatientQuery(patient_id="123"), "SMITH*")


async def test_the_facade_reads_uid_lists_and_a_name_beside_an_id() -> None:
    a = ListCatalog(
        "a",
        [
            study("7.1", "123", JAN, patient_name="SMITH^JOHN"),
            study("7.2", "123", JUN, patient_name="JONES^MARY"),
            study("7.3", "123", JUN, patient_name="SMITH^JOHN"),
        ],
    )
    service, _ = make(a)
    settings = DicomFacadeSettings(port=1, allowed_calling_aes={"WS": {"scopes": ["history:read"]}})
    server = facade_from_settings(settings.model_copy(update={"port": 0}), service)
    await server.start()

    def find(level: str = "STUDY", **keys: object) -> list[str]:
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(identifier, keyword, value)
        ae = AE(ae_title="WS")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", server.port, ae_title="PACSFED")
        found = [i for s, i in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind) if i]
        assoc.release()
        key = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID"}.get(level, "SOPInstanceUID")
        return sorted(str(i.get(key, "")) for i in found)

    try:
        assert await asyncio.to_thread(find, PatientID="123", PatientName="SMITH*", StudyInstanceUID="") == [
            "7.1",
            "7.3",
        ]
        assert await asyncio.to_thread(find, StudyInstanceUID=["7.1", "7.2"]) == ["7.1", "7.2"]
        listed = await asyncio.to_thread(
            find, PatientID="123", PatientName="Smith^John", StudyInstanceUID="7.2\\7.3"
        )
        assert listed == ["7.3"]
        series = await asyncio.to_thread(
            find, "SERIES", StudyInstanceUID="7.1", SeriesInstanceUID=["7.1.2", "7.1.9"]
        )
        assert series == ["7.1.2"]
        images = await asyncio.to_thread(
            find,
            "IMAGE",
            StudyInstanceUID="7.1",
            SeriesInstanceUID="7.1.1",
            SOPInstanceUID="7.1.1.2\\7.1.1.3",
        )
        assert images == ["7.1.1.2", "7.1.1.3"]
        one = await asyncio.to_thread(
            find, "IMAGE", StudyInstanceUID="7.1", SeriesInstanceUID="7.1.1", SOPInstanceUID="7.1.1.2"
        )
        assert one == ["7.1.1.2"]
        assert a.asked[-1] == InstanceQuery(
            study_instance_uid="7.1", series_instance_uid="7.1.1", sop_instance_uid="7.1.1.2"
        )
        await asyncio.to_thread(find, "SERIES", StudyInstanceUID="7.1", SeriesInstanceUID="7.1.2")
        assert a.asked[-1] == SeriesQuery(study_instance_uid="7.1", series_instance_uid="7.1.2")
    finally:
        await server.stop()


async def test_a_share_code_searches_a_uid_list_only_when_it_holds_every_listed_study() -> None:
    service, audit = make(ListCatalog("a", [study("8.1", "P", JAN), study("8.2", "P", JUN)]))
    grant = ShareGrant(
        "s1", PatientQuery(patient_id="P"), frozenset({"8.1"}), dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    )
    shared = AccessContext(Principal("share:s1", PrincipalKind.SHARE, frozenset(), share=grant), None, "r")
    with pytest.raises(AccessError):
        await service.search_studies(StudySearch(study_instance_uids=("8.1", "8.2")), shared)
    assert audit.records[-1].outcome is AuditOutcome.DENIED
    found = await service.search_studies(StudySearch(study_instance_uids=("8.1",)), shared)
    assert [m.exam.study_instance_uid for m in found.studies] == ["8.1"]
