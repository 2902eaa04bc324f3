"""The conformance kit for connectors, pacsfed's own and plugins alike (needs pytest: ``pacsfed[testing]``).

Subclass :class:`ConnectorConformance` (or :class:`NetworkConnectorConformance` for a connector
that reaches a peer over the network) in your connector's test suite; ``docs/writing-a-connector.md``
walks through it. The statuses a connector's calls end in are the ``ConnectorError`` branch's,
the hospital's (``federation.models.HOSPITAL_STATUSES``: ``TIMEOUT``, ``UNREACHABLE``, ``ERROR``,
by ``status_of_failure``, the mapping the engine uses too); ``BUSY`` (pacsfed had no free
``max_concurrency`` slot) and the other not-asked statuses are pacsfed's own decisions, never a
connector's. The network checks hold every failure they provoke to a hospital status, a peer
shedding its own load (``shedding_port``) included: that one is the hospital's, not ``BUSY``.
"""

from connectors.testing.network import NetworkConnectorConformance
from connectors.testing.probes import (
    Endpoint,
    LoopWatch,
    ResourceCensus,
    closed_port,
    shedding_port,
    silent_port,
)
from connectors.testing.studies import NO_SUCH_PATIENT, KitStudy, kit_studies
from connectors.testing.suite import ConnectorConformance

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
    "shedding_port",
    "silent_port",
]
