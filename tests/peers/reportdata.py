"""Report test data: a real Comprehensive SR built with highdicom, and an encapsulated PDF, with their images.

Patient RPT-001 has three CT studies: one with an SR report, one with a PDF report, one without
any. Everything is deterministic (fixed UIDs, dates and texts), like ``dicomdata``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from highdicom.sr import CodedConcept, RelationshipTypeValues
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from .dicomdata import IMPLEMENTATION_CLASS_UID, UID_ROOT, SeedPatient, SeedStudy, make_instance

REPORT_PATIENT = SeedPatient("RPT-001", "Rapport^Élise", "19700203", "F", "ISO_IR 192")
SR_STUDY = SeedStudy(UID_ROOT + "9.1", "20240105", "101500", "CT", "CT thorax", "ACC-R1", 1, 1, "RPT-SR")
PDF_STUDY = SeedStudy(UID_ROOT + "9.2", "20240210", "090000", "CT", "CT abdomen", "ACC-R2", 1, 1, "RPT-PDF")
PLAIN_STUDY = SeedStudy(UID_ROOT + "9.3", "20240315", "083000", "CT", "CT head", "ACC-R3", 1, 1, "RPT-NONE")
REPORT_STUDIES = (SR_STUDY, PDF_STUDY, PLAIN_STUDY)

AUTHOR = "Radiologue^Rita"
FINDING = "Pas de condensation focale; petit nodule du lobe supérieur droit."
IMPRESSION = "Nodule de 12.5 mm: contrôle à 6 mois."
PDF_TITLE = "Compte rendu CT abdomen"
PDF_BYTES = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)
"""A minimal one-page PDF, odd in length so that its DICOM encapsulation carries a pad byte."""
assert len(PDF_BYTES) % 2 == 1


def _concept(value: str, scheme: str, meaning: str) -> CodedConcept:
    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def sr_document(
    patient: SeedPatient = REPORT_PATIENT,
    study: SeedStudy = SR_STUDY,
    *,
    verified: bool = True,
    complete: bool = True,
    series: int = 90,
) -> Dataset:
    """A Comprehensive SR (highdicom) reporting on the study's image: text, code, num, pname, date, uidref.

    ``verified=False``: VerificationFlag UNVERIFIED, no verifying observer; ``complete=False``:
    CompletionFlag PARTIAL. ``series``: its series number, in its UIDs too.
    """
    image = make_instance(patient, study, 1, 1)
    contains = RelationshipTypeValues.CONTAINS
    findings = hd.sr.ContainerContentItem(
        name=_concept("121070", "DCM", "Findings"), relationship_type=contains
    )
    findings.ContentSequence = [
        hd.sr.TextContentItem(
            name=_concept("121071", "DCM", "Finding"), value=FINDING, relationship_type=contains
        ),
        hd.sr.CodeContentItem(
            name=_concept("363698007", "SCT", "Finding site"),
            value=_concept("39607008", "SCT", "Lung"),
            relationship_type=contains,
        ),
        hd.sr.NumContentItem(
            name=_concept("410668003", "SCT", "Length"),
            value=12.5,
            unit=_concept("mm", "UCUM", "millimeter"),
            relationship_type=contains,
        ),
    ]
    impressions = hd.sr.ContainerContentItem(
        name=_concept("121072", "DCM", "Impressions"), relationship_type=contains
    )
    impressions.ContentSequence = [
        hd.sr.TextContentItem(
            name=_concept("121073", "DCM", "Impression"), value=IMPRESSION, relationship_type=contains
        )
    ]
    root = hd.sr.ContainerContentItem(name=_concept("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = [
        hd.sr.PnameContentItem(
            name=_concept("121008", "DCM", "Person Observer Name"),
            value=AUTHOR,
            relationship_type=RelationshipTypeValues.HAS_OBS_CONTEXT,
        ),
        hd.sr.DateContentItem(
            name=_concept("111060", "DCM", "Study Date"),
            value=dt.date(2024, 1, 5),
            relationship_type=contains,
        ),
        hd.sr.UIDRefContentItem(
            name=_concept("121018", "DCM", "Procedure Study Instance UID"),
            value=study.study_uid,
            relationship_type=contains,
        ),
        findings,
        impressions,
    ]
    sr = hd.sr.ComprehensiveSR(
        evidence=[image],
        content=root,
        series_instance_uid=f"{study.study_uid}.{series}",
        series_number=series,
        sop_instance_uid=f"{study.study_uid}.{series}.1",
        instance_number=1,
        manufacturer="pacsfed",
        is_complete=complete,
        is_final=verified and complete,
        is_verified=verified,
        verifying_observer_name=AUTHOR if verified else None,
        verifying_organization="pacsfed test hospital" if verified else None,
    )
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.ContentDate = "20240106"
    sr.ContentTime = "120000"
    return sr


def pdf_document(patient: SeedPatient = REPORT_PATIENT, study: SeedStudy = PDF_STUDY) -> Dataset:
    """An Encapsulated PDF Storage instance (PS3.3 A.45.1) in the study, in its own DOC series."""
    sop_uid = study.study_uid + ".91.1"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.104.1")
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop_uid
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.study_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.AccessionNumber = study.accession
    ds.ReferringPhysicianName = "Referent^Robert"
    ds.StudyID = "R2"
    ds.SeriesInstanceUID = study.study_uid + ".91"
    ds.SeriesNumber = 91
    ds.Modality = "DOC"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = 1
    ds.ContentDate = "20240211"
    ds.ContentTime = "080000"
    ds.AcquisitionDateTime = "20240211080000"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = PDF_TITLE
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = PDF_BYTES + b"\0"
    ds.EncapsulatedDocumentLength = len(PDF_BYTES)
    return ds


@dataclass(frozen=True)
class ReportFiles:
    """The written files: every study's image, plus the SR and the PDF."""

    images: list[Path]
    sr: Path
    pdf: Path

    @property
    def all(self) -> list[Path]:
        return [*self.images, self.sr, self.pdf]


def write_report_files(directory: Path) -> ReportFiles:
    """Write the report patient's images, its SR and its PDF under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for study in REPORT_STUDIES:
        path = directory / f"{study.key}-image.dcm"
        make_instance(REPORT_PATIENT, study, 1, 1).save_as(path, enforce_file_format=True)
        images.append(path)
    sr_path, pdf_path = directory / "report-sr.dcm", directory / "report-pdf.dcm"
    sr_document().save_as(sr_path, enforce_file_format=True)
    pdf_document().save_as(pdf_path, enforce_file_format=True)
    return ReportFiles(images, sr_path, pdf_path)
