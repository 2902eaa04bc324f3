"""Deterministic seed data: small valid DICOM instances and the catalogue.

The catalogue says which study lives on which test hospital. Everything is fixed:
UIDs are built from a constant root and the study's position, dates and names are
literals, the 8x8 pixel arrays are a function of the instance number. Writing the
same study twice gives byte-identical files, so a study "held by two peers" is the
very same set of instances on both.

Peers (the names are the conftest fixture names):

- ``orthanc_a`` (AET HOSPA, DICOMweb and DIMSE): SHARED-CT, A-MR (PA-001); A-CT (PA-002);
  B-MR (PA-003); JP-CT (PA-JP1); GR-MR (PA-GR1); KR-CR (PA-KR1)
- ``dcmqrscp_b`` (AET HOSPB, DIMSE only): SHARED-CT (PA-001); B-CR (PA-002); B-MR (PA-003);
  JP-CT (PA-JP1); GR-MR (PA-GR1); KR-CR (PA-KR1)
- ``orthanc_c`` (AET HOSPC, DICOMweb and DIMSE): C-US (PA-001); C-MR (PA-002); JP-CT (PA-JP1);
  GR-MR (PA-GR1); KR-CR (PA-KR1)

Character sets (DICOM PS3.5 section 6.1.2.5, PS3.3 C.12.1.1.2): PA-001 and PA-003 are
written in ISO_IR 100 (Latin-1), PA-002 in ISO_IR 192 (UTF-8), PA-GR1 in ISO_IR 126 (Greek).
PA-JP1 (``\\ISO 2022 IR 87``, Japanese, the PS3.5 H.3.1 example) and PA-KR1
(``\\ISO 2022 IR 149``, Korean, the PS3.5 I.2 example) use ISO 2022 code extensions: their
names carry escape sequences and three component groups (Alphabetic=Ideographic=Phonetic).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

UID_ROOT = "1.2.826.0.1.3680043.10.1234."
"""Root of every UID made here (studies ``ROOT1.p.n``, series and instances below)."""

IMPLEMENTATION_CLASS_UID = UID_ROOT + "0.1"
IMPLEMENTATION_VERSION_NAME = "PACSFED_TEST"

ORTHANC_A = "orthanc_a"
DCMQRSCP_B = "dcmqrscp_b"
ORTHANC_C = "orthanc_c"
PEERS = (ORTHANC_A, DCMQRSCP_B, ORTHANC_C)

PEER_AETS = {ORTHANC_A: "HOSPA", DCMQRSCP_B: "HOSPB", ORTHANC_C: "HOSPC"}
"""AE title of each seeded peer."""

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
}

PYTHON_ENCODINGS = {
    "ISO_IR 100": "latin_1",
    "ISO_IR 192": "utf_8",
    "ISO_IR 126": "iso8859_7",
    "\\ISO 2022 IR 87": "iso2022_jp",
    "\\ISO 2022 IR 149": "euc_kr",
}
"""Python codec of each seed character set (for the ISO 2022 ones, the codec of the extension)."""


@dataclass(frozen=True)
class SeedPatient:
    patient_id: str
    name: str
    """DICOM person name, ``Family^Given``."""
    birth_date: str
    """``YYYYMMDD``."""
    sex: str
    charset: str
    """Specific Character Set the patient's files are written in; a backslash separates values
    (``\\ISO 2022 IR 87`` is value 1 empty, value 2 ISO 2022 IR 87)."""
    referring_physician: str | None = None
    """ReferringPhysicianName of the patient's studies; ``REFERRING_PHYSICIAN`` when None."""

    @property
    def python_encoding(self) -> str:
        return PYTHON_ENCODINGS[self.charset]


