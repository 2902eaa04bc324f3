"""Connector plugins are checked when loaded: a kind must declare a settings model that refuses unknown keys."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import ConfigDict

import connectors.registry as registry
import federation.settings as settings_module
from connectors.base import Connector, SourceAnswer
from federation.errors import ConfigError
from federation.models import Deadline, StudyQuery
from federation.settings import SourceSettings, settings_from_mapping


class LabSettings(SourceSettings):
    kind: Literal["lab"]
    shelf: int


class LenientSettings(SourceSettings):
    model_config = ConfigDict(extra="allow")
    kind: Literal["lab"]


class Lab(Connector):
    kind = "lab"
    settings_model = LabSettings

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        return SourceAnswer(())

    async def ping(self, deadline: Deadline) -> None:
        """Always there."""


class NoModel(Lab):
    settings_model = None  # type: ignore[assignment]


class Lenient(Lab):
    settings_model = LenientSettings


class _Entry:
    def __init__(self, name: str, target: Any) -> None:
        self.name, self.target = name, target

    def load(self) -> Any:
        return self.target


def installed(monkeypatch: pytest.MonkeyPatch, cls: type[Connector]) -> None:
    found = lambda group: [_Entry("lab", cls)] if group == "pacsfed.connectors" else []  # noqa: E731
    monkeypatch.setattr(registry, "entry_points", found)
    monkeypatch.setattr(settings_module, "entry_points", found)


def test_a_plugin_kind_is_validated_by_its_own_model(monkeypatch: pytest.MonkeyPatch) -> None:
    installed(monkeypatch, Lab)
    assert registry.load_connector_classes() == {"lab": Lab}
    settings = settings_from_mapping({"sources": [{"id": "l", "kind": "lab", "shelf": 3}]})
    assert isinstance(settings.sources[0], LabSettings) and settings.sources[0].shelf == 3
    with pytest.raises(ConfigError, match=r"sources\.0\.lab\.shelve: Extra inputs are not permitted"):
        settings_from_mapping({"sources": [{"id": "l", "kind": "lab", "shelf": 3, "shelve": 4}]})
    with pytest.raises(ConfigError, match=r"sources\.0: no connector is installed for kind 'dimse'"):
        settings_from_mapping({"sources": [{"id": "d", "kind": "dimse"}]})


@pytest.mark.parametrize("cls", [NoModel, Lenient])
def test_a_plugin_without_a_strict_settings_model_is_refused_when_loaded(
    monkeypatch: pytest.MonkeyPatch, cls: type[Connector]
) -> None:
    installed(monkeypatch, cls)
    with pytest.raises(ConfigError, match="connector plugin 'lab'"):
        settings_from_mapping({"sources": []})
    with pytest.raises(ConfigError, match="settings_model"):
        registry.load_connector_classes()
