"""The pynetdicom application entity of the report reader (``dimse_reports``: C-GET), its timeouts cut to the deadline.

The C-FIND and C-ECHO path does not use pynetdicom's association (``_dimse_link``).
"""

from __future__ import annotations

from collections.abc import Iterable

from pynetdicom import AE

from connectors._dimse_link import MIN_TIMEOUT_S
from connectors.dimse_settings import DimseSourceSettings
from federation.models import Deadline


def application_entity(settings: DimseSourceSettings, deadline: Deadline, contexts: Iterable[str]) -> AE:
    """An AE asking for ``contexts``, its timeouts the source's, cut to what is left of the deadline."""
    remaining = max(deadline.remaining(), MIN_TIMEOUT_S)
    ae = AE(ae_title=settings.calling_ae)
    ae.connection_timeout = min(settings.connect_timeout_s, remaining)
    ae.acse_timeout = min(settings.acse_timeout_s, remaining)
    ae.dimse_timeout = min(settings.dimse_timeout_s, remaining)
    ae.network_timeout = min(settings.network_timeout_s, remaining)
    for context in contexts:
        ae.add_requested_context(context)
    return ae
