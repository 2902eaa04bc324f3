"""DICOMweb connector: QIDO-RS study search (PS3.18 10.6) with paging, parsed from the DICOM JSON model (PS3.18 F.2)."""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any
from urllib.parse import quote

import httpx

from connectors.base import Connector, ConnectorContext, SourceAnswer
from connectors.dicom_json import MalformedObject, record_from_dicom_json
from connectors.dicomweb_settings import BasicAuth, BearerAuth, DicomwebSourceSettings
from connectors.http11 import BodyTooLarge, ConnectionBroken, Http2Selected, Http11Pool
from connectors.normalize import STUDY_RETURN_KEYWORDS
from connectors.oauth2 import OAuth2ClientCredentialsAuth
from federation.errors import (
    ConnectorError,
    SourceAuthError,
    SourceProtocolError,
    SourceTimeout,
    SourceUnreachable,
)
from federation.models import Deadline, StudyQuery, StudyRecord
from federation.settings_security import OAuth2ClientCredentials
from federation.tls import client_context, handshake_failure, tls_failure

# httpx logs every request URL at INFO, and QIDO URLs carry PatientIDs: keep it to warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)
# HTTP/2 header compression logs every header it encodes or decodes at DEBUG: Authorization too.
logging.getLogger("hpack").setLevel(logging.WARNING)

