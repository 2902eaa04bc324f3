"""Connector registry: kinds found through the ``pacsfed.connectors`` entry points, checked when loaded.

A kind that fails to import, declares no strict settings model, or cannot be built from its
sources' settings is a :class:`federation.errors.ConfigError` at start-up (naming the kind, its
package and the source), never a failure at the first query. ``connectors.allow`` in the
configuration limits which kinds are imported at all.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint

import httpx

from connectors.base import Connector, ConnectorContext
from federation.errors import ConfigError
from federation.settings import (
    CONNECTOR_ENTRY_POINTS,
    SourceSettings,
    checked_settings_model,
    connector_entry_points,
    load_connector,
)

ENTRY_POINT_GROUP = CONNECTOR_ENTRY_POINTS
_CAPABILITY_PREFIX = "supports_"


def capabilities(cls: type[Connector]) -> dict[str, bool]:
    """Every capability flag of a connector class (its ``supports_*`` class variables), by name without the prefix."""
    return {
        name.removeprefix(_CAPABILITY_PREFIX): value
        for name in sorted(dir(cls))
        if name.startswith(_CAPABILITY_PREFIX) and isinstance(value := getattr(cls, name), bool)
    }


def _checked_class(entry: EntryPoint) -> type[Connector]:
    cls = load_connector(entry)
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ConfigError(f"connector plugin {entry.name!r} is not a Connector subclass")
    if getattr(cls, "kind", None) != entry.name:
        raise ConfigError(f"connector plugin {entry.name!r} declares kind {getattr(cls, 'kind', None)!r}")
    checked_settings_model(entry.name, getattr(cls, "settings_model", None))
    return cls


def load_connector_classes(allow: Collection[str] | None = None) -> dict[str, type[Connector]]:
    """Every installed (and allowed) connector class by kind; built-ins register the same way as plugins."""
    return {entry.name: _checked_class(entry) for entry in connector_entry_points(allow)}


@dataclass(frozen=True)
class InstalledKind:
    """One installed connector kind as ``pacsfed connectors list`` shows it."""

    kind: str
    package: str
    """The distribution that registers it (``pacsfed`` for the built-ins)."""
    version: str
    allowed: bool = True
    """False when ``connectors.allow`` leaves it out: it is then not imported."""
    capabilities: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    """Why it cannot be used (it fails to import or to pass the load-time checks)."""


def installed_kinds(allow: Collection[str] | None = None) -> list[InstalledKind]:
    """Every installed connector kind, sorted, each loaded and checked unless ``allow`` leaves it out."""
    allowed = {entry.name for entry in connector_entry_points(allow)}
    kinds: list[InstalledKind] = []
    for entry in sorted(connector_entry_points(), key=lambda e: e.name):
        package = entry.dist.name if entry.dist is not None else "?"
        version = entry.dist.version if entry.dist is not None else "?"
        if entry.name not in allowed:
            kinds.append(InstalledKind(entry.name, package, version, allowed=False))
            continue
        try:
            cls = _checked_class(entry)
        except ConfigError as exc:
            kinds.append(InstalledKind(entry.name, package, version, error=str(exc)))
        else:
            kinds.append(InstalledKind(entry.name, package, version, capabilities=capabilities(cls)))
    return kinds


def build_connectors(
    sources: Sequence[SourceSettings],
    context: ConnectorContext,
    classes: dict[str, type[Connector]] | None = None,
    *,
    allow: Collection[str] | None = None,
) -> list[Connector]:
    """One connector per enabled source, in configuration order; one that cannot be built is a ConfigError."""
    classes = classes if classes is not None else load_connector_classes(allow)
    connectors: list[Connector] = []
    for source in sources:
        if not source.enabled:
            continue
        cls = classes.get(source.kind)
        if cls is None:
            raise ConfigError(f"source {source.id!r}: no connector installed for kind {source.kind!r}")
        try:
            connectors.append(cls(source, context))
        except ConfigError as exc:
            raise ConfigError(f"source {source.id!r} (kind {source.kind!r}): {exc}") from exc
        except Exception as exc:  # a plugin's own check of its settings, or a bug in it
            raise ConfigError(
                f"source {source.id!r} (kind {source.kind!r}): the connector cannot be built"
                f" ({type(exc).__name__}: {exc})"
            ) from exc
    return connectors


async def check_connectors(sources: Sequence[SourceSettings], allow: Collection[str] | None = None) -> None:
    """Build, then close, a connector for every enabled source: what start-up would do, without serving.

    ``pacsfed serve`` calls it before the server starts, so that a source its kind cannot build
    is a configuration error (exit 2, one line) rather than a failed start-up with a traceback.
    """
    classes = load_connector_classes(allow)
    async with httpx.AsyncClient() as http_client:
        context = ConnectorContext(http_client=http_client)
        for source in sources:  # one at a time: those built before a failure are closed
            for connector in build_connectors([source], context, classes):
                await connector.aclose()
