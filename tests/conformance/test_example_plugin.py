"""The conformance kit run on the example plugin of tests/plugins (no network: the core checks only)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from connectors.base import Connector
from connectors.testing import ConnectorConformance, Endpoint, KitStudy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "pacsfed-example-connector"))
from pacsfed_example_connector import ExampleConnector


class ExampleShelf:
    """The example kind's "peer": the exams its source settings list."""

    def __init__(self) -> None:
        self.exams: list[dict[str, str]] = []


class TestExamplePlugin(ConnectorConformance):
    """The example kind answers from its settings: seeding writes them."""

    connector_class: ClassVar[type[Connector]] = ExampleConnector

    @pytest.fixture
    def conformance_peer(self) -> ExampleShelf:
        return SHELF

    def source_settings(self, peer: ExampleShelf, endpoint: Endpoint | None = None) -> Mapping[str, Any]:
        return {"kind": "example", "id": "kit-example", "greeting": "", "exams": peer.exams}

    def seed(self, peer: ExampleShelf, studies: Sequence[KitStudy]) -> None:
        peer.exams = [
            {
                "patient_id": s.patient_id,
                "patient_name": s.patient_name,
                "patient_birth_date": s.patient_birth_date.strftime("%Y%m%d"),
                "patient_sex": s.patient_sex,
                "study_instance_uid": s.study_instance_uid,
                "study_date": s.study_date.strftime("%Y%m%d"),
                "study_time": s.study_time.strftime("%H%M%S"),
                "accession_number": s.accession_number,
                "description": s.description,
                "modality": s.modality,
            }
            for s in studies
        ]


SHELF = ExampleShelf()