DICOM_JSON = "application/dicom+json"
DICOM_ACCEPT = DICOM_JSON
"""One media type, the one PS3.18 8.7.3 requires of every QIDO-RS server: Orthanc 1.10 reads the
Accept header as a single type and logs "Unsupported return MIME type" for a list or a q-value."""
USER_AGENT = f"pacsfed/{version('pacsfed')}"
_KEEPALIVE_S = 30.0
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest QIDO page read: a 10,000-study page is ~15 MiB of DICOM JSON, and json.loads makes
several times that in objects. Reading stops as soon as a body passes it (measured: a 200 MB
answer costs < 30 MB and well under a second)."""
_TOO_LARGE = f"QIDO answer larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB"
# Repeated, not comma-separated: Orthanc 1.10's plugin ignores a comma-separated list.
_INCLUDE_FIELDS = [k for k in STUDY_RETURN_KEYWORDS if k != "RetrieveAETitle"] + ["RetrieveURL"]


class DicomwebConnector(Connector):
    """Queries one PACS with QIDO-RS over HTTP(S)."""

    kind = "dicomweb"
    settings_model = DicomwebSourceSettings
    supports_issuer_of_patient_id = True
    supports_demographic_search = True

    settings: DicomwebSourceSettings

    def __init__(self, settings: DicomwebSourceSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self._base_url = settings.url.rstrip("/")
        self._studies_url = httpx.URL(f"{self._base_url}/studies")
        url = self._studies_url
        # http2: offered through ALPN on https:// (plain http:// stays HTTP/1.1); the TLS context
        # (CA bundle, client certificate, minimum version) is built now, so bad files fail at start-up.
        alpn = ("h2", "http/1.1") if settings.http2 else ("http/1.1",)
        self._ssl_context = client_context(settings.tls, verify=settings.verify_tls, alpn=alpn)
        tls_name = settings.tls.server_hostname if settings.tls is not None else None
        self._sni: dict[str, Any] = {"sni_hostname": tls_name} if tls_name else {}
        https = url.scheme == "https"
        # HTTP/1.1 (every http:// source, and https:// ones whose server does not choose h2):
        # the lean client, one keep-alive pool per source.
        self._pool = Http11Pool(
            url.host,
            url.port or (443 if https else 80),
            ssl_context=self._ssl_context if https else None,
            server_hostname=tls_name,
            max_connections=settings.max_concurrency * 2,
            max_idle=settings.max_concurrency,
            idle_s=_KEEPALIVE_S,
        )
        self._path = url.raw_path.partition(b"?")[0]
        self._lean_headers: list[tuple[bytes, bytes]] = [
            (b"host", url.netloc),
            (b"accept", DICOM_ACCEPT.encode()),
            (b"accept-encoding", b"gzip"),
            (b"user-agent", USER_AGENT.encode()),
        ]
        self._http2_peer = False
        """Set once the server chose HTTP/2 by ALPN: from then on httpx asks it."""
        self.protocols: collections.Counter[str] = collections.Counter()
        """Requests sent so far per HTTP version ("HTTP/1.1", "HTTP/2"): for tests and metrics."""
        # httpx: HTTP/2 peers and OAuth2 token requests. One client (one connection pool) per
        # source: httpcore scans every pooled connection on each request, so a single pool
        # shared by 200 sources made the fan-out quadratic.
        limits = httpx.Limits(
            max_connections=settings.max_concurrency * 2,
            max_keepalive_connections=settings.max_concurrency,
            keepalive_expiry=_KEEPALIVE_S,
        )
        # retries=1: one new attempt when a connection cannot be made (never a request resent).
        transport = httpx.AsyncHTTPTransport(
            verify=self._ssl_context, http2=settings.http2, limits=limits, retries=1
        )
        self._http = httpx.AsyncClient(
            transport=transport, follow_redirects=False, headers={"User-Agent": USER_AGENT}
        )
        self._headers = {"Accept": DICOM_ACCEPT}
        self._auth: httpx.Auth | None = None
        self._oauth2: OAuth2ClientCredentialsAuth | None = None
        if isinstance(settings.auth, BasicAuth):
            self._auth = httpx.BasicAuth(settings.auth.username, settings.auth.password.get_secret_value())
            basic = next(self._auth.auth_flow(httpx.Request("GET", url))).headers["Authorization"]
            self._lean_headers.append((b"authorization", basic.encode()))
        elif isinstance(settings.auth, BearerAuth):
            bearer = f"Bearer {settings.auth.token.get_secret_value()}"
            self._headers["Authorization"] = bearer
            self._lean_headers.append((b"authorization", bearer.encode()))
        elif isinstance(settings.auth, OAuth2ClientCredentials):
            self._oauth2 = OAuth2ClientCredentialsAuth(settings.auth)
            self._auth = self._oauth2

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Every study matching the query, following limit/offset pages up to ``max_results``."""
        page_size = min(self.settings.page_size, self.settings.max_results)
        records: dict[str, StudyRecord] = {}
        warnings_seen: list[str] = []
        offset = 0
        truncated = False
        while True:
            page, header_warning = await self._get_page(_page_query(query, page_size, offset), deadline)
            if header_warning:
                warnings_seen.append(header_warning)
            for item in page:
                record = _record_from_json(item, self.id, warnings_seen)
                if record is not None:
                    warnings_seen.extend(record.warnings)
                    records[record.study_instance_uid] = record
            offset += len(page)
            if len(page) < page_size or len(page) > page_size:
                break  # the last page, or a server that ignores limit and sent everything
            if len(records) >= self.settings.max_results:
                truncated = True
                warnings_seen.append(f"stopped after {self.settings.max_results} studies (max_results)")
                break
        return SourceAnswer(
            records=list(records.values()), warnings=tuple(dict.fromkeys(warnings_seen)), truncated=truncated
        )

    async def ping(self, deadline: Deadline) -> None:
        """A minimal QIDO request that any conformant server answers (limit=1)."""
        await self._get_page(_PING_QUERY, deadline)

    async def aclose(self) -> None:
        """Close this source's connections."""
        await self._pool.aclose()
        await self._http.aclose()

    async def _get_page(self, query: bytes, deadline: Deadline) -> tuple[list[Any], str | None]:
        """One QIDO request: the decoded JSON array and the server's Warning, if any."""
        timeout = max(min(self.settings.timeout_s, deadline.remaining()), 0.01)
        if self._http2_peer:
            status, headers, body = await self._get_with_httpx(query, timeout, deadline)
        else:
            try:
                status, headers, body = await self._get_http11(query, timeout, deadline)
            except Http2Selected:
                self._http2_peer = True
                status, headers, body = await self._get_with_httpx(query, timeout, deadline)
        warning = _warning_header(headers.get("warning"))
        if status in (401, 403):
            raise SourceAuthError(f"QIDO refused our credentials (HTTP {status})")
        if status == 204 or (status == 200 and not body.strip()):
            return [], warning
        if status != 200:
            raise SourceProtocolError(f"QIDO answered HTTP {status}")
        try:
            page = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SourceProtocolError("QIDO answer is not valid JSON") from exc
        if not isinstance(page, list):
            raise SourceProtocolError("QIDO answer is not a JSON array")
        return page, warning

    async def _get_http11(
        self, query: bytes, within_s: float, deadline: Deadline
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The request over the lean HTTP/1.1 pool; an OAuth2 token renewed once on a 401."""
        target = self._path + b"?" + query
        token = await self._oauth2_token(within_s, deadline) if self._oauth2 is not None else None
        for attempt in (1, 2):
            headers = self._lean_headers
            if token is not None:
                headers = [*headers, (b"authorization", f"Bearer {token}".encode())]
            if attempt == 2:
                within_s = max(min(self.settings.timeout_s, deadline.remaining()), 0.01)
            try:
                response = await self._pool.get(
                    target, headers, within_s=within_s, max_body=MAX_RESPONSE_BYTES
                )
            except BodyTooLarge as exc:
                raise SourceProtocolError(_TOO_LARGE) from exc
            except SourceTimeout as exc:
                raise SourceTimeout(f"QIDO {exc}") from exc
            except ConnectionBroken as exc:
                reason = await self._tls_diagnosis(deadline) if exc.fresh else None
                if reason:
                    raise SourceUnreachable(reason) from exc
                raise SourceProtocolError(f"QIDO transport error ({exc})") from exc
            except (SourceUnreachable, Http2Selected):
                raise
            except SourceProtocolError as exc:
                raise SourceProtocolError(f"QIDO transport error ({exc})") from exc
            self.protocols["HTTP/1.1"] += 1
            if response.status == 401 and token is not None and attempt == 1 and self._oauth2 is not None:
                self._oauth2.forget(token)  # revoked or expired early: one new token, one new attempt
                token = await self._oauth2_token(within_s, deadline)
                continue
            return response.status, response.headers, response.body
        raise AssertionError("unreachable")  # pragma: no cover

    async def _oauth2_token(self, within_s: float, deadline: Deadline) -> str:
        """A bearer token from the source's token endpoint (through httpx: rare, and shared)."""
        assert self._oauth2 is not None
        try:
            return await self._oauth2.token(self._http, within_s)
        except httpx.HTTPError as exc:
            raise await self._httpx_failure(exc, deadline) from exc

    async def _get_with_httpx(
        self, query: bytes, within_s: float, deadline: Deadline
    ) -> tuple[int, Mapping[str, str], bytes]:
        """The request through httpx: HTTP/2, with its OAuth2 auth flow."""
        try:
            async with self._http.stream(
                "GET",
                self._studies_url.copy_with(query=query),
                headers=self._headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=within_s,
                extensions=self._sni,
            ) as response:
                body = await _read_capped(response, deadline)
        except httpx.HTTPError as exc:
            raise await self._httpx_failure(exc, deadline) from exc
        self.protocols["HTTP/2" if response.http_version == "HTTP/2" else response.http_version] += 1
        return response.status_code, response.headers, bytes(body)

    async def _httpx_failure(self, exc: httpx.HTTPError, deadline: Deadline) -> ConnectorError:
        """An httpx failure as the connector error the engine reports, with the TLS reason if any."""
        broken = isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError)
        diagnosis = await self._tls_diagnosis(deadline) if broken and not tls_failure(exc) else None
        return _translated(exc, diagnosis)

    async def _tls_diagnosis(self, deadline: Deadline) -> str | None:
        """Why the TLS session failed, when a read or write broke on a fresh https connection.

        Under TLS 1.3 the server judges our client certificate after our side of the handshake:
        its refusal surfaces as a broken write or read, the alert unread. A second handshake reads it.
        """
        url = self._studies_url
        if url.scheme != "https" or deadline.expired:
            return None
        port = url.port or 443
        hostname = self._sni.get("sni_hostname", url.host)
        timeout = max(min(self.settings.timeout_s, deadline.remaining()), 0.05)
        reason = await asyncio.to_thread(
            handshake_failure, url.host, port, self._ssl_context, hostname, timeout
        )
        return f"TLS handshake failed: {reason}" if reason else None


