"""A connector kind pacsfed does not ship: it answers from a list of exams in its own config key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.base import Connector, SourceAnswer
from connectors.dicom import beyond_alphabetic, parse_da, parse_tm, person_name_groups
from federation.models import Deadline, StudyQuery, StudyRecord
from federation.settings import SourceSettings


class ExampleExam(BaseModel):
    """One exam the example source holds."""

    model_config = ConfigDict(extra="forbid")

    patient_id: str
    study_instance_uid: str
    description: str
    study_date: str = ""
    """A DA value (``YYYYMMDD``), read with pacsfed's public DICOM helpers."""
    study_time: str = ""
    """A TM value (``HHMMSS``)."""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    modality: str = ""


class ExampleSourceSettings(SourceSettings):
    """The common source keys plus this kind's own: ``exams`` and ``greeting``."""

    kind: Literal["example"]
    exams: list[ExampleExam] = Field(default_factory=list)
    greeting: str = "hello"
    """Put before each description (none when empty)."""


class ExampleConnector(Connector):
    """Answers every query from its configured exams."""

    kind = "example"
    settings_model = ExampleSourceSettings
    settings: ExampleSourceSettings

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """The configured exams of the asked PatientID."""
        records = [self._record(exam) for exam in self.settings.exams if exam.patient_id == query.patient_id]
        return SourceAnswer(records=records)

    def _record(self, exam: ExampleExam) -> StudyRecord:
        """One configured exam as a normalized record."""
        names = person_name_groups(exam.patient_name)
        return StudyRecord(
            source_id=self.id,
            study_instance_uid=exam.study_instance_uid,
            patient_id=exam.patient_id,
            description=f"{self.settings.greeting}: {exam.description}"
            if self.settings.greeting
            else exam.description,
            study_date=parse_da(exam.study_date),
            study_time=parse_tm(exam.study_time),
            patient_name=next((group for group in names if group), None),
            patient_name_groups=beyond_alphabetic(names),
            patient_birth_date=parse_da(exam.patient_birth_date),
            patient_sex=exam.patient_sex or None,
            accession_number=exam.accession_number or None,
            modalities=(exam.modality,) if exam.modality else (),
        )

    async def ping(self, deadline: Deadline) -> None:
        """Always there."""
