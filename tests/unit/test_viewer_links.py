"""Viewer links: templates checked at start-up, values percent-encoded, null when a value is missing."""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.errors import ConfigError
from federation.merge import merge_records
from federation.models import SourceInfo, StudyRecord
from federation.settings import settings_from_mapping
from federation.viewer import check_template, fill_template

TEMPLATE = "https://viewer.example/view?study={studyInstanceUid}"


def _source(viewer_url: object) -> dict[str, object]:
    return {"id": "a", "kind": "dicomweb", "url": "http://127.0.0.1:1/dicom-web", "viewer_url": viewer_url}


def test_the_contract_template_loads_and_reaches_the_connector() -> None:
    settings = settings_from_mapping({"sources": [_source(TEMPLATE)]})
    assert settings.sources[0].viewer_url == TEMPLATE


@pytest.mark.parametrize(
    ("template", "why"),
    [
        ("https://viewer.example/view?study={StudyInstanceUID}", "unknown placeholder"),
        ("https://viewer.example/view?patient={patientName}", "unknown placeholder"),
        ("https://viewer.example/view?study={studyInstanceUid", "brace"),
        ("https://viewer.example/view?study=}", "brace"),
        ("/view?study={studyInstanceUid}", "absolute"),
        ("javascript:alert({studyInstanceUid})", "absolute"),
        ("ftp://viewer.example/{studyInstanceUid}", "absolute"),
        ("https://{patientId}.viewer.example/", "host"),
        ("https://viewer.example/view ?study={studyInstanceUid}", "spaces"),
    ],
)
def test_bad_templates_are_refused_at_start_up_naming_the_key(template: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as caught:
        settings_from_mapping({"sources": [_source(template)]})
    assert "viewer_url" in str(caught.value)


def test_values_are_encoded_whole_so_a_value_cannot_move_the_link() -> None:
    template = check_template("https://v.example/s/{patientId}?acc={accessionNumber}&uid={studyInstanceUid}")
    url = fill_template(
        template, {"patientId": "../a b/#x", "accessionNumber": "A&b=c", "studyInstanceUid": "1.2.3"}
    )
    assert url == "https://v.example/s/..%2Fa%20b%2F%23x?acc=A%26b%3Dc&uid=1.2.3"


def test_a_missing_value_gives_no_link() -> None:
    assert fill_template("https://v.example/?acc={accessionNumber}", {"accessionNumber": None}) is None
    assert fill_template("https://v.example/?acc={accessionNumber}", {"accessionNumber": ""}) is None
    assert fill_template("https://v.example/static", {}) == "https://v.example/static"


@given(st.text(min_size=1, max_size=64))
def test_any_value_round_trips_through_the_query(value: str) -> None:
    url = fill_template("https://v.example/view?p={patientId}", {"patientId": value})
    assert url is not None
    parts = urllib.parse.urlsplit(url)
    assert (parts.netloc, parts.path) == ("v.example", "/view")
    assert urllib.parse.parse_qs(parts.query, keep_blank_values=True) == {"p": [value]}


def test_the_merge_gives_each_location_its_own_sources_link() -> None:
    sources = {
        "a": SourceInfo(id="a", name="A", kind="dimse", viewer_template=TEMPLATE),
        "b": SourceInfo(
            id="b", name="B", kind="dicomweb", viewer_template="https://b.example/{accessionNumber}"
        ),
        "c": SourceInfo(id="c", name="C", kind="dicomweb"),
    }
    records = [StudyRecord(source_id=s, study_instance_uid="1.2.3") for s in ("a", "b", "c")]
    (exam,) = merge_records(records, sources)
    links = {location.source.id: location.viewer_url for location in exam.locations}
    assert links == {"a": "https://viewer.example/view?study=1.2.3", "b": None, "c": None}
