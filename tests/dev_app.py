"""The app as the tests run it: development mode, no authentication, an audit journal in a temp dir."""

from __future__ import annotations

import tempfile
from pathlib import Path

from starlette.applications import Starlette

from federation.settings import Settings
from federation.settings_security import AuditSettings
from pacsfed.app import create_app


def dev_settings(settings: Settings) -> Settings:
    """``settings`` with the audit journal moved out of the working directory (unless set)."""
    if settings.audit.journal_dir != AuditSettings().journal_dir:
        return settings
    journal = Path(tempfile.mkdtemp(prefix="pacsfed-test-audit-"))
    return settings.model_copy(update={"audit": settings.audit.model_copy(update={"journal_dir": journal})})


def dev_app(settings: Settings) -> Starlette:
    """An app that lets every caller in (``auth: {mode: none}`` needs insecure_dev)."""
    return create_app(dev_settings(settings), insecure_dev=settings.auth.mode == "none")
