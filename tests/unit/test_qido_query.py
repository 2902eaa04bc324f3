"""The QIDO-RS query string: UTF-8 percent-encoding, with the wildcards left as they are."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from connectors.dicomweb import page_query, query_string
from federation.models import StudyQuery


def test_wildcards_stay_and_everything_else_is_percent_encoded() -> None:
    encoded = query_string({"PatientName": "Van den*^M?ller=&+/", "StudyDescription": "胸部 CT"})
    assert encoded == (
        b"PatientName=Van%20den*%5EM?ller%3D%26%2B%2F&StudyDescription=%E8%83%B8%E9%83%A8%20CT"
    )


def test_a_page_repeats_includefield_and_keeps_the_name_pattern() -> None:
    encoded = page_query(StudyQuery(patient_name="*山田*"), 100, 0).decode("ascii")
    assert encoded.startswith("includefield=PatientID&includefield=IssuerOfPatientID&")
    assert "&PatientName=*%E5%B1%B1%E7%94%B0*&" in encoded
    assert encoded.endswith("&limit=100&offset=0")


@given(st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z.]{0,20}", fullmatch=True), st.text(max_size=20)))
def test_the_query_decodes_back_to_its_values(params: dict[str, str]) -> None:
    encoded = query_string(params)
    # Only unreserved characters, percent escapes, the delimiters and the two wildcards are sent raw.
    assert re.fullmatch(rb"[A-Za-z0-9\-._~%=&*?]*", encoded)
    assert parse_qsl(encoded.decode("ascii"), keep_blank_values=True) == list(params.items())
