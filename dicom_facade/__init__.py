"""The DICOM facade: pacsfed as a DICOM node answering C-ECHO and C-FIND from the federation.

A front end beside ``web/``: it imports the service, the vocabulary, the access types and the
public DIMSE wire module (``connectors.dimse_protocol``) only. ``facade_from_settings`` makes the
server that ``pacsfed.app`` starts and stops in its lifespan; ``check_listen`` is asked by
``pacsfed serve`` first, so that a taken port is a configuration error (exit 2).
"""

from __future__ import annotations

from dicom_facade import _find, _server
from dicom_facade._association import FindAnswer, FindCall
from dicom_facade._find import CHANNEL
from dicom_facade._server import DicomFacade, check_listen
from federation.service import HistoryService
from federation.settings import DicomFacadeSettings

__all__ = ["CHANNEL", "DicomFacade", "FindAnswer", "FindCall", "check_listen", "facade_from_settings"]


def facade_from_settings(
    settings: DicomFacadeSettings, service: HistoryService, default_deadline_ms: int | None = None
) -> DicomFacade:
    """The facade answering through ``service``, each calling AE as its own principal."""
    deadline = settings.deadline_ms if settings.deadline_ms is not None else default_deadline_ms
    quiet = frozenset(ae for ae, caller in settings.callers().items() if caller.partial_status == "success")
    answerer = _find.SearchAnswerer(service, _server.caller_principals(settings), deadline, quiet)
    return DicomFacade(settings, answerer)
