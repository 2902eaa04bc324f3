"""Connectors: one per PACS protocol, each turning answers into StudyRecords."""

from connectors.base import Connector, ConnectorContext, InstanceAnswer, SeriesAnswer, SourceAnswer
from connectors.dicomweb import DicomwebConnector
from connectors.dimse import DimseConnector
from connectors.registry import (
    InstalledKind,
    build_connectors,
    capabilities,
    check_connectors,
    installed_kinds,
    load_connector_classes,
)

__all__ = [
    "Connector",
    "ConnectorContext",
    "DicomwebConnector",
    "DimseConnector",
    "InstalledKind",
    "InstanceAnswer",
    "SeriesAnswer",
    "SourceAnswer",
    "build_connectors",
    "capabilities",
    "check_connectors",
    "installed_kinds",
    "load_connector_classes",
]
