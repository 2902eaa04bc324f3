"""Retrieval vocabulary: one WADO-RS request (PS3.18 10.4) as the service and a connector speak of it.

A front end turns a URL under ``/dicom-web/studies/{study}`` into a :class:`RetrieveRequest`; the
service finds a source holding the study and answers a :class:`RetrieveStream`, whose body comes
chunk by chunk from that source (never a whole study in memory).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from federation.errors import QueryError

__all__ = ["RetrieveRequest", "RetrieveStream", "metadata_resource", "valid_resource"]

_UID = r"[0-9]+(?:\.[0-9]+)*"
_FRAMES = r"[0-9]+(?:,[0-9]+)*"
_RESOURCE = re.compile(
    rf"(?:|metadata|rendered|thumbnail"
    rf"|series/{_UID}(?:/metadata|/rendered|/thumbnail)?"
    rf"|series/{_UID}/instances/{_UID}"
    rf"(?:/metadata|/rendered|/thumbnail|/frames/{_FRAMES}(?:/rendered|/thumbnail)?"
    rf"|/bulk(?:data)?(?:/[A-Za-z0-9._,-]+)+)?)"
)
"""What may follow ``studies/{study}/``: PS3.18 10.4's resources, rendered ones (10.4.1.1.3) and a
bulk-data path below an instance (the form Orthanc's BulkDataURIs take: ``.../bulk/7fe00010``)."""
_STUDY = re.compile(_UID)
MAX_UID = 64
"""PS3.5 9.1: a UID is at most 64 characters."""


def valid_resource(resource: str) -> bool:
    """True when *resource* (the path after ``studies/{study}/``) is one pacsfed forwards.

    No ``.`` or ``..`` segment: resolved by the URL rules, ``bulk/../../..`` would leave the study
    for any path of the origin, with pacsfed's credentials and past the caller's authorization.
    """
    if len(resource) > 1024 or _RESOURCE.fullmatch(resource) is None:
        return False
    return not any(segment.strip(".") == "" for segment in resource.split("/")[1:])


def metadata_resource(resource: str) -> bool:
    """True for a metadata resource (DICOM JSON whose URLs are rewritten)."""
    return resource == "metadata" or resource.endswith("/metadata")


@dataclass(frozen=True, slots=True)
class RetrieveRequest:
    """One WADO-RS GET below one study: ``studies/{study_instance_uid}/{resource}``."""

    study_instance_uid: str
    resource: str = ""
    """The rest of the path: ``""``, ``metadata``, ``series/{uid}/instances/{uid}/frames/1,2``…"""
    accept: str | None = None
    """The caller's Accept header, passed on to the source (PS3.18 8.7: media type negotiation)."""
    query: bytes = b""
    """The query string, passed on for rendered resources (``quality``, ``viewport``…), else empty."""
    base_url: str = ""
    """Where the caller reached pacsfed's DICOMweb root (``https://host/dicom-web``): rewritten URLs point there."""

    def __post_init__(self) -> None:
        uid = self.study_instance_uid
        if len(uid) > MAX_UID or _STUDY.fullmatch(uid) is None:
            raise QueryError("the StudyInstanceUID is not a valid UID", code="BAD_QUERY")
        if not valid_resource(self.resource):
            raise QueryError("this is not a WADO-RS resource pacsfed forwards", code="BAD_QUERY")

    @property
    def path(self) -> str:
        """The path below a DICOMweb root: ``studies/{study}[/{resource}]``."""
        study = f"studies/{self.study_instance_uid}"
        return f"{study}/{self.resource}" if self.resource else study

    @property
    def is_metadata(self) -> bool:
        """A metadata request: DICOM JSON, its bulk-data and retrieve URLs rewritten to point at pacsfed."""
        return metadata_resource(self.resource)


@dataclass(slots=True)
class RetrieveStream:
    """A source's answer to a :class:`RetrieveRequest`: status and headers now, the body as it arrives."""

    status: int
    media_type: str
    """The Content-Type as the source sent it (a multipart answer keeps its boundary)."""
    source_id: str
    chunks: AsyncIterator[bytes]
    """The body, chunk by chunk; iterate it to the end, or call :meth:`aclose`."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Further headers to pass on (``Content-Length`` when the body is passed through as it is)."""
    release: Callable[[], Awaitable[None]] | None = None
    """Releases the source's connection, whether the body was read or not (called by :meth:`aclose`)."""

    async def aclose(self) -> None:
        """Stop reading the source and release its connection (safe to call more than once)."""
        try:
            closing = getattr(self.chunks, "aclose", None)
            if closing is not None:
                await closing()
        finally:
            if self.release is not None:
                await self.release()
