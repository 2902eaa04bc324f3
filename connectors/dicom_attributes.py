"""The study attributes a StudyRecord is read from: one table, for every input (C-FIND, QIDO-RS).

Each row names the attribute (tag, keyword, VR), the StudyRecord field it fills, and how its
value is read (:class:`Kind`, one converter each in ``connectors.dicom_values``). The rows are in
the order readers read them, so warnings come in that order and the first broken attribute of a
DICOM JSON object is the one reported.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = [
    "OTHER_PATIENT_IDS_TAG",
    "RECORD_ATTRIBUTES",
    "SPECIFIC_CHARACTER_SET",
    "STUDY_INSTANCE_UID",
    "STUDY_RETURN_KEYWORDS",
    "Attribute",
    "Kind",
]


class Kind(enum.IntEnum):
    """How a value is read: the value type and how many values the field keeps."""

    TEXT = 0
    """LO, SH, CS, UI, UR, AE: the non-empty values joined by ``\\``, as DICOM writes several."""
    FIRST = 1
    """The first non-empty value (RetrieveAETitle: the AE to C-MOVE from)."""
    STRINGS = 2
    """Each non-empty value once (CS, multi-valued: ModalitiesInStudy)."""
    DATE = 3
    """DA (PS3.5 6.2)."""
    TIME = 4
    """TM (PS3.5 6.2)."""
    INTEGER = 5
    """IS (PS3.5 6.2)."""
    NAME = 6
    """PN: its first non-empty component group (PS3.5 6.2.1.1)."""


@dataclasses.dataclass(frozen=True)
class Attribute:
    """One study attribute: where it is, what it is, and which record field it fills."""

    tag: int
    keyword: str
    vr: str
    field: str
    kind: Kind
    json_tag: str = dataclasses.field(init=False)
    """The tag as a DICOM JSON object key (PS3.18 F.2.1.1): eight upper-case hex digits."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "json_tag", f"{self.tag:08X}")


STUDY_INSTANCE_UID = Attribute(0x0020000D, "StudyInstanceUID", "UI", "study_instance_uid", Kind.TEXT)
SPECIFIC_CHARACTER_SET = Attribute(
    0x00080005, "SpecificCharacterSet", "CS", "specific_character_set", Kind.STRINGS
)
OTHER_PATIENT_IDS_TAG = 0x00101002
"""OtherPatientIDsSequence: read item by item (PatientID, IssuerOfPatientID) into other_patient_ids."""

# The attributes read into a record besides StudyInstanceUID, in the order they are read.
RECORD_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(0x00080054, "RetrieveAETitle", "AE", "retrieve_ae_title", Kind.FIRST),
    Attribute(0x00100020, "PatientID", "LO", "patient_id", Kind.TEXT),
    Attribute(0x00100021, "IssuerOfPatientID", "LO", "issuer_of_patient_id", Kind.TEXT),
    Attribute(0x00100010, "PatientName", "PN", "patient_name", Kind.NAME),
    Attribute(0x00100030, "PatientBirthDate", "DA", "patient_birth_date", Kind.DATE),
    Attribute(0x00100040, "PatientSex", "CS", "patient_sex", Kind.TEXT),
    Attribute(0x00080020, "StudyDate", "DA", "study_date", Kind.DATE),
    Attribute(0x00080030, "StudyTime", "TM", "study_time", Kind.TIME),
    Attribute(0x00080050, "AccessionNumber", "SH", "accession_number", Kind.TEXT),
    Attribute(0x00080061, "ModalitiesInStudy", "CS", "modalities", Kind.STRINGS),
    Attribute(0x00081030, "StudyDescription", "LO", "description", Kind.TEXT),
    Attribute(0x00080090, "ReferringPhysicianName", "PN", "referring_physician_name", Kind.NAME),
    Attribute(0x00201206, "NumberOfStudyRelatedSeries", "IS", "number_of_series", Kind.INTEGER),
    Attribute(0x00201208, "NumberOfStudyRelatedInstances", "IS", "number_of_instances", Kind.INTEGER),
    Attribute(0x00081190, "RetrieveURL", "UR", "retrieve_url", Kind.TEXT),
    SPECIFIC_CHARACTER_SET,
)

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