@dataclass(frozen=True)
class SeedStudy:
    study_uid: str
    date: str
    """``YYYYMMDD``."""
    time: str
    """``HHMMSS``."""
    modality: str
    description: str
    accession: str
    n_series: int
    instances_per_series: int
    key: str
    """Short name used in the catalogue and in tests, e.g. ``SHARED-CT``."""

    @property
    def sop_class_uid(self) -> str:
        return SOP_CLASSES[self.modality]

    @property
    def n_instances(self) -> int:
        return self.n_series * self.instances_per_series

    def series_uid(self, series: int) -> str:
        """UID of series number *series* (1-based)."""
        return f"{self.study_uid}.{series}"

    def sop_instance_uid(self, series: int, instance: int) -> str:
        """UID of instance *instance* (1-based) of series *series* (1-based)."""
        return f"{self.study_uid}.{series}.{instance}"

    @property
    def series_uids(self) -> tuple[str, ...]:
        return tuple(self.series_uid(s) for s in range(1, self.n_series + 1))

    @property
    def sop_instance_uids(self) -> tuple[str, ...]:
        return tuple(
            self.sop_instance_uid(s, i)
            for s in range(1, self.n_series + 1)
            for i in range(1, self.instances_per_series + 1)
        )


@dataclass(frozen=True)
class SeedEntry:
    """One study of one patient and the peers that hold it."""

    patient: SeedPatient
    study: SeedStudy
    peers: frozenset[str]


@dataclass(frozen=True)
class Catalogue:
    entries: tuple[SeedEntry, ...]

    def __iter__(self) -> Iterator[SeedEntry]:
        return iter(self.entries)

    @property
    def patients(self) -> tuple[SeedPatient, ...]:
        seen: dict[str, SeedPatient] = {}
        for entry in self.entries:
            seen.setdefault(entry.patient.patient_id, entry.patient)
        return tuple(seen.values())

    @property
    def studies(self) -> tuple[SeedStudy, ...]:
        return tuple(entry.study for entry in self.entries)

    def patient(self, patient_id: str) -> SeedPatient:
        for patient in self.patients:
            if patient.patient_id == patient_id:
                return patient
        raise KeyError(patient_id)

    def entry(self, key_or_uid: str) -> SeedEntry:
        """The entry of a study given its key (``SHARED-CT``) or its StudyInstanceUID."""
        for entry in self.entries:
            if key_or_uid in (entry.study.key, entry.study.study_uid):
                return entry
        raise KeyError(key_or_uid)

    def study(self, key_or_uid: str) -> SeedStudy:
        return self.entry(key_or_uid).study

    def entries_for(self, peer: str | None = None, patient_id: str | None = None) -> tuple[SeedEntry, ...]:
        """Entries held by *peer* (any peer if None) for *patient_id* (any if None)."""
        if peer is not None and peer not in PEERS:
            raise KeyError(f"unknown peer {peer!r}; known: {PEERS}")
        return tuple(
            e
            for e in self.entries
            if (peer is None or peer in e.peers)
            and (patient_id is None or e.patient.patient_id == patient_id)
        )

    def studies_for(self, peer: str | None = None, patient_id: str | None = None) -> tuple[SeedStudy, ...]:
        return tuple(e.study for e in self.entries_for(peer, patient_id))

    def study_uids(self, peer: str | None = None, patient_id: str | None = None) -> set[str]:
        """StudyInstanceUIDs that *peer* holds for *patient_id* (None means any)."""
        return {s.study_uid for s in self.studies_for(peer, patient_id)}

    def peers_holding(self, key_or_uid: str) -> frozenset[str]:
        return self.entry(key_or_uid).peers


def _study(n: int, key: str, modality: str, when: str, desc: str, acc: str, shape: str) -> SeedStudy:
    date, time = when.split(" ")
    n_series, per_series = (int(x) for x in shape.lower().split("x"))
    patient_n = int(acc[4])  # ACC-1xxx -> patient 1, ACC-2xxx -> 2, ...
    return SeedStudy(
        study_uid=f"{UID_ROOT}1.{patient_n}.{n}",
        date=date.replace("-", ""),
        time=time.replace(":", ""),
        modality=modality,
        description=desc,
        accession=acc,
        n_series=n_series,
        instances_per_series=per_series,
        key=key,
    )


