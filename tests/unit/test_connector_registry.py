"""Connector plugins are checked when loaded: a kind must declare a settings model that refuses unknown keys."""

from __future__ import annotations

import asyncio
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


class _Dist:
    name, version = "pacsfed-lab", "1.2.3"


class _Entry:
    dist = _Dist()

    def __init__(self, name: str, target: Any) -> None:
        self.name, self.target = name, target
        self.loaded = False

    def load(self) -> Any:
        self.loaded = True
        if isinstance(self.target, Exception):
            raise self.target
        return self.target


def installed(monkeypatch: pytest.MonkeyPatch, cls: type[Connector], *more: _Entry) -> None:
    entries = [_Entry("lab", cls), *more]
    found = lambda group: entries if group == "pacsfed.connectors" else []  # noqa: E731
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


class Picky(Lab):
    """Refuses an odd shelf when built, as a plugin checking its own settings might."""

    supports_reports = True  # a flag the base does not know: listed all the same

    def __init__(self, settings: Any, context: Any) -> None:
        if settings.shelf % 2:
            raise ValueError("the shelf must be even")
        super().__init__(settings, context)


def test_only_allowed_kinds_are_imported_and_their_sources_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    other = _Entry("other", ImportError("would fail"))
    installed(monkeypatch, Lab, other)
    with pytest.raises(
        ConfigError, match="connector plugin 'other' \\(package pacsfed-lab\\) failed to load: ImportError"
    ):
        settings_from_mapping({"sources": []})
    other.loaded = False
    settings = settings_from_mapping(
        {"connectors": {"allow": ["lab"]}, "sources": [{"id": "l", "kind": "lab", "shelf": 2}]}
    )
    assert not other.loaded
    assert registry.load_connector_classes(settings.connectors.allow) == {"lab": Lab}
    with pytest.raises(
        ConfigError, match=r"sources\.0: kind 'other' is not allowed by connectors.allow \(allowed: 'lab'\)"
    ):
        settings_from_mapping({"connectors": {"allow": ["lab"]}, "sources": [{"id": "o", "kind": "other"}]})
    with pytest.raises(ConfigError, match="connectors.allow names 'dimse', not installed"):
        settings_from_mapping({"connectors": {"allow": ["lab", "dimse"]}})


def test_a_connector_that_refuses_its_settings_is_a_config_error_naming_the_source(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, Picky)
    settings = settings_from_mapping({"sources": [{"id": "odd", "kind": "lab", "shelf": 3}]})
    with pytest.raises(
        ConfigError, match=r"source 'odd' \(kind 'lab'\): the connector cannot be built \(ValueError"
    ):
        asyncio.run(registry.check_connectors(settings.sources))


def test_installed_kinds_list_packages_flags_failures_and_what_allow_leaves_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, Picky, _Entry("broken", ImportError("no module named nope")), _Entry("other", Lab))
    kinds = {kind.kind: kind for kind in registry.installed_kinds()}
    assert kinds["lab"].package == "pacsfed-lab" and kinds["lab"].version == "1.2.3"
    assert kinds["lab"].capabilities == {
        "demographic_search": False,
        "instance_query": False,
        "issuer_of_patient_id": False,
        "reports": True,
        "retrieve": False,
        "series_query": False,
        "study_keys": False,
        "uid_lists": False,
    }
    assert "failed to load: ImportError: no module named nope" in (kinds["broken"].error or "")
    assert kinds["other"].error == "connector plugin 'other' declares kind 'lab'"
    limited = {kind.kind: kind for kind in registry.installed_kinds(["lab"])}
    assert not limited["broken"].allowed and limited["broken"].error is None
