"""``pacsfed check``: is every source reachable, and the cache? One line each, read-only.

Each source is pinged the way its connector pings (C-ECHO for DIMSE, a one-study QIDO-RS request
for DICOMweb); the line says which, not an exam count a ping does not have. A DIMSE source that
answers its C-ECHO is then asked one C-FIND for a patient ID nobody has (``PACSFED-CHECK``): a
PACS that lets pacsfed echo but not query (Orthanc's ``AllowFind: false``) fails the check here,
not at the first physician's query. The cache is asked
once for its health. Nothing is written and nothing is maintained: the cache and identity store
are not started (no templates, no migration, no hourly clean-up), and the Elasticsearch client's
own warnings (one per retry of a down node) are held back, the cache's line saying it once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from federation.cache.base import CacheHealth
from federation.engine import FederationEngine
from federation.errors import ConnectorError, SourceTimeout
from federation.models import CacheStatus, Deadline, SourceOutcome, SourceStatus, StudyQuery
from federation.settings import Settings
from pacsfed.app import engine_from_settings

__all__ = ["add_check_parser", "check_command"]

PINGS = {"dimse": "C-ECHO and C-FIND answered", "dicomweb": "QIDO-RS answered"}
"""What an answered ping of a built-in kind was; another kind's connector says only that it answered."""
_FOREIGN_LOGGERS = ("elastic_transport", "elasticsearch")


def add_check_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``check`` command."""
    check = commands.add_parser(
        "check", help="C-ECHO or QIDO-RS ping every source, ask the cache; non-zero exit if a source fails"
    )
    check.add_argument("--config", required=True)
    check.add_argument("--deadline-ms", type=int, default=5000)


async def check_command(settings: Settings, args: argparse.Namespace) -> int:
    """Ping every source and the cache; 0 when every source answered."""
    with _held_back(_FOREIGN_LOGGERS, unless_debug=args.log_level == "DEBUG"):
        async with engine_from_settings(settings, start_stores=False) as engine:
            outcomes = await engine.check_sources(args.deadline_ms)
            outcomes = [await _queried(engine, outcome, args.deadline_ms) for outcome in outcomes]
            cache = await engine.cache_health()
    for outcome in outcomes:
        print(source_line(outcome))
    if cache is not None:
        print(cache_line(cache, settings))
    return 0 if all(o.status is SourceStatus.OK for o in outcomes) else 1


_PROBE = StudyQuery(patient_id="PACSFED-CHECK")
"""A C-FIND no patient answers: whether the PACS lets pacsfed query at all (no patient data in it)."""


async def _queried(engine: FederationEngine, outcome: SourceOutcome, deadline_ms: int) -> SourceOutcome:
    """A DIMSE source that echoed, asked one C-FIND too: its refusal is the source's line."""
    if outcome.status is not SourceStatus.OK or outcome.source.kind != "dimse":
        return outcome
    (connector,) = engine.select([outcome.source.id])
    started = time.monotonic()
    try:
        await connector.find_studies(_PROBE, Deadline.after(deadline_ms / 1000))
    except ConnectorError as exc:
        status = SourceStatus.TIMEOUT if isinstance(exc, SourceTimeout) else SourceStatus.ERROR
        error = f"C-ECHO answered, but the C-FIND failed: {exc}"
        return outcome.model_copy(update={"status": status, "error": error})
    latency = outcome.latency_ms + round((time.monotonic() - started) * 1000)
    return outcome.model_copy(update={"latency_ms": latency})


def source_line(outcome: SourceOutcome) -> str:
    """``hosp-a  OK  22 ms  C-ECHO answered``, or the status and the reason it failed."""
    if outcome.status is SourceStatus.OK:
        detail = PINGS.get(outcome.source.kind, "answered its ping")
    else:
        detail = outcome.error or ""
    return f"{outcome.source.id:<21} {outcome.status.value:<12} {outcome.latency_ms:>6} ms  {detail}".rstrip()


def cache_line(health: CacheHealth, settings: Settings) -> str:
    """The cache's status, where it was asked for when it did not answer."""
    label = f"cache ({health.backend})"
    if health.status is CacheStatus.OK or health.backend != "elasticsearch":
        detail = f"  {health.detail}" if health.detail else ""
        return f"{label:<21} {health.status.value:<12}{detail}".rstrip()
    where = urlsplit(settings.cache.url)
    node = f"{where.hostname}:{where.port}" if where.port else str(where.hostname)
    reason = f" ({health.detail})" if health.detail else ""
    return f"{label:<21} {health.status.value:<12} Elasticsearch at {node} did not answer{reason}"


@contextlib.contextmanager
def _held_back(names: tuple[str, ...], *, unless_debug: bool) -> Iterator[None]:
    """Foreign loggers at ERROR for the check (their warnings repeat what the check's lines say)."""
    if unless_debug:
        yield
        return
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
