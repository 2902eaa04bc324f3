"""The conformance kit for connectors, pacsfed's own and plugins alike (needs pytest: ``pacsfed[testing]``).

Subclass :class:`ConnectorConformance` (or :class:`NetworkConnectorConformance` for a connector
that reaches a peer over the network) in your connector's test suite; ``docs/writing-a-connector.md``
walks through it.
"""

from connectors.testing.probes import Endpoint, LoopWatch, ResourceCensus, closed_port, silent_port
from connectors.testing.studies import NO_SUCH_PATIENT, KitStudy, kit_studies
from connectors.testing.suite import ConnectorConformance, NetworkConnectorConformance

__all__ = [  # noqa: RUF022 - plain sorted() order, the order tests/unit/test_exported_members.py checks
    "ConnectorConformance",
    "Endpoint",
    "KitStudy",
    "LoopWatch",
    "NO_SUCH_PATIENT",
    "NetworkConnectorConformance",
    "ResourceCensus",
    "closed_port",
    "kit_studies",
    "silent_port",
]
