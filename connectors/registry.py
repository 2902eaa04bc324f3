"""Connector registry: kinds found through the ``pacsfed.connectors`` entry points, checked when loaded."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import entry_points

from connectors.base import Connector, ConnectorContext
from federation.errors import ConfigError
from federation.settings import CONNECTOR_ENTRY_POINTS, SourceSettings, checked_settings_model

ENTRY_POINT_GROUP = CONNECTOR_ENTRY_POINTS


def load_connector_classes() -> dict[str, type[Connector]]:
    """Every installed connector class by kind; built-ins register the same way as plugins."""
    found: dict[str, type[Connector]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
        except Exception as exc:
            raise ConfigError(f"connector plugin {entry.name!r} failed to load: {exc}") from exc
        if not (isinstance(cls, type) and issubclass(cls, Connector)):
            raise ConfigError(f"connector plugin {entry.name!r} is not a Connector subclass")
        if getattr(cls, "kind", None) != entry.name:
            raise ConfigError(f"connector plugin {entry.name!r} declares kind {getattr(cls, 'kind', None)!r}")
        checked_settings_model(entry.name, getattr(cls, "settings_model", None))
        found[entry.name] = cls
    return found


def build_connectors(
    sources: Sequence[SourceSettings],
    context: ConnectorContext,
    classes: dict[str, type[Connector]] | None = None,
) -> list[Connector]:
    """One connector per enabled source, in configuration order."""
    classes = classes if classes is not None else load_connector_classes()
    connectors: list[Connector] = []
    for source in sources:
        if not source.enabled:
            continue
        cls = classes.get(source.kind)
        if cls is None:
            raise ConfigError(f"source {source.id!r}: no connector installed for kind {source.kind!r}")
        connectors.append(cls(source, context))
    return connectors
