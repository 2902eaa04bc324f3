"""The DICOM helpers a connector needs, in one public place: records, dates, times, names, character sets.

A connector kind, built in or a plugin, turns its peer's answers into
:class:`federation.models.StudyRecord` with these, so every kind reads DICOM the same way:

- records: :func:`study_record_from_dataset` (a pydicom ``Dataset``, as C-FIND returns it) and
  :func:`record_from_dicom_json` (the DICOM JSON model, PS3.18 F.2; :class:`MalformedObject` when
  an answer is not one), asking for :data:`STUDY_RETURN_KEYWORDS` (PS3.4 C.6.2.1.2);
- dates and times: :func:`parse_da` and :func:`parse_tm` (VRs DA and TM, PS3.5 6.2);
- person names: :func:`person_name_groups` and :func:`beyond_alphabetic` (PN, PS3.5 6.2.1.1);
- character sets: :func:`decode_text` (SpecificCharacterSet, PS3.3 C.12.1.1.2 and PS3.5 6.1).

They are thin doors onto the one reader: the attribute table (``connectors.dicom_attributes``),
the converters (``connectors.dicom_values``), the character sets (``connectors.dicom_charsets``)
and an adapter per input (``connectors.normalize`` for a ``Dataset``, ``connectors.dicom_json``).

Nothing here raises on a bad value: a value that cannot be read is None or holds U+FFFD, and
the problem is reported as a warning that names no patient data.
"""

from __future__ import annotations

from connectors.dicom_attributes import STUDY_RETURN_KEYWORDS
from connectors.dicom_charsets import decode_text
from connectors.dicom_json import MalformedObject, record_from_dicom_json
from connectors.dicom_values import beyond_alphabetic, parse_da, parse_tm, person_name_groups
from connectors.normalize import study_record_from_dataset

__all__ = [  # noqa: RUF022 - plain sorted() order, the order tests/unit/test_exported_members.py checks
    "MalformedObject",
    "STUDY_RETURN_KEYWORDS",
    "beyond_alphabetic",
    "decode_text",
    "parse_da",
    "parse_tm",
    "person_name_groups",
    "record_from_dicom_json",
    "study_record_from_dataset",
]
