"""Images for WADO-RS tests and the streaming bench: multi-frame instances made with pydicom and numpy.

Deterministic (seeded): the same arguments write the same bytes. One study, one series; each
instance a Multi-frame Grayscale Word Secondary Capture image (PS3.3 A.8.3) of ``frames`` frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

MULTIFRAME_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
WADO_PATIENT_ID = "WADO-PA-1"
WADO_PATIENT_NAME = "Ondine^Wadoretrieve"


@dataclass(frozen=True)
class WadoStudy:
    """The UIDs of a written study and the frames of its instances."""

    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    paths: tuple[Path, ...]
    frames: int
    rows: int
    columns: int

    def frame(self, instance: int, frame: int) -> bytes:
        """The pixel bytes of 1-based *frame* of 0-based *instance*, as written."""
        return _frames(instance, self.frames, self.rows, self.columns)[frame - 1].tobytes()


def _frames(seed: int, frames: int, rows: int, columns: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    return generator.integers(0, 4096, size=(frames, rows, columns), dtype=np.uint16)


def write_wado_study(
    directory: Path,
    *,
    study_uid: str = "1.2.826.0.1.3680043.10.1138.17",
    instances: int = 2,
    frames: int = 3,
    rows: int = 16,
    columns: int = 16,
) -> WadoStudy:
    """Write *instances* files of *frames* frames each under *directory*; 2 bytes a pixel."""
    directory.mkdir(parents=True, exist_ok=True)
    series_uid = f"{study_uid}.1"
    sop_uids, paths = [], []
    for number in range(instances):
        sop_uid = f"{series_uid}.{number + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MULTIFRAME_WORD_SC
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = MULTIFRAME_WORD_SC
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.PatientID = WADO_PATIENT_ID
        ds.PatientName = WADO_PATIENT_NAME
        ds.StudyDate = "20250102"
        ds.StudyTime = "101500"
        ds.AccessionNumber = "ACC-WADO-1"
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = number + 1
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 40.0
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = _frames(number, frames, rows, columns).tobytes()
        path = directory / f"I{number + 1}.dcm"
        ds.save_as(path, enforce_file_format=True, little_endian=True, implicit_vr=False)
        sop_uids.append(sop_uid)
        paths.append(path)
    return WadoStudy(study_uid, series_uid, tuple(sop_uids), tuple(paths), frames, rows, columns)
