"""Short-lived links to document reports: an opaque id bound to one caller, kept in this process only."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import time

from federation.reports import ReportInstance, StudyRef

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

    def __init__(self, ttl_s: float) -> None:
        self._ttl_s = ttl_s
        self._links: dict[str, ReportLink] = {}

    def add(
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
        return link_id, link

    def get(self, link_id: str) -> ReportLink | None:
        """The link, while it has not expired."""
        link = self._links.get(link_id)
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
