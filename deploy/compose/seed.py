"""Seed the demonstration stack's Orthanc hospitals with the demo's synthetic studies, then exit.

Usage (compose.yaml's ``seed`` job, in the pacsfed image)::

    python seed.py demo-chu-nord=http://orthanc-a:8042 demo-az-sint-jan=http://orthanc-b:8042

Each ``SOURCE=URL`` stores the studies that the demo hospital ``SOURCE`` holds
(:func:`pacsfed.demo.patients.demo_studies`: synthetic patients, nothing real) into the Orthanc at
``URL``: one series per imaging modality of the study, one small image each, and the study's report
where it lists one (``SR``: a Comprehensive SR, ``DOC``: an encapsulated PDF, as ``pacsfed demo``
serves them: :func:`pacsfed.demo.reports.demo_reports`) (``POST /instances``).
Storing the same instance again is harmless (Orthanc answers ``AlreadyStored``), so the job can run
at every ``docker compose up``. Waits up to ``--wait-s`` for each Orthanc to answer ``/system``.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence

import httpx
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from pacsfed.demo.patients import demo_studies
from pacsfed.demo.reports import demo_reports

_REPORT_MODALITIES = frozenset({"SR", "DOC"})
_SIDE = 8
"""Each image is 8 x 8 pixels: enough for a viewer to open, nothing to download."""


def modalities(study: Dataset) -> list[str]:
    """A study's ModalitiesInStudy as a list (pydicom gives one value as a plain string)."""
    value = study.get("ModalitiesInStudy")
    if not value:
        return []
    return [value] if isinstance(value, str) else [str(modality) for modality in value]


def instances(study: Dataset) -> list[Dataset]:
    """One secondary capture image per imaging modality of a study-level demo dataset, in that study.

    ``SR`` and ``DOC`` are the study's report, not images: :func:`seed` stores the demo's own.
    """
    made: list[Dataset] = []
    imaging = [modality for modality in modalities(study) if modality not in _REPORT_MODALITIES]
    for number, modality in enumerate(imaging, start=1):
        series_uid = f"{study.StudyInstanceUID}.{number}"
        ds = Dataset()
        for keyword in (
            "SpecificCharacterSet",
            "StudyInstanceUID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "ReferringPhysicianName",
            "StudyDescription",
            "PatientName",
            "PatientID",
            "IssuerOfPatientID",
            "PatientBirthDate",
            "PatientSex",
        ):
            setattr(ds, keyword, study.data_element(keyword).value)
        ds.StudyID = str(number)
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = f"{series_uid}.1"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = number
        ds.InstanceNumber = 1
        ds.Modality = modality
        ds.ConversionType = "WSD"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = ds.Columns = _SIDE
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelRepresentation = 0
        ds.PixelData = bytes((row * _SIDE + column) * 4 for row in range(_SIDE) for column in range(_SIDE))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        made.append(ds)
    return made


def encoded(ds: Dataset) -> bytes:
    """The instance as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def wait_for(client: httpx.Client, wait_s: float) -> None:
    """Return once Orthanc answers ``GET /system``; raise the last error after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.get("/system").raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def seed(source_id: str, url: str, wait_s: float = 60.0) -> int:
    """Store the studies demo hospital ``source_id`` holds into the Orthanc at ``url``; the instance count."""
    stored = 0
    with httpx.Client(base_url=url.rstrip("/"), timeout=30.0) as client:
        wait_for(client, wait_s)
        made = [ds for study in demo_studies(source_id) for ds in instances(study)]
        for ds in [*made, *demo_reports(source_id)]:
            response = client.post(
                "/instances", content=encoded(ds), headers={"content-type": "application/dicom"}
            )
            response.raise_for_status()
            stored += 1
    return stored


def main(argv: Sequence[str] | None = None) -> int:
    """Seed every ``SOURCE=URL`` given; exit 1 on the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="+", metavar="SOURCE=URL")
    parser.add_argument("--wait-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    for target in args.targets:
        source_id, _, url = target.partition("=")
        try:
            count = seed(source_id, url, args.wait_s)
        except (httpx.HTTPError, KeyError) as exc:
            print(f"seed: {source_id} at {url}: {exc}", file=sys.stderr)
            return 1
        print(f"seed: {source_id}: {count} instances stored at {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
