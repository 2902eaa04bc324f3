"""Short-lived links to document reports: an opaque id bound to one caller.

Kept in this process, and with Elasticsearch in the shared state too (``SharedEntries``), so a
link made by one ``pacsfed serve --workers`` process opens on any other; while Elasticsearch
cannot be reached, a link still opens on the process that made it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
import time
from typing import Any

from federation.access.state_elasticsearch import SharedEntries
from federation.errors import CacheError
from federation.reports import ReportInstance, StudyRef

logger = logging.getLogger(__name__)
_KIND = "report-link"

_MAX_LINKS = 10_000
"""Links held at most; the oldest go first (each is a few hundred bytes)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ReportLink:
    """What a link opens, for whom, and until when."""

    subject: str
    source_id: str
    study: StudyRef
    document: ReportInstance
    mime_type: str
    patient_ids: tuple[str, ...]
    expires: float
    """On the monotonic clock."""
    expires_at: dt.datetime


class ReportLinks:
    """Opaque ids (256 random bits, nothing derived from the study or the patient) to document reports."""

    def __init__(self, ttl_s: float, shared: SharedEntries | None = None) -> None:
        self._ttl_s = ttl_s
        self._links: dict[str, ReportLink] = {}
        self._shared = shared

    async def add(
        self,
        subject: str,
        source_id: str,
        study: StudyRef,
        document: ReportInstance,
        mime_type: str,
        patient_ids: tuple[str, ...],
    ) -> tuple[str, ReportLink]:
        """A new link id for ``subject`` only, valid for the configured time."""
        self._prune()
        link = ReportLink(
            subject,
            source_id,
            study,
            document,
            mime_type,
            patient_ids,
            time.monotonic() + self._ttl_s,
            dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=self._ttl_s),
        )
        link_id = secrets.token_urlsafe(32)
        self._links[link_id] = link
        if self._shared is not None:
            try:
                await self._shared.put(_KIND, link_id, _stored(link), link.expires_at.timestamp())
            except CacheError as exc:
                logger.warning("report links: a link opens on this worker only (%s)", exc)
        return link_id, link

    async def get(self, link_id: str) -> ReportLink | None:
        """The link, while it has not expired (made by this process or, shared, by another)."""
        link = self._links.get(link_id)
        if link is None and self._shared is not None:
            try:
                found = await self._shared.get(_KIND, link_id)
            except CacheError as exc:
                logger.warning("report links: only this worker's links open (%s)", exc)
                found = None
            link = _loaded(found) if found is not None else None
        if link is None or link.expires <= time.monotonic():
            return None
        return link

    def _prune(self) -> None:
        now = time.monotonic()
        if len(self._links) >= _MAX_LINKS:
            for key in [k for k, link in self._links.items() if link.expires <= now]:
                del self._links[key]
        while len(self._links) >= _MAX_LINKS:
            del self._links[next(iter(self._links))]


def _stored(link: ReportLink) -> dict[str, Any]:
    return {
        "subject": link.subject,
        "source_id": link.source_id,
        "study": link.study.model_dump(mode="json"),
        "document": link.document.model_dump(mode="json"),
        "mime_type": link.mime_type,
        "patient_ids": list(link.patient_ids),
        "expires_at": link.expires_at.isoformat(),
    }


def _loaded(value: dict[str, Any]) -> ReportLink:
    expires_at = dt.datetime.fromisoformat(value["expires_at"])
    left = expires_at.timestamp() - time.time()
    return ReportLink(
        value["subject"],
        value["source_id"],
        StudyRef.model_validate(value["study"]),
        ReportInstance.model_validate(value["document"]),
        value["mime_type"],
        tuple(value["patient_ids"]),
        time.monotonic() + left,
        expires_at,
    )
