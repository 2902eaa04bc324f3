"""Peers of the conformance runs: an Orthanc (UTF-8) and a dcmqrscp of their own, seeded by the kit.

The session's seeded hospitals (``orthanc_a``, ``dcmqrscp_b``, ``orthanc_c``) are not used: the
kit adds studies, and other tests check exactly what those hospitals hold.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from peers import DcmqrscpPeer, OrthancPeer, PeerError
from peers.dicomdata import IMPLEMENTATION_CLASS_UID, SOP_CLASSES
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian


def kit_instance(study: Any) -> Dataset:
    """One ISO_IR 192 instance of a kit study (``connectors.testing.KitStudy``), 2x2 pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(SOP_CLASSES[study.modality])
    meta.MediaStorageSOPInstanceUID = UID(study.sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = SOP_CLASSES[study.modality]
    ds.SOPInstanceUID = study.sop_instance_uid
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = study.series_instance_uid
    ds.StudyDate = ds.SeriesDate = study.study_date.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = study.study_time.strftime("%H%M%S")
    ds.AccessionNumber = study.accession_number
    ds.Modality = study.modality
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = ""
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    if study.issuer_of_patient_id:
        ds.IssuerOfPatientID = study.issuer_of_patient_id
    ds.PatientBirthDate = study.patient_birth_date.strftime("%Y%m%d")
    ds.PatientSex = study.patient_sex
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(8)
    return ds


def write_kit_studies(studies: Sequence[Any], directory: Path) -> list[Path]:
    """Each study as one DICOM file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for study in studies:
        path = directory / f"{study.sop_instance_uid}.dcm"
        kit_instance(study).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def kit_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPeer]:
    """An Orthanc answering in UTF-8 (every script), DIMSE and DICOMweb, seeded by the kit runs."""
    peer = OrthancPeer("KITORTHANC", tmp_path_factory.mktemp("kit-orthanc"), default_encoding="Utf8")
    try:
        peer.start()
    except (PeerError, OSError) as exc:
        peer.close()
        pytest.fail(f"Orthanc for the conformance kit could not be started: {exc}", pytrace=False)
    yield peer
    peer.close()


@pytest.fixture(scope="session")
def kit_dcmqrscp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DcmqrscpPeer]:
    """A dcmqrscp (DIMSE only), seeded by the kit run with storescu."""
    peer = DcmqrscpPeer("KITDCMQR", tmp_path_factory.mktemp("kit-dcmqrscp"))
    try:
        peer.start()
    except (PeerError, OSError) as exc:
        peer.close()
        pytest.fail(f"dcmqrscp for the conformance kit could not be started: {exc}", pytrace=False)
    yield peer
    peer.close()


def seed_files(studies: Sequence[Any]) -> list[Path]:
    """The kit studies written to a fresh temporary folder."""
    return write_kit_studies(studies, Path(tempfile.mkdtemp(prefix="pacsfed-kit-")))
