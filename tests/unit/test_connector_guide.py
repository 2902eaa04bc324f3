"""docs/writing-a-connector.md and the connector SDK stay in step: every public member documented, none invented."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.testing import ConnectorConformance, NetworkConnectorConformance

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "writing-a-connector.md"
DOCUMENTED_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Connector, SourceAnswer, ConnectorContext, ConnectorConformance, NetworkConnectorConformance)
}


def public_members(cls: type) -> set[str]:
    """What a class itself defines for its users: attributes, class variables, methods, fixtures, ``__init__``."""
    names = {name for name in vars(cls) if not name.startswith("_") and not name.startswith("test_")}
    names |= {name for name in vars(cls).get("__annotations__", {}) if not name.startswith("_")}
    init = vars(cls).get("__init__")
    if init is not None and not dataclasses.is_dataclass(cls):
        names.add("__init__")
        names |= set(re.findall(r"self\.([a-z]\w*)\s*=", inspect.getsource(init)))
    return names


def documented() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {name: set() for name in DOCUMENTED_CLASSES}
    for owner, member in re.findall(r"^#### `(\w+)\.(\w+)", GUIDE.read_text(encoding="utf-8"), re.MULTILINE):
        found.setdefault(owner, set()).add(member)
    return found


@pytest.mark.parametrize("name", sorted(DOCUMENTED_CLASSES))
def test_every_public_member_has_a_heading_and_every_heading_a_member(name: str) -> None:
    members, headings = public_members(DOCUMENTED_CLASSES[name]), documented()[name]
    assert not members - headings, f"{name}: undocumented in {GUIDE.name}: {sorted(members - headings)}"
    assert not headings - members, (
        f"{name}: documented in {GUIDE.name} but gone: {sorted(headings - members)}"
    )


def test_no_heading_names_a_class_outside_the_reference() -> None:
    assert set(documented()) == set(DOCUMENTED_CLASSES)


def test_every_check_of_the_kit_is_named_in_the_guide_and_no_other() -> None:
    checks = {
        name
        for cls in (ConnectorConformance, NetworkConnectorConformance)
        for name in vars(cls)
        if name.startswith("test_")
    }
    named = set(re.findall(r"`(test_\w+)`", GUIDE.read_text(encoding="utf-8")))
    assert checks == named


def test_every_capability_flag_of_the_base_is_explained_in_the_flags_list() -> None:
    flags = {name for name in dir(Connector) if name.startswith("supports_")}
    section = GUIDE.read_text(encoding="utf-8").split("### Capability flags", 1)[1].split("\n## ", 1)[0]
    assert flags == set(re.findall(r"^- `(supports_\w+)`", section, re.MULTILINE))
