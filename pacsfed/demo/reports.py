"""The demo's reports: a short Comprehensive SR or an encapsulated PDF for the exams that list one.

An exam has a report here exactly when its ModalitiesInStudy lists ``SR`` (a Comprehensive SR,
PS3.3 A.35.3, rooted in a TID 2000 Basic Diagnostic Imaging Report) or ``DOC`` (an Encapsulated
PDF, PS3.3 A.45.1). Each report is the one instance of its own series, so both simulated peers can
list it at the SERIES and IMAGE levels and hand it out whole. Texts, authors and dates are synthetic
and fixed; every UID is derived from the study's. Every SR is COMPLETE; all are VERIFIED but one,
DEMO-005's night-time head CT, a resident's preliminary report (UNVERIFIED, no verifying observer),
so that the page and FHIR show a report that is not final.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from pacsfed.demo.patients import UTF8_CHARSET, demo_studies, study_uid

__all__ = ["COMPREHENSIVE_SR", "ENCAPSULATED_PDF", "demo_reports", "one_page_pdf", "series_record"]

COMPREHENSIVE_SR = UID("1.2.840.10008.5.1.4.1.1.88.33")
ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
_IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.999.0.1")
_SERIES_NUMBER = {"SR": 90, "DOC": 91}
_SERIES_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "SeriesDescription",
)


@dataclass(frozen=True, slots=True)
class _Report:
    kind: str  # "SR" or "DOC": the series Modality
    author: str
    date: str
    time: str
    title: str
    findings: tuple[str, ...]
    impression: str
    measurement: tuple[str, float, str] | None = None  # concept, value, UCUM unit
    verified: bool = True  # False: VerificationFlag UNVERIFIED (a preliminary report)


_REPORTS = {
    study_uid(1, 3): _Report(
        "DOC", "Claes^Sofie", "20221120", "113000", "Verslag echografie abdomen",
        ("Lever van normale grootte en echogeniciteit.",
         "Galblaas met enkele kleine stenen, zonder wandverdikking.",
         "Nieren en milt zonder bijzonderheden."),
        "Cholecystolithiasis zonder tekenen van cholecystitis.",
    ),
    study_uid(1, 5): _Report(
        "SR", "Moreau^Hélène", "20240118", "091500", "Compte rendu IRM genou droit",
        ("Fissure horizontale de la corne postérieure du ménisque médial.",
         "Ligaments croisés et collatéraux intacts. Épanchement articulaire modéré."),
        "Lésion méniscale médiale; avis orthopédique conseillé.",
    ),
    study_uid(2, 3): _Report(
        "SR", "Moreau^Hélène", "20240329", "113000", "Compte rendu scanner abdomino-pelvien",
        ("Appendice augmenté de calibre avec infiltration de la graisse péri-appendiculaire.",
         "Pas de pneumopéritoine, pas de collection."),
        "Aspect d'appendicite aiguë non compliquée.",
        ("Diamètre appendiculaire", 11.0, "mm"),
    ),
    study_uid(4, 3): _Report(
        "SR", "Leroy^Thomas", "20230517", "081000", "Compte rendu coroscanner",
        ("Plaque calcifiée de l'artère interventriculaire antérieure proximale, sténose 50 à 70 %.",
         "Coronaire droite et circonflexe sans sténose significative."),
        "Sténose intermédiaire de l'IVA proximale; test d'ischémie conseillé.",
        ("Score calcique (Agatston)", 112.0, "1"),
    ),
    study_uid(5, 1): _Report(
        "SR", "De Smet^Koen", "20210930", "034000", "Verslag CT hersenen",
        ("Geen intracraniële bloeding, geen midlijnverschuiving.",
         "Geen schedelfractuur. Ventrikels van normale grootte."),
        "Geen acute intracraniële afwijkingen.", verified=False,
    ),
}  # fmt: skip


def demo_reports(source_id: str) -> list[Dataset]:
    """The report instances one demo hospital holds (one per reported study it holds), oldest first."""
    return [
        _instance(_REPORTS[ds.StudyInstanceUID], ds)
        for ds in demo_studies(source_id)
        if ds.StudyInstanceUID in _REPORTS
    ]


def series_record(instance: Dataset) -> Dataset:
    """The SERIES-level record of a report instance (the only one in its series)."""
    record = Dataset()
    for keyword in _SERIES_KEYWORDS:
        if keyword in instance:
            record.add(instance[keyword])
    record.NumberOfSeriesRelatedInstances = 1
    return record


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _item(relationship: str, kind: str, name: Dataset, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = relationship, kind
    item.ConceptNameCodeSequence = [name]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _instance(report: _Report, study: Dataset) -> Dataset:
    uid = f"{study.StudyInstanceUID}.{_SERIES_NUMBER[report.kind]}"
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = COMPREHENSIVE_SR if report.kind == "SR" else ENCAPSULATED_PDF
    ds.file_meta.MediaStorageSOPInstanceUID = UID(f"{uid}.1")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = _IMPLEMENTATION_CLASS_UID
    ds.SpecificCharacterSet = UTF8_CHARSET
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    for keyword in (
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
        "StudyDescription",
    ):  # fmt: skip
        ds.add(study[keyword])
    ds.StudyID = ""
    ds.SeriesInstanceUID = uid
    ds.Modality = report.kind
    ds.SeriesNumber = _SERIES_NUMBER[report.kind]
    ds.SeriesDate, ds.SeriesTime = report.date, report.time
    ds.SeriesDescription = report.title
    ds.Manufacturer = "pacsfed demo"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = report.date, report.time
    if report.kind == "SR":
        _sr_content(ds, report)
    else:
        _pdf_content(ds, report)
    return ds


def _sr_content(ds: Dataset, report: _Report) -> None:
    """SR Document General and Content modules (PS3.3 C.17.2, C.17.3), TID 2000's outline."""
    contains = "CONTAINS"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED" if report.verified else "UNVERIFIED"
    if report.verified:  # Type 1C: present exactly when VERIFIED (PS3.3 C.17.2)
        verifier = Dataset()
        verifier.VerifyingObserverName = report.author
        verifier.VerifyingObserverIdentificationCodeSequence = Sequence()
        verifier.VerifyingOrganization = "pacsfed demo"
        verifier.VerificationDateTime = report.date + report.time
        ds.VerifyingObserverSequence = [verifier]
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    ds.PerformedProcedureCodeSequence = Sequence()
    template = Dataset()
    template.MappingResource, template.TemplateIdentifier = "DCMR", "2000"
    ds.ContentTemplateSequence = [template]
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    findings = _item(
        contains, "CONTAINER", _code("121070", "DCM", "Findings"), ContinuityOfContent="SEPARATE"
    )
    findings.ContentSequence = [
        _item(contains, "TEXT", _code("121071", "DCM", "Finding"), TextValue=text) for text in report.findings
    ]
    if report.measurement is not None:
        concept, value, unit = report.measurement
        measured = Dataset()
        measured.NumericValue = f"{value:g}"
        measured.MeasurementUnitsCodeSequence = [
            _code(unit, "UCUM", "no units" if unit == "1" else "millimeter")
        ]
        findings.ContentSequence.append(
            _item(contains, "NUM", _code("DEMO-1", "99PACSFED", concept), MeasuredValueSequence=[measured])
        )
    impressions = _item(
        contains, "CONTAINER", _code("121072", "DCM", "Impressions"), ContinuityOfContent="SEPARATE"
    )
    impressions.ContentSequence = [
        _item(contains, "TEXT", _code("121073", "DCM", "Impression"), TextValue=report.impression)
    ]
    ds.ContentSequence = [
        _item(
            "HAS OBS CONTEXT",
            "PNAME",
            _code("121008", "DCM", "Person Observer Name"),
            PersonName=report.author,
        ),
        findings,
        impressions,
    ]


