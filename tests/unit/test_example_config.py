"""deploy/pacsfed.example.yaml loads, is refused by serve only for auth, and documents every settings key."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from connectors.dicomweb_settings import DicomwebSourceSettings
from connectors.dimse_settings import DimseSourceSettings
from federation.errors import ConfigError
from federation.settings import Settings, load_settings
from pacsfed.app import create_app

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "pacsfed.example.yaml"
_KINDS: dict[str, type[BaseModel]] = {"dimse": DimseSourceSettings, "dicomweb": DicomwebSourceSettings}


def _models(annotation: object) -> list[type[BaseModel]]:
    """The settings models an annotation holds (through Optional, unions, lists and Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models(arg))
    return found


def _keys(model: type[BaseModel]) -> set[str]:
    """Every key name of a model and of the models nested in it."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for nested in _models(field.annotation):
            names |= _keys(nested)
    return names


def _documented(text: str, key: str) -> bool:
    """Whether ``key:`` appears in key position: a line's key, a commented ``# key:``, or a flow mapping's key."""
    pattern = rf"(?:^[ \t]*(?:#[ \t]*)?(?:-[ \t]+)?|[{{,][ \t]*){re.escape(key)}:"
    return re.search(pattern, text, re.MULTILINE) is not None


def _sections(text: str) -> dict[str, str]:
    """The file's text cut at its top-level keys."""
    parts = re.split(r"^(?=[a-z_]+:)", text, flags=re.MULTILINE)
    return {part.split(":", 1)[0]: part for part in parts if re.match(r"[a-z_]+:", part)}


def _source_entries(section: str) -> dict[str, str]:
    """The text of one example source of each kind (the first ``- id:`` entry with that kind)."""
    entries: dict[str, str] = {}
    for entry in re.split(r"^(?=  - )", section, flags=re.MULTILINE)[1:]:
        kind = re.search(r"^\s+kind:\s*([a-z]+)", entry, re.MULTILINE)
        if kind is not None:
            entries.setdefault(kind.group(1), entry)
    return entries


def test_example_loads_with_the_project_loader() -> None:
    settings = load_settings(EXAMPLE)
    assert {source.kind for source in settings.sources} == set(_KINDS)
    assert settings.server.mode == "production"


def test_serve_refuses_the_example_only_until_auth_is_filled_in() -> None:
    settings = load_settings(EXAMPLE)
    with pytest.raises(ConfigError, match="auth.mode is none"):
        create_app(settings)
    auth = {"mode": "api_key", "api_keys": [{"id": "ehr", "sha256": "0" * 64}]}
    create_app(load_settings(EXAMPLE, auth=auth))


def test_every_settings_key_is_in_the_example() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    sections = _sections(text)
    missing: list[str] = []
    for name, field in Settings.model_fields.items():
        section = sections.get(name)
        if section is None:
            missing.append(name)
            continue
        if name == "sources":
            entries = _source_entries(section)
            for kind, model in _KINDS.items():
                entry = entries.get(kind, "")
                missing += [
                    f"sources[{kind}].{key}" for key in sorted(_keys(model)) if not _documented(entry, key)
                ]
            continue
        for model in _models(field.annotation):
            missing += [f"{name}.{key}" for key in sorted(_keys(model)) if not _documented(section, key)]
    assert not missing, f"keys not documented in {EXAMPLE.name}: {missing}"
