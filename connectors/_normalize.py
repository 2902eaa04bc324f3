"""Turn one study-level DICOM identifier (from C-FIND or DICOM JSON) into a StudyRecord.

Both connectors go through here, so DIMSE and DICOMweb answers are normalized the same way.
Values are read per PS3.5 6.2 (VRs DA, TM, PN, IS, CS) and decoded per the identifier's
SpecificCharacterSet (PS3.5 6.1); undecodable text yields replacement characters and a warning.
"""

from __future__ import annotations

import datetime as dt
import logging
import unicodedata
import warnings
from collections.abc import Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from federation.models import StudyRecord

# pydicom logs invalid values verbatim at WARNING level, and values here are names and birth
# dates: keep its logger quiet; the problems reach the source status as warnings instead.
logging.getLogger("pydicom").setLevel(logging.ERROR)

RETRIEVE_URL_TAG = 0x00081190

# Study-level return keys requested from every source (PS3.4 C.6.2.1.2, Table C.6-5).
STUDY_RETURN_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "StudyDescription",
    "ReferringPhysicianName",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "RetrieveAETitle",
)


class _Reader:
    """Reads typed values out of a dataset, collecting warnings instead of failing."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.warnings: list[str] = []

    def raw(self, keyword: str) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                element = self.dataset.get(keyword)
            except Exception:
                self.warnings.append(f"{keyword}: unreadable value")
                return None
        for warning in caught:
            if "decode" in str(warning.message):
                self.warnings.append(f"{keyword}: text not decodable with the declared character set")
            else:
                self.warnings.append(f"{keyword}: invalid value")
        if element is None:
            return None
        return element

    def text(self, keyword: str) -> str | None:
        value = self.raw(keyword)
        if value is None:
            return None
        if isinstance(value, MultiValue):
            value = "\\".join(str(item) for item in value)
        if isinstance(value, bytes):
            self.warnings.append(f"{keyword}: undecoded bytes")
            value = value.decode("ascii", errors="replace")
        text = unicodedata.normalize("NFC", str(value)).strip(" \x00")
        return text or None

    def person_name(self, keyword: str) -> str | None:
        value = self.raw(keyword)
        if value is None:
            return None
        if isinstance(value, MultiValue):
            value = value[0] if value else None
            if value is None:
                return None
        name = value.alphabetic if isinstance(value, PersonName) else str(value).split("=")[0]
        name = unicodedata.normalize("NFC", name).strip(" \x00")
        if not name:
            # Only ideographic or phonetic groups were sent: keep them rather than lose the name.
            name = unicodedata.normalize("NFC", str(value)).strip(" \x00=")
        return name or None

    def strings(self, keyword: str) -> tuple[str, ...]:
        value = self.raw(keyword)
        if value is None:
            return ()
        items: Iterable[Any] = (
            value if isinstance(value, MultiValue | list | tuple) else str(value).split("\\")
        )
        return tuple(dict.fromkeys(s for s in (str(item).strip() for item in items) if s))

    def date(self, keyword: str) -> dt.date | None:
        text = self.text(keyword)
        if text is None:
            return None
        parsed = parse_da(text)
        if parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def time(self, keyword: str) -> dt.time | None:
        text = self.text(keyword)
        if text is None:
            return None
        parsed = parse_tm(text)
        if parsed is None:
            self.warnings.append(f"{keyword}: invalid value")
        return parsed

    def integer(self, keyword: str) -> int | None:
        text = self.text(keyword)
        if text is None:
            return None
        try:
            return int(float(text))
        except ValueError:
            self.warnings.append(f"{keyword}: invalid value")
            return None


def parse_da(text: str) -> dt.date | None:
    """A DA value (``YYYYMMDD``, or the ACR-NEMA ``YYYY.MM.DD``) as a date, or None."""
    digits = text.strip().replace(".", "").replace("-", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:8]))
    except ValueError:
        return None


def parse_tm(text: str) -> dt.time | None:
    """A TM value (``HH[MM[SS[.F{1,6}]]]``, or ``HH:MM:SS``) as a time, or None."""
    text = text.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    hour, minute, second = int(whole[:2]), int(whole[2:4] or 0), int(whole[4:6] or 0)
    micro = int((fraction + "000000")[:6]) if fraction else 0
    try:
        # PS3.5 allows a leap second (60); clamp it rather than reject the study.
        return dt.time(hour, minute, min(second, 59), micro)
    except ValueError:
        return None


def study_record_from_dataset(
    dataset: Dataset, source_id: str, default_retrieve_ae: str | None = None
) -> StudyRecord | None:
    """The StudyRecord for one identifier, or None when it carries no StudyInstanceUID.

    ``default_retrieve_ae`` stands in for RetrieveAETitle (0008,0054) when the peer leaves it out:
    the AE that answered the C-FIND is then the one to C-MOVE from.
    """
    read = _Reader(dataset)
    uid = read.text("StudyInstanceUID")
    if uid is None:
        return None
    retrieve_url = None
    if RETRIEVE_URL_TAG in dataset:
        value = dataset[RETRIEVE_URL_TAG].value
        retrieve_url = str(value).strip() or None if value else None
    retrieve_ae = read.strings("RetrieveAETitle")
    return StudyRecord(
        source_id=source_id,
        study_instance_uid=uid,
        patient_id=read.text("PatientID"),
        issuer_of_patient_id=read.text("IssuerOfPatientID"),
        patient_name=read.person_name("PatientName"),
        patient_birth_date=read.date("PatientBirthDate"),
        patient_sex=read.text("PatientSex"),
        study_date=read.date("StudyDate"),
        study_time=read.time("StudyTime"),
        accession_number=read.text("AccessionNumber"),
        modalities=read.strings("ModalitiesInStudy"),
        description=read.text("StudyDescription"),
        referring_physician_name=read.person_name("ReferringPhysicianName"),
        number_of_series=read.integer("NumberOfStudyRelatedSeries"),
        number_of_instances=read.integer("NumberOfStudyRelatedInstances"),
        retrieve_ae_title=retrieve_ae[0] if retrieve_ae else default_retrieve_ae,
        retrieve_url=retrieve_url,
        specific_character_set=read.strings("SpecificCharacterSet"),
        warnings=tuple(dict.fromkeys(read.warnings)),
    )
