"""Searches through the door: studies, series and instances for the DICOM and DICOMweb facades.

Authorized like histories (``history:read``, or ``history:emergency`` with an open break-the-glass
window for a searched patient; ``principal.sources`` limits the sources asked), audited
(PATIENT_QUERY with the caller's channel: the access before any source is asked, the outcome
after), admitted like histories (OVERLOADED past ``server.max_pending_queries``), under the same
deadline rules (``deadline_ms`` 50..``query.max_deadline_ms``). Source failures are data.
"""

from __future__ import annotations

from federation.access.principals import AccessContext
from federation.search import (
    InstanceSearch,
    InstanceSearchResult,
    SeriesSearch,
    SeriesSearchResult,
    StudySearch,
    StudySearchResult,
)
from federation.service._admission import admitted
from federation.service._base import ServiceBase


class SearchDoors(ServiceBase):
    """Study, series and instance searches across the sources, authorized and audited."""

    @admitted
    async def search_studies(
        self, search: StudySearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> StudySearchResult:
        """The studies matching the search, merged by StudyInstanceUID, with every asked source's status."""
        raise NotImplementedError

    @admitted
    async def search_series(
        self, search: SeriesSearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> SeriesSearchResult:
        """The study's series, merged by SeriesInstanceUID, from the sources that list series."""
        raise NotImplementedError

    @admitted
    async def search_instances(
        self, search: InstanceSearch, access: AccessContext, *, deadline_ms: int | None = None
    ) -> InstanceSearchResult:
        """The series' instances, merged by SOPInstanceUID, from the sources that list instances."""
        raise NotImplementedError
