"""The one attribute table agrees with the DICOM dictionary, and both adapters read all of it."""

from __future__ import annotations

import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword

from connectors.dicom_attributes import (
    RECORD_ATTRIBUTES,
    STUDY_INSTANCE_UID,
    STUDY_RETURN_KEYWORDS,
    Attribute,
)
from federation.models import StudyRecord

ROWS = (STUDY_INSTANCE_UID, *RECORD_ATTRIBUTES)


@pytest.mark.parametrize("attribute", ROWS, ids=lambda attribute: attribute.keyword)
def test_each_row_has_the_tag_and_vr_of_the_dictionary(attribute: Attribute) -> None:
    assert (attribute.tag, attribute.vr) == (
        tag_for_keyword(attribute.keyword),
        dictionary_VR(attribute.keyword),
    )
    assert attribute.json_tag == f"{attribute.tag:08X}"
    assert attribute.field in StudyRecord.model_fields


def test_every_return_key_asked_for_is_read() -> None:
    assert set(STUDY_RETURN_KEYWORDS) <= {attribute.keyword for attribute in ROWS}
    assert len({attribute.field for attribute in ROWS}) == len(ROWS)