def _pdf_content(ds: Dataset, report: _Report) -> None:
    """Encapsulated Document module (PS3.3 C.24.2): a one-page PDF of the report's text."""
    pdf = one_page_pdf([report.title, "", *report.findings, "", report.impression, "", report.author])
    ds.ConversionType = "WSD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = report.title
    ds.ConceptNameCodeSequence = Sequence()
    ds.AcquisitionDateTime = report.date + report.time
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + b"\0" * (len(pdf) % 2)
    ds.EncapsulatedDocumentLength = len(pdf)


def one_page_pdf(lines: list[str]) -> bytes:
    """A minimal PDF 1.4 page of Helvetica text (WinAnsi: Latin accents), with a correct xref table."""
    escaped = [
        line.replace("^", " ").encode("cp1252", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(")
        for line in lines
    ]
    text = (
        b"BT /F1 11 Tf 50 780 Td 14 TL "
        + b" ".join(b"(" + line.replace(b")", b"\\)") + b") Tj T*" for line in escaped)
        + b" ET"
    )
    objects = [
        b"<</Type/Catalog/Pages 2 0 R>>",
        b"<</Type/Pages/Kids[3 0 R]/Count 1>>",
        b"<</Type/Page/Parent 2 0 R/MediaBox[0 0 595 842]/Resources<</Font<</F1 4 0 R>>>>/Contents 5 0 R>>",
        b"<</Type/Font/Subtype/Type1/BaseFont/Helvetica/Encoding/WinAnsiEncoding>>",
        b"<</Length %d>>stream\n" % len(text) + text + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