PA_001 = SeedPatient("PA-001", "Müller^Anna", "19800412", "F", "ISO_IR 100")
PA_002 = SeedPatient("PA-002", "Dupré^Élodie", "19920229", "F", "ISO_IR 192")
PA_003 = SeedPatient("PA-003", "Østergård^Søren", "19751231", "M", "ISO_IR 100")
PA_JP1 = SeedPatient(
    "PA-JP1",
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "19650317",
    "M",
    "\\ISO 2022 IR 87",
    referring_physician="Suzuki^Ichirou=鈴木^一郎=すずき^いちろう",
)
PA_GR1 = SeedPatient(
    "PA-GR1", "Διονυσιος^Γεωργιος", "19580823", "M", "ISO_IR 126", referring_physician="Παπαδόπουλος^Νίκος"
)
PA_KR1 = SeedPatient(
    "PA-KR1",
    "Hong^Gildong=洪^吉洞=홍^길동",
    "19870909",
    "M",
    "\\ISO 2022 IR 149",
    referring_physician="Kim^Minsu",
)
# One person under three identifiers (issue: identity cross-referencing): A123 at Orthanc A
# (HOSP_A), B-77 at dcmqrscp B (HOSP_B), her national number at Orthanc C (kept in PatientID,
# written differently there); and a namesake born another day at dcmqrscp B.
JANSSENS_A = SeedPatient("A123", "Janssens^Marie", "19700315", "F", "ISO_IR 100")
JANSSENS_B = SeedPatient("B-77", "Janssens^Marie", "19700315", "F", "ISO_IR 100")
JANSSENS_C = SeedPatient("70031512345", "JANSSENS^MARIE", "19700315", "F", "ISO_IR 192")
NAMESAKE_B = SeedPatient("B-99", "Janssens^Marie", "19880101", "F", "ISO_IR 100")
ALL_PEERS = frozenset(PEERS)

CATALOGUE = Catalogue(
    entries=(
        SeedEntry(
            PA_001,
            _study(1, "SHARED-CT", "CT", "2024-01-05 10:30:00", "CT THORAX", "ACC-1001", "2x2"),
            frozenset({ORTHANC_A, DCMQRSCP_B}),
        ),
        SeedEntry(
            PA_001,
            _study(2, "A-MR", "MR", "2023-06-01 08:15:00", "IRM GENOU", "ACC-1002", "1x3"),
            frozenset({ORTHANC_A}),
        ),
        SeedEntry(
            PA_001,
            _study(3, "C-US", "US", "2022-11-20 14:00:00", "ECHO ABDO", "ACC-1003", "1x1"),
            frozenset({ORTHANC_C}),
        ),
        SeedEntry(
            PA_002,
            _study(1, "B-CR", "CR", "2021-03-15 09:00:00", "RX THORAX", "ACC-2001", "1x1"),
            frozenset({DCMQRSCP_B}),
        ),
        SeedEntry(
            PA_002,
            _study(2, "C-MR", "MR", "2024-02-10 16:45:00", "IRM CÉRÉBRALE", "ACC-2002", "1x2"),
            frozenset({ORTHANC_C}),
        ),
        SeedEntry(
            PA_002,
            _study(3, "A-CT", "CT", "2020-07-07 07:07:07", "SCANNER ÉPAULE", "ACC-2003", "1x1"),
            frozenset({ORTHANC_A}),
        ),
        SeedEntry(
            PA_003,
            _study(1, "B-MR", "MR", "2019-05-05 12:00:00", "IRM RACHIS", "ACC-3001", "1x1"),
            frozenset({DCMQRSCP_B, ORTHANC_A}),
        ),
        SeedEntry(
            PA_JP1,
            _study(1, "JP-CT", "CT", "2023-09-14 11:20:00", "胸部 CT", "ACC-7001", "1x1"),
            ALL_PEERS,
        ),
        SeedEntry(
            PA_GR1,
            _study(1, "GR-MR", "MR", "2022-04-02 15:10:00", "ΜΑΓΝΗΤΙΚΗ ΕΓΚΕΦΑΛΟΥ", "ACC-8001", "1x1"),
            ALL_PEERS,
        ),
        SeedEntry(
            PA_KR1,
            _study(1, "KR-CR", "CR", "2021-12-24 09:45:00", "흉부 CR", "ACC-9001", "1x1"),
            ALL_PEERS,
        ),
        SeedEntry(
            JANSSENS_A,
            _study(1, "X-A-CT", "CT", "2023-10-01 11:00:00", "CT ABDOMEN", "ACC-4001", "1x1"),
            frozenset({ORTHANC_A}),
        ),
        SeedEntry(
            JANSSENS_B,
            _study(2, "X-B-MR", "MR", "2022-05-04 09:30:00", "MR GENOU", "ACC-4002", "1x1"),
            frozenset({DCMQRSCP_B}),
        ),
        SeedEntry(
            JANSSENS_C,
            _study(3, "X-C-US", "US", "2024-08-20 15:15:00", "ECHO THYROIDE", "ACC-4003", "1x1"),
            frozenset({ORTHANC_C}),
        ),
        SeedEntry(
            NAMESAKE_B,
            _study(1, "N-B-CR", "CR", "2021-01-01 08:00:00", "RX POUMONS", "ACC-5001", "1x1"),
            frozenset({DCMQRSCP_B}),
        ),
    )
)
"""The seed data; see the module docstring for the table."""

