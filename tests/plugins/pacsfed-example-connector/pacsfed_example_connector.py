"""A connector kind pacsfed does not ship: it answers from a list of exams in its own config key."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.base import Connector, SourceAnswer
from connectors.dicom import parse_da
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


class ExampleSourceSettings(SourceSettings):
    """The common source keys plus this kind's own: ``exams`` and ``greeting``."""

    kind: Literal["example"]
    exams: list[ExampleExam] = Field(default_factory=list)
    greeting: str = "hello"


class ExampleConnector(Connector):
    """Answers every query from its configured exams."""

    kind = "example"
    settings_model = ExampleSourceSettings
    settings: ExampleSourceSettings

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """The configured exams of the asked PatientID."""
        records = [
            StudyRecord(
                source_id=self.id,
                study_instance_uid=exam.study_instance_uid,
                patient_id=exam.patient_id,
                description=f"{self.settings.greeting}: {exam.description}",
                study_date=parse_da(exam.study_date),
            )
            for exam in self.settings.exams
            if exam.patient_id == query.patient_id
        ]
        return SourceAnswer(records=records)

    async def ping(self, deadline: Deadline) -> None:
        """Always there."""
