"""The app under benchmark: authentication off, since the benchmarks measure the query path."""

from __future__ import annotations

import atexit
import functools
import inspect
import shutil
import tempfile
from pathlib import Path
from typing import Any

from federation.settings import Settings
from federation.settings_security import AuditSettings
from pacsfed.app import create_app


def bench_app(settings: Settings) -> Any:
    """``create_app`` as ``pacsfed serve --insecure-dev`` makes it (where this version of it can).

    Unless the settings name a journal directory, the audit journal goes to a temporary one,
    removed at exit: never a ``pacsfed-audit/`` in the working tree that grows with every run.
    """
    if settings.audit.journal_dir == AuditSettings().journal_dir:
        journal = Path(tempfile.mkdtemp(prefix="pacsfed-bench-audit-"))
        atexit.register(functools.partial(shutil.rmtree, journal, ignore_errors=True))
        audit = settings.audit.model_copy(update={"journal_dir": journal})
        settings = settings.model_copy(update={"audit": audit})
    parameters = inspect.signature(create_app).parameters
    options = {name: True for name in ("insecure_dev", "owns_process") if name in parameters}
    return create_app(settings, **options)
