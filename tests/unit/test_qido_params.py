"""QIDO-RS query parameters (PS3.18 8.3.4) read into searches: keywords and tags, lists, controls, refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from starlette.datastructures import QueryParams

from federation.errors import QueryError
from federation.models import DateRange
from web.dicomweb.qido_params import DEFAULT_LIMIT, read_query


def query(text: str, level: str = "studies"):  # type: ignore[no-untyped-def]
    return read_query(QueryParams(text), level)


def test_ohifs_study_list_query_reads_as_a_patient_search() -> None:
    read = query("00100020=PA-1&limit=101&offset=0&fuzzymatching=false&includefield=00081030,00080060")
    search = read.study_search()
    assert search.patient is not None
    assert (search.patient.patient_id, read.limit, read.offset, read.fuzzy) == ("PA-1", 101, 0, False)
    assert read.include == {"StudyDescription", "Modality"}
    assert read.ignored == ()


def test_study_keys_lists_and_ranges() -> None:
    read = query(
        "PatientID=P&IssuerOfPatientID=HOSP_A&StudyDate=20240101-&ModalitiesInStudy=CT,MR"
        "&ModalitiesInStudy=US&StudyInstanceUID=1.2.3\\1.2.4&StudyDescription=x"
    )
    first = read.study_search()
    assert first.study_instance_uids == ("1.2.3", "1.2.4")  # one search, a UID list
    assert first.patient is not None and first.patient.issuer == "HOSP_A"
    assert first.study_date == DateRange(start=dt.date(2024, 1, 1))
    assert first.modalities == ("CT", "MR", "US")
    assert read.ignored == ("StudyDescription",)
    assert read.limit == DEFAULT_LIMIT


def test_a_name_is_a_pattern_and_series_and_instances_read_their_own_keys() -> None:
    search = query("PatientName=Doe^J*").study_search()
    assert (search.patient, search.patient_name) == (None, "Doe^J*")
    series = query("StudyInstanceUID=1.2&Modality=MR&SeriesInstanceUID=1.2.3", "series").series_search(None)
    assert (series.study_instance_uid, series.series_instance_uids, series.modality) == (
        "1.2",
        ("1.2.3",),
        "MR",
    )
    instance = query("SOPInstanceUID=1.2.3.4", "instances").instance_search("1.2", "1.2.3")
    assert instance.sop_instance_uids == ("1.2.3.4",)


@pytest.mark.parametrize(
    ("text", "level", "code"),
    [
        ("StudyDate=20240101", "studies", "BAD_QUERY"),  # a date alone would list whole archives
        ("", "studies", "BAD_QUERY"),
        ("PatientID=A&PatientID=B", "studies", "BAD_QUERY"),
        ("PatientID=PA-*", "studies", "BAD_PATIENT_INPUT"),
        ("IssuerOfPatientID=X&AccessionNumber=A", "studies", "BAD_QUERY"),
        ("PatientID=P&StudyDate=2024", "studies", "BAD_QUERY"),
        ("PatientID=P&limit=-1", "studies", "BAD_QUERY"),
        ("PatientID=P&limit=5000", "studies", "BAD_QUERY"),
        ("PatientID=P&fuzzymatching=maybe", "studies", "BAD_QUERY"),
        ("Modality=CT", "series", "BAD_QUERY"),  # /series needs the study
    ],
)
def test_malformed_or_too_wide_searches_are_refused(text: str, level: str, code: str) -> None:
    def searches() -> object:
        read = query(text, level)
        return read.study_search() if level == "studies" else read.series_search(None)

    with pytest.raises(QueryError) as caught:
        searches()
    assert caught.value.code == code
