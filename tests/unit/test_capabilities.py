"""Capability flags on the connector base: the engine asks a connector only for what it declares it can do."""

from __future__ import annotations

import logging

import pytest

from connectors import DicomwebConnector, DimseConnector
from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.engine.engine import FederationEngine
from federation.models import Deadline, PatientQuery, SourceStatus, StudyQuery, StudyRecord


class Recording(Connector):
    """Records the StudyQueries it is sent and answers one study for the asked PatientID."""

    kind = "recording"
    settings_model = DicomwebSourceSettings

    supports_issuer_of_patient_id = True

    def __init__(self) -> None:
        settings = DicomwebSourceSettings(
            id="hosp-a", kind="dicomweb", url="http://unused", issuer="HOSP_A", match_issuer=True
        )
        super().__init__(settings, ConnectorContext())
        self.queries: list[StudyQuery] = []

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        self.queries.append(query)
        return SourceAnswer(
            [StudyRecord(source_id=self.id, study_instance_uid="1.2.3", patient_id=query.patient_id)]
        )

    async def ping(self, deadline: Deadline) -> None:
        """Always there."""


class RecordingWithoutIssuer(Recording):
    """The same connector, declaring it cannot send IssuerOfPatientID."""

    supports_issuer_of_patient_id = False


@pytest.mark.parametrize(("cls", "sent"), [(Recording, "HOSP_A"), (RecordingWithoutIssuer, None)])
async def test_issuer_of_patient_id_is_sent_only_to_a_connector_that_supports_it(
    cls: type[Recording], sent: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    connector = cls()
    with caplog.at_level(logging.WARNING, logger="federation"):
        engine = FederationEngine([connector], None)
    said = "match_issuer is set, but a recording connector cannot send IssuerOfPatientID" in caplog.text
    assert said is (sent is None)
    history = await engine.patient_history(PatientQuery(patient_id="A123", issuer="HOSP_A"))
    assert [o.status for o in history.sources] == [SourceStatus.OK]
    assert [e.study_instance_uid for e in history.exams] == ["1.2.3"]
    assert [(q.patient_id, q.issuer_of_patient_id) for q in connector.queries] == [("A123", sent)]


def test_the_built_in_connectors_declare_the_issuer_capability() -> None:
    assert DimseConnector.supports_issuer_of_patient_id and DicomwebConnector.supports_issuer_of_patient_id
    assert not Connector.supports_issuer_of_patient_id