def _translated(exc: httpx.HTTPError, tls_reason: str | None) -> ConnectorError:
    """An httpx failure as the connector error the engine reports (never with its URL: PatientIDs)."""
    if isinstance(exc, httpx.TimeoutException):
        return SourceTimeout("QIDO request timed out")
    reason = tls_failure(exc) or tls_reason
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol):
        return SourceUnreachable(reason or "connection refused or host unreachable")
    if reason:
        return SourceUnreachable(reason)
    return SourceProtocolError(f"QIDO transport error ({type(exc).__name__})")


@functools.lru_cache(maxsize=64)
def _page_query(query: StudyQuery, limit: int, offset: int) -> bytes:
    """One page's encoded QIDO query string, built once for all the sources a fan-out asks.

    Encoding the repeated ``includefield`` parameters cost more than the rest of the request.
    """
    return query_string({**_query_params(query), "limit": limit, "offset": offset})


def query_string(params: Mapping[str, str | int | list[str]]) -> bytes:
    """A QIDO query string (PS3.18 8.3.4): values percent-encoded as UTF-8, except ``*`` and ``?``.

    The URL rules (RFC 3986 3.4) allow ``*`` and ``?`` in a query as they are, and Orthanc 1.10 does
    not percent-decode QIDO values: ``PatientName=Buc%2A`` finds nothing there, ``Buc*`` finds
    the study. Everything else that is not unreserved is encoded: a space as ``%20`` (not the
    ``+`` of HTML forms, which a QIDO server may read as a plus sign), ``^`` ``=`` ``&`` ``+`` ``/``
    and every byte of a non-ASCII character's UTF-8.
    """
    pairs = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append(f"{quote(key, safe='')}={quote(str(item), safe='*?')}")
    return "&".join(pairs).encode("ascii")


