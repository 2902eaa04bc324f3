"""WADO-RS (PS3.18 10.4) forwarded to one DICOMweb source, with its credentials, streamed chunk by chunk.

The request goes out through the source's httpx client (``connectors.http_source``: its TLS, its
proxy, its :class:`connectors.http_auth.SourceAuth`), so the origin's credentials never leave
pacsfed. The caller's Accept header is passed on as it is (PS3.18 8.7.3 negotiation happens at the
origin); the answer's Content-Type, a multipart boundary included, comes back unchanged, and its
body is passed through as bytes, one chunk at a time (never a whole study in memory). Two bounds:
the status and headers within ``first_byte_s``, each later chunk within ``stall_s``. Metadata is
the one body that is changed: its URLs are rewritten (``connectors.dicomweb_metadata``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from connectors.dicomweb_metadata import MetadataRewriter, rewritten
from connectors.http_source import HttpSource, translated
from federation.errors import SourceAuthError, SourceProtocolError, SourceTimeout
from federation.retrieve import RetrieveRequest, RetrieveStream

__all__ = ["DEFAULT_ACCEPT", "METADATA_ACCEPT", "open_retrieve"]

DEFAULT_ACCEPT = "*/*"
"""Asked when the caller names no media type: the origin's default (PS3.18 8.7.3.5)."""
METADATA_ACCEPT = "application/dicom+json"
"""Metadata is asked as DICOM JSON only: the one form whose URLs pacsfed rewrites."""
_WHAT = "WADO-RS"
_PASSED_ON = ("content-length", "warning")
"""Headers of the origin's answer passed on with a body left as it is (not Content-Location: it names the origin)."""
_REFUSALS = frozenset({400, 406, 413, 415, 416})
"""The caller's request refused for what it asks (a media type, a frame list): told to the caller as it is."""


async def open_retrieve(
    http: HttpSource,
    source_id: str,
    request: RetrieveRequest,
    *,
    first_byte_s: float,
    stall_s: float,
) -> RetrieveStream:
    """The source's answer, its body still to stream; ConnectorError when the source fails before it.

    A 404 (the source does not hold it) and the caller's refusals (:data:`_REFUSALS`) are answers
    with that status, not errors: the service asks the next holder after a 404.
    """
    accept = METADATA_ACCEPT if request.is_metadata else (request.accept or DEFAULT_ACCEPT)
    # Identity: pixel data does not compress, and Content-Length is kept; a compressed chunk of
    # metadata would be a megabyte or two of JSON at once (measured: +30 MiB for a 2000-instance series).
    headers = {"Accept": accept, "Accept-Encoding": "identity"}
    try:
        response = await http.open_stream(
            request.path, request.query, headers, first_byte_s=first_byte_s, stall_s=stall_s
        )
    except TimeoutError as exc:
        raise SourceTimeout(f"{_WHAT}: no answer within {first_byte_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise translated(exc, _WHAT) from exc
    status = response.status_code
    if status not in (200, 206) and status != 404 and status not in _REFUSALS:
        await response.aclose()
        if status in (401, 403):
            raise SourceAuthError(f"{_WHAT} refused our credentials (HTTP {status})")
        raise SourceProtocolError(f"{_WHAT} answered HTTP {status}")
    media_type = response.headers.get("content-type", "application/octet-stream")
    chunks = _chunks(response, stall_s)
    release = response.aclose  # also when the body is never read (a 404 handed over to the next holder)
    if request.is_metadata and status == 200:
        rewriter = MetadataRewriter(http.base_url, request.base_url)
        body = rewritten(chunks, rewriter)
        return RetrieveStream(status, METADATA_ACCEPT, source_id, body, release=release)
    passed = {name: response.headers[name] for name in _PASSED_ON if name in response.headers}
    if response.headers.get("content-encoding", "identity") != "identity":
        passed.pop("content-length", None)  # the body is passed on decoded
    return RetrieveStream(status, media_type, source_id, chunks, passed, release)


async def _chunks(response: httpx.Response, stall_s: float) -> AsyncIterator[bytes]:
    """The body as it arrives; SourceTimeout when a chunk is longer than *stall_s* in coming."""
    reading = response.aiter_bytes()
    try:
        while True:
            try:
                async with asyncio.timeout(stall_s):
                    chunk = await anext(reading)
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                raise SourceTimeout(f"{_WHAT}: the answer stalled for {stall_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise translated(exc, _WHAT) from exc
            if chunk:
                yield chunk
    finally:
        with contextlib.suppress(httpx.HTTPError):
            await response.aclose()
