"""The DICOM helpers a connector needs, in one public place: records, dates, times, names, character sets.

A connector kind, built in or a plugin, turns its peer's answers into
:class:`federation.models.StudyRecord` with these, so every kind reads DICOM the same way:

- records: :func:`study_record_from_dataset` (a pydicom ``Dataset``, as C-FIND returns it) and
  :func:`record_from_dicom_json` (the DICOM JSON model, PS3.18 F.2; :class:`MalformedObject` when
  an answer is not one), asking for :data:`STUDY_RETURN_KEYWORDS` (PS3.4 C.6.2.1.2);
- dates and times: :func:`parse_da` and :func:`parse_tm` (VRs DA and TM, PS3.5 6.2);
- person names: :func:`person_name_groups` and :func:`beyond_alphabetic` (PN, PS3.5 6.2.1.1);
- character sets: :func:`decode_text` (SpecificCharacterSet, PS3.3 C.12.1.1.2 and PS3.5 6.1).

Nothing here raises on a bad value: a value that cannot be read is None or holds U+FFFD, and
the problem is reported as a warning that names no patient data.
"""

from __future__ import annotations

from collections.abc import Sequence

from connectors.dicom_json import MalformedObject, record_from_dicom_json
from connectors.normalize import (
    _LINE_DELIMITERS,
    _SINGLE_VALUED_VRS,
    STUDY_RETURN_KEYWORDS,
    _character_set,
    _clean,
    _decode,
    beyond_alphabetic,
    parse_da,
    parse_tm,
    person_name_groups,
    study_record_from_dataset,
)

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


def decode_text(
    data: bytes, specific_character_set: Sequence[str] = (), vr: str = "LO"
) -> tuple[str, tuple[str, ...]]:
    """One element's bytes as NFC text under SpecificCharacterSet values, and the problems met.

    ``vr`` sets where the sets of value 1 become active again (PS3.5 6.1.2.5.3): line ends, the
    value delimiter ``\\`` (not in ST, LT, UT) and, in PN, ``^`` and ``=``. Values stay joined by
    ``\\``. The problems (an unknown term, bytes invalid in the declared set) hold no value text.
    """
    problems: list[str] = []
    charset = _character_set(list(specific_character_set), problems)
    delimiters = (
        _LINE_DELIMITERS + (b"" if vr in _SINGLE_VALUED_VRS else b"\\") + (b"^=" if vr == "PN" else b"")
    )
    text = _clean(_decode(data, charset, delimiters, problems), problems)
    return text, tuple(dict.fromkeys(problems))
