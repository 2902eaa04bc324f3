"""pacsfed's conformance kit (``connectors.testing``) run on the FHIR connector, against the FHIR endpoint the tests serve."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar

import pytest
from fhir_endpoint import MRN, FhirEndpoint
from forward_proxy import ForwardProxy
from pacsfed_fhir_connector import FhirConnector

from connectors.base import Connector
from connectors.testing import Endpoint, KitStudy, NetworkConnectorConformance, kit_studies

_SEX = {"M": "male", "F": "female", "O": "other"}


@pytest.fixture(scope="module")
def kit_fhir() -> Iterator[FhirEndpoint]:
    """One FHIR endpoint for the kit's checks, seeded once by the kit."""
    endpoint = FhirEndpoint().start()
    yield endpoint
    endpoint.stop()


def _family_given(group: str) -> tuple[str, list[str]]:
    family, _, given = group.partition("^")
    return family, [given] if given else []


def seed_kit_studies(endpoint: FhirEndpoint, studies: Sequence[KitStudy]) -> None:
    """Each kit study as an ImagingStudy of its Patient (one per PatientID), names in every group given.

    Idempotent, as the kit asks: it seeds once per test class, and the classes here share the endpoint.
    """
    patients = {p["identifier"][0]["value"]: pid for pid, p in endpoint.patients.items()}
    held = {s["identifier"][0]["value"] for s in endpoint.studies}
    for study in studies:
        if f"urn:oid:{study.study_instance_uid}" in held:
            continue
        if study.patient_id not in patients:
            groups = [*study.patient_name.split("="), "", ""]
            family, given = _family_given(groups[0])
            patients[study.patient_id] = endpoint.add_patient(
                MRN,
                study.patient_id,
                family,
                given,
                study.patient_birth_date.isoformat(),
                _SEX[study.patient_sex],
                ideographic=_family_given(groups[1]) if groups[1] else None,
                phonetic=_family_given(groups[2]) if groups[2] else None,
            )
        # FHIR wants a time zone with a time; the kit's times are local wall times, which the
        # connector keeps as written.
        endpoint.add_study(
            patients[study.patient_id],
            study.study_instance_uid,
            accession=study.accession_number,
            started=f"{study.study_date.isoformat()}T{study.study_time.isoformat()}+01:00",
            modalities=[study.modality],
            description=study.description,
            series=1,
            instances=1,
        )


class TestFhirConnectorConformance(NetworkConnectorConformance):
    """The kit's checks: normalized records, empty answers, names beyond ASCII, deadlines, dead peers, clean-up."""

    connector_class: ClassVar[type[Connector]] = FhirConnector

    @pytest.fixture
    def conformance_peer(self, kit_fhir: FhirEndpoint) -> FhirEndpoint:
        return kit_fhir

    def source_settings(self, peer: FhirEndpoint, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        url = peer.url if endpoint is None else f"http://{endpoint.host}:{endpoint.port}/fhir"
        return {"kind": "fhir", "id": "kit-fhir", "base_url": url, "identifier_system": MRN}

    def seed(self, peer: FhirEndpoint, studies: Sequence[KitStudy]) -> None:
        seed_kit_studies(peer, studies)


class TestFhirConnectorConformanceWithItsOwnClient(TestFhirConnectorConformance):
    """The same checks for a source with a client of its own (``verify_tls: false``), made and closed by it."""

    def source_settings(self, peer: FhirEndpoint, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        return {**super().source_settings(peer, endpoint), "verify_tls": False}


@pytest.fixture(scope="module")
def kit_proxy() -> Iterator[ForwardProxy]:
    """A forward proxy for the kit's run through one."""
    started = ForwardProxy().start()
    yield started
    started.stop()


class TestFhirConnectorConformanceThroughAProxy(TestFhirConnectorConformance):
    """The same checks for a source with ``proxy:`` (a client of its own, one connection per request)."""

    @pytest.fixture
    def conformance_peer(self, kit_fhir: FhirEndpoint, kit_proxy: ForwardProxy) -> FhirEndpoint:
        self.proxy = kit_proxy
        return kit_fhir

    def source_settings(self, peer: FhirEndpoint, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        return {**super().source_settings(peer, endpoint), "proxy": self.proxy.url}


def test_seeding_twice_holds_each_study_once(fhir: FhirEndpoint) -> None:
    seed_kit_studies(fhir, kit_studies())
    seed_kit_studies(fhir, kit_studies())
    assert len(fhir.studies) == len(kit_studies())
    assert len(fhir.patients) == len({s.patient_id for s in kit_studies()})
