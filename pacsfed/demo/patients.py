"""The demo catalogue: three simulated hospitals, eight patients, and DICOM matching over them.

The catalogue is a hand-written table, so it is the same on every run: nothing is random and every
UID is built under :data:`DEMO_UID_ROOT`. Patient IDs are the same string at every hospital.

Matching follows PS3.4 C.2.2.2 and is shared by the DIMSE and the QIDO-RS peers (PS3.18 8.3.4
defines QIDO-RS matching by reference to it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

DEMO_UID_ROOT = "1.2.826.0.1.3680043.10.999."
DEMO_ISSUER = "PACSFED-DEMO"
UTF8_CHARSET = "ISO_IR 192"

SourceKind = Literal["dimse", "dicomweb"]


@dataclass(frozen=True, slots=True)
class DemoSource:
    """One simulated hospital: its source id, display name, protocol and (for DIMSE) AE title."""

    id: str
    name: str
    kind: SourceKind
    ae_title: str


@dataclass(frozen=True, slots=True)
class DemoPatient:
    """One synthetic patient, identified by the same PatientID at every hospital."""

    patient_id: str
    name: str
    birth_date: str
    sex: str


CHU_NORD = DemoSource("demo-chu-nord", "CHU Nord", "dimse", "CHUNORD")
AZ_SINT_JAN = DemoSource("demo-az-sint-jan", "AZ Sint-Jan", "dicomweb", "AZSINTJAN")
CLINIQUE_SUD = DemoSource("demo-clinique-sud", "Clinique du Sud", "dimse", "CLINSUD")

DEMO_SOURCES: tuple[DemoSource, ...] = (CHU_NORD, AZ_SINT_JAN, CLINIQUE_SUD)

DEMO_PATIENTS: tuple[DemoPatient, ...] = (
    DemoPatient("DEMO-001", "Müller^Anna", "19670312", "F"),
    DemoPatient("DEMO-002", "Dupré^Élodie", "19820907", "F"),
    DemoPatient("DEMO-003", "Van den Bossche^Maërle", "19950121", "F"),
    DemoPatient("DEMO-004", "Ñúñez^José", "19580430", "M"),
    DemoPatient("DEMO-005", "Østergård^Søren", "19731118", "M"),
    DemoPatient("DEMO-006", "Peeters^Jan", "19490605", "M"),
    DemoPatient("DEMO-007", "Lefèvre^François", "20010214", "M"),
    DemoPatient("DEMO-008", "Çelik^Ayşe", "19900826", "F"),
)

_ACCESSION_PREFIX = {CHU_NORD.id: "CHN", AZ_SINT_JAN.id: "AZSJ", CLINIQUE_SUD.id: "CDS"}


@dataclass(frozen=True, slots=True)
class _Study:
    patient: int  # 1-based index into DEMO_PATIENTS
    number: int  # 1-based, per patient
    date: str
    time: str
    modalities: tuple[str, ...]
    description: str
    referring: str
    series: int
    instances: int
    holders: tuple[str, ...]  # the first holder acquired it; the others received a copy
    # A receiving hospital may hold only part of a transferred study: (series, instances).
    partial: Mapping[str, tuple[int, int]] = field(default_factory=dict)


_N, _A, _S = CHU_NORD.id, AZ_SINT_JAN.id, CLINIQUE_SUD.id

_STUDIES: tuple[_Study, ...] = (
    # DEMO-001 Müller^Anna: exams at all three hospitals, one MR transferred (partly) to AZ Sint-Jan;
    # an SR report (Clinique du Sud, DIMSE) and a PDF report (AZ Sint-Jan, DICOMweb).
    _Study(1, 1, "20190314", "083512", ("CT",), "CT thorax sans injection", "Dubois^Marc",
           3, 412, (_N,)),
    _Study(1, 2, "20210602", "141005", ("MR",), "IRM cérébrale avec injection", "Dubois^Marc",
           7, 1450, (_N, _A), {_A: (5, 1210)}),
    _Study(1, 3, "20221120", "101530", ("US", "DOC"), "Echografie abdomen", "Mertens^Pieter",
           1, 38, (_A,)),
    _Study(1, 4, "20230208", "090245", ("CR",), "RX thorax PA en profiel", "Mertens^Pieter",
           2, 2, (_A,)),
    _Study(1, 5, "20240117", "163040", ("MR", "SR"), "IRM genou droit", "Renard^Isabelle",
           6, 980, (_S,)),
    _Study(1, 6, "20240905", "112200", ("DX",), "Radiographie bassin face", "Renard^Isabelle",
           1, 1, (_S,)),
    # DEMO-002 Dupré^Élodie
    _Study(2, 1, "20200512", "075930", ("MR",), "IRM rachis lombaire", "Lambert^Claire",
           5, 820, (_N,)),
    _Study(2, 2, "20230701", "134415", ("US",), "Échographie thyroïdienne", "Renard^Isabelle",
           1, 24, (_S,)),
    _Study(2, 3, "20240329", "102050", ("CT", "SR"), "Scanner abdomino-pelvien avec injection",
           "Renard^Isabelle", 4, 1320, (_S,)),
    # DEMO-003 Van den Bossche^Maërle: a CT sent from AZ Sint-Jan to CHU Nord.
    _Study(3, 1, "20181003", "154510", ("MR",), "MRI knie links", "Goossens^Els",
           6, 890, (_A,)),
    _Study(3, 2, "20220422", "081700", ("CT",), "CT sinussen", "Goossens^Els",
           2, 310, (_A, _N)),
    _Study(3, 3, "20250114", "093025", ("US",), "Echografie borsten", "Goossens^Els",
           1, 16, (_A,)),
    # DEMO-004 Ñúñez^José
    _Study(4, 1, "20171211", "220540", ("XA",), "Coronarographie", "Lambert^Claire",
           4, 96, (_S,)),
    _Study(4, 2, "20180109", "101010", ("US",), "Échocardiographie transthoracique",
           "Lambert^Claire", 1, 64, (_S,)),
    _Study(4, 3, "20230516", "140230", ("CT", "SR"), "Coroscanner", "Dubois^Marc",
           3, 540, (_N,)),
    # DEMO-005 Østergård^Søren
    _Study(5, 1, "20210930", "031245", ("CT", "SR"), "CT hersenen zonder contrast", "Mertens^Pieter",
           2, 260, (_A,)),
    # DEMO-006 Peeters^Jan: an angiography sent from Clinique du Sud to AZ Sint-Jan.
    _Study(6, 1, "20160225", "110000", ("XA",), "Angiographie des membres inférieurs",
           "Renard^Isabelle", 3, 120, (_S, _A)),
    _Study(6, 2, "20200814", "084510", ("CT",), "CT angiografie onderste ledematen",
           "Goossens^Els", 3, 1800, (_A,)),
    # DEMO-007 Lefèvre^François
    _Study(7, 1, "20250203", "181520", ("CR",), "Radiographie cheville gauche", "Dubois^Marc",
           2, 3, (_N,)),
    # DEMO-008 Çelik^Ayşe
    _Study(8, 1, "20221219", "100500", ("US",), "Échographie obstétricale", "Lambert^Claire",
           1, 42, (_S,)),
    _Study(8, 2, "20240611", "120815", ("MR",), "MRI bekken", "Mertens^Pieter",
           6, 700, (_A,)),
)  # fmt: skip


def study_uid(patient: int, number: int) -> str:
    """The StudyInstanceUID of a patient's ``number``-th demo study (both 1-based)."""
    return f"{DEMO_UID_ROOT}1.{patient}.{number}"


