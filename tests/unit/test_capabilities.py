"""Capability flags on the connector base: the engine asks a connector only for what it declares it can do."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from connectors import DicomwebConnector, DimseConnector
from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dicomweb_settings import DicomwebSourceSettings
from federation.engine.engine import FederationEngine
from federation.engine.request import HistoryRequest
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


class Searching(Recording):
    """Declares demographic search; its one study carries a name and a birth date."""

    supports_demographic_search = True

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        self.queries.append(query)
        return SourceAnswer(
            [
                StudyRecord(
                    source_id=self.id,
                    study_instance_uid="1.2.3",
                    patient_id=query.patient_id or "A123",
                    patient_name="Kitson^Anna",
                    patient_birth_date=dt.date(1961, 2, 3),
                )
            ]
        )


def _named(cls: type[Recording], source_id: str) -> Recording:
    connector = cls()
    connector.settings = connector.settings.model_copy(update={"id": source_id, "match_issuer": False})
    connector.info = connector.info.model_copy(update={"id": source_id})
    return connector


async def test_a_demographic_query_is_not_sent_to_a_connector_that_cannot_search() -> None:
    able, unable = _named(Searching, "able"), _named(Recording, "unable")
    engine = FederationEngine([able, unable], None)
    history = await engine.patient_history(PatientQuery(family_name="Kitson", birth_date=dt.date(1961, 2, 3)))
    assert unable.queries == []
    assert any(q.patient_name for q in able.queries)
    assert all(q.patient_id is None for q in able.queries)
    statuses = {o.source.id: (o.status, o.error) for o in history.sources}
    assert statuses["unable"] == (
        SourceStatus.UNSUPPORTED,
        "this source's connector cannot search by name and birth date",
    )
    assert statuses["able"][0] is SourceStatus.OK
    assert not history.complete


async def test_a_candidate_search_skips_a_connector_that_cannot_search_and_says_so() -> None:
    able, unable = _named(Searching, "able"), _named(Searching, "unable")
    unable.supports_demographic_search = False  # type: ignore[misc]  # this one instance cannot
    engine = FederationEngine([able, unable], None)
    history = await engine.patient_history(
        PatientQuery(patient_id="A123"), HistoryRequest(include_candidates=True)
    )
    assert [q.patient_id for q in unable.queries] == ["A123"]
    assert any(q.patient_name for q in able.queries)
    outcomes = {o.source.id: o for o in history.sources}
    assert outcomes["unable"].status is SourceStatus.OK
    assert outcomes["unable"].warnings == ("candidate search: not supported by this source's connector",)
    assert outcomes["able"].warnings == ()


def test_the_built_in_connectors_declare_demographic_search_and_every_search_level() -> None:
    for cls in (DimseConnector, DicomwebConnector):
        assert cls.supports_demographic_search
        assert cls.supports_study_keys and cls.supports_series_query and cls.supports_instance_query
    assert not Connector.supports_demographic_search
    assert not (
        Connector.supports_study_keys or Connector.supports_series_query or Connector.supports_instance_query
    )
