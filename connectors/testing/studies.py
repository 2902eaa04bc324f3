"""The studies the conformance kit seeds into a connector's peer: plain descriptions, not DICOM files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

__all__ = ["KitStudy", "NO_SUCH_PATIENT", "kit_studies"]  # noqa: RUF022 - plain sorted() order

_UID_ROOT = "2.25.31415926535897932384626433832795"
"""A fixed UUID-derived root (PS3.5 B.2): the kit's UIDs are the same in every run, so seeding is idempotent."""


@dataclass(frozen=True)
class KitStudy:
    """One study (one series, one instance) as the kit asks a peer to hold it.

    A DICOM peer stores it as an instance in ISO_IR 192 (UTF-8); a FHIR peer as an ``ImagingStudy``
    with its ``Patient``; whatever the connector reads, the fields below must come back normalized.
    """

    patient_id: str
    patient_name: str
    """A DICOM PN: ``Family^Given``, with ``=`` between component groups (``Yamada^Tarou=山田^太郎``)."""
    patient_birth_date: dt.date
    patient_sex: str
    study_instance_uid: str
    study_date: dt.date
    study_time: dt.time
    accession_number: str
    description: str
    modality: str
    issuer_of_patient_id: str | None = None
    series_instance_uid: str = ""
    sop_instance_uid: str = ""

    def __post_init__(self) -> None:
        if not self.series_instance_uid:
            object.__setattr__(self, "series_instance_uid", f"{self.study_instance_uid}.1")
        if not self.sop_instance_uid:
            object.__setattr__(self, "sop_instance_uid", f"{self.study_instance_uid}.1.1")

    @property
    def family_name(self) -> str:
        """The family name of the first component group."""
        return self.patient_name.split("=", 1)[0].split("^", 1)[0]


def _study(
    n: int, patient_id: str, name: str, born: str, sex: str, modality: str, description: str
) -> KitStudy:
    return KitStudy(
        patient_id=patient_id,
        patient_name=name,
        patient_birth_date=dt.date.fromisoformat(born),
        patient_sex=sex,
        study_instance_uid=f"{_UID_ROOT}.{n}",
        study_date=dt.date(2024, 1, n),
        study_time=dt.time(9, n, 30),
        accession_number=f"KIT{n:04d}",
        description=description,
        modality=modality,
    )


def kit_studies() -> tuple[KitStudy, ...]:
    """The kit's studies: two for one patient, and one per patient whose name is beyond ASCII."""
    return (
        _study(1, "KIT-0001", "Kitson^Anna", "1961-02-03", "F", "CT", "CT chest kit"),
        _study(2, "KIT-0001", "Kitson^Anna", "1961-02-03", "F", "MR", "MR knee kit"),
        _study(3, "KIT-0002", "Müller^Jürgen", "1970-05-06", "M", "CR", "Thorax Übersicht"),
        _study(4, "KIT-0003", "Ψάρρας^Δημήτριος", "1982-07-08", "M", "CT", "Αξονική κοιλίας"),
        _study(5, "KIT-0004", "Иванов^Пётр", "1955-09-10", "M", "MR", "МРТ головы"),
        _study(6, "KIT-0005", "Yamada^Tarou=山田^太郎=やまだ^たろう", "1948-11-12", "M", "CT", "胸部CT"),
    )


NO_SUCH_PATIENT = "KIT-NOBODY-0000"
"""A PatientID no kit study has: asking for it must give an empty answer."""