REFERRING_PHYSICIAN = "Référent^Jean"


def _pixels(seed: int) -> np.ndarray:
    """An 8x8 uint16 gradient that differs per instance."""
    grid = np.arange(64, dtype=np.uint16).reshape(8, 8)
    return (grid * 16 + seed * 7) % 4096


def make_instance(patient: SeedPatient, study: SeedStudy, series: int, instance: int) -> Dataset:
    """The dataset (with file meta) of one instance; 1-based *series* and *instance*."""
    sop_uid = study.sop_instance_uid(series, instance)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(study.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = patient.charset
    ds.ImageType = (
        ["ORIGINAL", "PRIMARY", "AXIAL"]
        if study.modality == "CT"
        else [
            "ORIGINAL",
            "PRIMARY",
        ]
    )
    ds.SOPClassUID = study.sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study.date
    ds.SeriesDate = study.date
    ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = study.time
    ds.ContentTime = study.time
    ds.AccessionNumber = study.accession
    ds.Modality = study.modality
    ds.Manufacturer = "pacsfed"
    ds.InstitutionName = "pacsfed test hospital"
    ds.ReferringPhysicianName = patient.referring_physician or REFERRING_PHYSICIAN
    ds.StudyDescription = study.description
    ds.SeriesDescription = f"{study.description} S{series}"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = study.series_uid(series)
    ds.StudyID = study.accession.removeprefix("ACC-")
    ds.SeriesNumber = series
    ds.InstanceNumber = instance
    ds.PatientOrientation = ""
    if study.modality in ("CT", "MR"):
        ds.ImagePositionPatient = [0.0, 0.0, float(instance)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.FrameOfReferenceUID = f"{study.series_uid(series)}.0"
        ds.PositionReferenceIndicator = ""
        ds.SliceThickness = 1.0
        ds.PixelSpacing = [1.0, 1.0]
    if study.modality == "CT":
        ds.KVP = 120.0
        ds.RescaleIntercept = -1024.0
        ds.RescaleSlope = 1.0
    if study.modality == "MR":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = 10.0
        ds.RepetitionTime = 500.0
        ds.EchoTrainLength = 1
        ds.MagneticFieldStrength = 1.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = 8
    ds.Columns = 8
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = _pixels(series * 100 + instance).tobytes()
    return ds


def write_study(directory: Path, patient: SeedPatient, study: SeedStudy) -> list[Path]:
    """Write every instance of *study* as ``directory/<key>/S<s>_I<i>.dcm``; return the paths."""
    folder = Path(directory) / study.key
    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for series in range(1, study.n_series + 1):
        for instance in range(1, study.instances_per_series + 1):
            ds = make_instance(patient, study, series, instance)
            path = folder / f"S{series}_I{instance}.dcm"
            ds.save_as(path, enforce_file_format=True, little_endian=True, implicit_vr=False)
            paths.append(path)
    return paths


def write_catalogue(directory: Path, catalogue: Catalogue = CATALOGUE) -> dict[str, list[Path]]:
    """Write every study of *catalogue* under *directory*; map study key -> file paths."""
    return {e.study.key: write_study(directory, e.patient, e.study) for e in catalogue}


def files_for_peer(files: dict[str, list[Path]], peer: str, catalogue: Catalogue = CATALOGUE) -> list[Path]:
    """The written files of the studies *peer* holds, from ``write_catalogue``'s result."""
    return [p for entry in catalogue.entries_for(peer) for p in files[entry.study.key]]


def iter_paths(files: dict[str, list[Path]]) -> Iterable[Path]:
    for paths in files.values():
        yield from paths
