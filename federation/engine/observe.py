"""What the engine tells whoever watches it (metrics, traces): a base whose every method does nothing.

The engine holds at most one :class:`EngineObserver` and asks ``is not None`` before each call, so
an engine without one pays nothing. Calls come from the event loop, never with patient data: a
source's id and outcome, counts, and a context manager around each request sent to a source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from federation.models import SourceOutcome

SourceSpan = Callable[[str], contextlib.AbstractContextManager[object]]
"""Opens a span around one request to the source whose id it is given."""


class EngineObserver:
    """Told of each source's outcome, each fan-out, each cache read and failed cache write."""

    source_span: SourceSpan | None = None
    """Set to trace every request sent to a source (None: no tracing, no cost)."""

    def source_answered(self, outcome: SourceOutcome, *, live: bool) -> None:
        """One source's outcome in one query: ``live`` when it was asked now (its latency is the request's)."""

    def fanned_out(self, sources: int) -> None:
        """A query asks this many sources live at once (0: all answered from the cache or were settled)."""

    def cache_read(self, hits: int, misses: int) -> None:
        """A query read the cache: ``hits`` sources had a usable answer there, ``misses`` had none."""

    def cache_write_failed(self) -> None:
        """Answers could not be written to the cache (Elasticsearch refused or was not reached)."""