def _dataset(study: _Study, source_id: str) -> Dataset:
    patient = DEMO_PATIENTS[study.patient - 1]
    series, instances = study.partial.get(source_id, (study.series, study.instances))
    ds = Dataset()
    ds.SpecificCharacterSet = UTF8_CHARSET
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = (
        f"{_ACCESSION_PREFIX[source_id]}{study.date[:4]}{study.patient:02d}{study.number:02d}"
    )
    ds.ModalitiesInStudy = list(study.modalities)
    ds.ReferringPhysicianName = study.referring
    ds.StudyDescription = study.description
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = DEMO_ISSUER
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study_uid(study.patient, study.number)
    ds.NumberOfStudyRelatedSeries = series
    ds.NumberOfStudyRelatedInstances = instances
    return ds


def demo_studies(source_id: str) -> list[Dataset]:
    """Fresh study-level datasets held by one demo hospital, oldest first; KeyError if unknown."""
    if source_id not in _ACCESSION_PREFIX:
        raise KeyError(f"no demo hospital with id {source_id!r}")
    held = [s for s in _STUDIES if source_id in s.holders]
    held.sort(key=lambda s: (s.date, s.time, s.patient, s.number))
    return [_dataset(s, source_id) for s in held]


def patient_summaries() -> list[str]:
    """One line per demo patient saying what it shows, for the demo's banner (derived, never hand-kept)."""
    lines = []
    for number, patient in enumerate(DEMO_PATIENTS, 1):
        mine = [s for s in _STUDIES if s.patient == number]
        hospitals = {holder for s in mine for holder in s.holders}
        shared = sum(len(s.holders) > 1 for s in mine)
        kinds = {source.id: source.kind for source in DEMO_SOURCES}
        reports = [
            f"{'PDF' if kind == 'DOC' else kind} over {'DICOMweb' if kinds[s.holders[0]] == 'dicomweb' else 'DIMSE'}"
            for s in mine
            for kind in ("SR", "DOC")
            if kind in s.modalities
        ]
        line = f"{len(mine)} exam{'s' * (len(mine) > 1)} at {len(hospitals)} hospital{'s' * (len(hospitals) > 1)}"
        if shared:
            line += f", {shared} held by two"
        if reports:
            line += f"; report{'s' * (len(reports) > 1)}: " + ", ".join(reports)
        lines.append(f"{patient.patient_id}  {patient.name:<24} {line}")
    return lines