_PING_QUERY = query_string({"limit": 1, "includefield": "StudyInstanceUID"})


def _query_params(query: StudyQuery) -> dict[str, str | int | list[str]]:
    """QIDO-RS matching parameters (PS3.18 8.3.4): keys by keyword, sequences by dotted path."""
    params: dict[str, str | int | list[str]] = {"includefield": list(_INCLUDE_FIELDS)}
    if query.patient_id is not None:
        params["PatientID"] = query.patient_id
    if query.issuer_of_patient_id is not None:
        params["IssuerOfPatientID"] = query.issuer_of_patient_id
    if query.patient_name is not None:
        params["PatientName"] = query.patient_name
    if query.patient_birth_date is not None:
        params["PatientBirthDate"] = query.patient_birth_date.strftime("%Y%m%d")
    if query.other_patient_id is not None:
        params["OtherPatientIDsSequence.PatientID"] = query.other_patient_id
        if query.other_patient_id_issuer:
            params["OtherPatientIDsSequence.IssuerOfPatientID"] = query.other_patient_id_issuer
        params["includefield"] = [*_INCLUDE_FIELDS, "OtherPatientIDsSequence"]
    return params


async def _read_capped(response: httpx.Response, deadline: Deadline) -> bytearray:
    """The response body, refusing bodies larger than MAX_RESPONSE_BYTES or still coming at the deadline.

    httpx's read timeout bounds each read, not the body: a server sending a byte at a time
    would keep it reading for ever.
    """
    too_large = _TOO_LARGE
    announced = response.headers.get("Content-Length", "")
    if announced.isdigit() and int(announced) > MAX_RESPONSE_BYTES:
        raise SourceProtocolError(too_large)
    body = bytearray()  # grown in place: no second copy of the body when it is complete
    try:
        async with asyncio.timeout(deadline.remaining()):
            async for chunk in response.aiter_bytes():
                if len(body) + len(chunk) > MAX_RESPONSE_BYTES:
                    raise SourceProtocolError(too_large)
                body += chunk
    except TimeoutError as exc:
        raise SourceTimeout("QIDO answer still arriving at the deadline") from exc
    return body


def _warning_header(value: str | None) -> str | None:
    """The server's Warning header (PS3.18 8.3.5.1), kept as a source warning rather than lost."""
    return f"server warning: {value[:200]}" if value else None


def _record_from_json(item: Any, source_id: str, warnings_seen: list[str]) -> StudyRecord | None:
    """One DICOM JSON object as a StudyRecord; a malformed object is skipped with a warning."""
    try:
        record = record_from_dicom_json(item, source_id)
    except MalformedObject as exc:
        warnings_seen.append(f"a QIDO result in malformed DICOM JSON was ignored ({exc})")
        return None
    if record is None:
        warnings_seen.append("a QIDO result without StudyInstanceUID was ignored")
    return record
