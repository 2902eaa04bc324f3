"""What a front end asks of a patient history besides the patient: one typed request, front end to engine."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from federation.models import Freshness


@dataclasses.dataclass(frozen=True, slots=True)
class HistoryRequest:
    """The options of one patient-history request, as every front end passes them to the service and the engine."""

    deadline_ms: int | None = None
    """The whole query's deadline; None: the configured default (checked against the allowed range)."""
    source_ids: tuple[str, ...] | None = None
    """The sources to ask; None: every source the caller may ask."""
    include_candidates: bool = False
    """Also search by name and birth date for records that may be the same patient."""
    freshness: Freshness = Freshness.CACHE_THEN_REFRESH
    """How the cache may answer (see :class:`federation.models.Freshness`)."""
    reason: str | None = None
    """Why the caller asks (break-the-glass); the service audits it, the engine never sees a use for it."""

    def but(self, *, source_ids: Sequence[str] | None, include_candidates: bool) -> HistoryRequest:
        """This request narrowed to what the caller was granted."""
        return dataclasses.replace(
            self,
            source_ids=tuple(source_ids) if source_ids is not None else None,
            include_candidates=include_candidates,
        )