# --- Matching (PS3.4 C.2.2.2) ---------------------------------------------------------------

# PS3.4 C.2.2.2.4: the VRs on which * and ? are matching characters.
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
# PS3.4 C.2.2.2.5: range matching on dates and times (DT is matched as a single value here).
_RANGE_BOUND = {
    "DA": re.compile(r"\d{8}"),
    "TM": re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?"),
}
# Not matching keys: they describe the query itself.
_CONTROL_TAGS = frozenset({Tag(0x0008, 0x0005), Tag(0x0008, 0x0052)})


class MatchError(ValueError):
    """A key value that cannot be used for matching, e.g. a malformed date range."""


@dataclass(frozen=True, slots=True)
class MatchKey:
    """One matching key: a tag, its VR and its values (none means universal matching)."""

    tag: int
    vr: str
    values: tuple[str, ...]

    @property
    def name(self) -> str:
        """The key's keyword (or tag), for messages: never its value."""
        return keyword_for_tag(self.tag) or f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"


def element_values(elem: DataElement) -> tuple[str, ...]:
    """The values of an element as stripped strings; empty for a zero-length element."""
    value = elem.value
    if value is None or value == "" or elem.VR == "SQ":
        return ()
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    out = []
    for item in items:
        text = str(item).strip()
        if elem.VR == "PN":
            text = text.rstrip("^=")
        elif elem.VR == "TM":
            text = text.replace(":", "")
        if text:
            out.append(text)
    return tuple(out)


def keys_from_identifier(identifier: Dataset) -> list[MatchKey]:
    """The matching keys of a C-FIND identifier, leaving out the query-control attributes."""
    keys = []
    for elem in identifier:
        if elem.tag in _CONTROL_TAGS or elem.tag.element == 0 or elem.VR == "SQ":
            continue
        keys.append(MatchKey(int(elem.tag), elem.VR, element_values(elem)))
    return keys


def validate_key(key: MatchKey) -> None:
    """Raise MatchError if a date or time key is neither a value nor a range (PS3.4 C.2.2.2.5)."""
    pattern = _RANGE_BOUND.get(key.vr)
    if pattern is None:
        return
    for value in key.values:
        if value == "*":
            continue
        bounds = value.split("-")
        if len(bounds) > 2 or not any(bounds) or not all(pattern.fullmatch(b) for b in bounds if b):
            raise MatchError(f"{key.name}: not a {key.vr} value or range")


def _wildcard(pattern: str, value: str, fold: bool) -> bool:
    if fold:
        pattern, value = pattern.casefold(), value.casefold()
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


def _in_range(query: str, value: str) -> bool:
    """PS3.4 C.2.2.2.5: inclusive bounds, each compared at its own precision."""
    if "-" not in query:
        return value == query
    low, high = query.split("-", 1)
    if low and value[: len(low)] < low:
        return False
    return not (high and value[: len(high)] > high)


def _value_matches(key: MatchKey, query: str, value: str) -> bool:
    if query == "*":
        return True
    if key.vr in _RANGE_BOUND:
        return _in_range(query, value)
    if key.vr in _WILDCARD_VRS and ("*" in query or "?" in query):
        return _wildcard(query, value, fold=key.vr == "PN")
    if key.vr == "PN":
        # PS3.4 C.2.2.2.1 lets PN matching be case-insensitive; IDs and codes stay exact.
        return query.casefold() == value.casefold()
    return query == value


def record_matches(record: Dataset, keys: Iterable[MatchKey]) -> bool:
    """True if ``record`` satisfies every key (PS3.4 C.2.2.2).

    Empty keys match universally (C.2.2.2.3); several values are alternatives (List of UID
    Matching, C.2.2.2.2, and multiple-value matching); a multi-valued record attribute such as
    ModalitiesInStudy matches if any of its values does. A key on an attribute the record does not
    have is an unsupported optional key and matches universally.
    """
    for key in keys:
        if not key.values or key.tag not in record:
            continue
        values = element_values(record[key.tag])
        if not any(_value_matches(key, q, v) for q in key.values for v in values):
            return False
    return True
