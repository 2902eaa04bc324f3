"""DICOMweb connector: QIDO-RS study search (PS3.18 10.6) with paging, parsed from the DICOM JSON model (PS3.18 F.2)."""

from __future__ import annotations

import functools
import json
import logging
import ssl
from typing import Any

import httpx

from connectors._dicom_json import MalformedObject, record_from_dicom_json
from connectors._normalize import STUDY_RETURN_KEYWORDS
from connectors.base import Connector, ConnectorContext, SourceAnswer
from federation.errors import SourceAuthError, SourceProtocolError, SourceTimeout, SourceUnreachable
from federation.models import Deadline, StudyQuery, StudyRecord
from federation.settings import BasicAuth, BearerAuth, DicomwebSourceSettings

# httpx logs every request URL at INFO, and QIDO URLs carry PatientIDs: keep it to warnings.
logging.getLogger("httpx").setLevel(logging.WARNING)
logging.getLogger("httpcore").setLevel(logging.WARNING)

DICOM_JSON = "application/dicom+json"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
# Repeated, not comma-separated: Orthanc 1.10's plugin ignores a comma-separated list.
_INCLUDE_FIELDS = [k for k in STUDY_RETURN_KEYWORDS if k != "RetrieveAETitle"] + ["RetrieveURL"]


class DicomwebConnector(Connector):
    """Queries one PACS with QIDO-RS over HTTP(S)."""

    kind = "dicomweb"
    supports_issuer_of_patient_id = True

    settings: DicomwebSourceSettings

    def __init__(self, settings: DicomwebSourceSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self._base_url = settings.url.rstrip("/")
        # One client (one connection pool) per source: httpcore scans every pooled connection on
        # each request, so a single pool shared by 200 sources made the fan-out quadratic.
        limits = httpx.Limits(
            max_connections=settings.max_concurrency * 2,
            max_keepalive_connections=settings.max_concurrency,
            keepalive_expiry=30,
        )
        # retries=1: one new attempt when a connection cannot be made (never a request resent).
        transport = httpx.AsyncHTTPTransport(
            verify=_tls_context(settings.verify_tls), limits=limits, retries=1
        )
        self._http = httpx.AsyncClient(transport=transport, follow_redirects=False)
        self._headers = {"Accept": f"{DICOM_JSON}, application/json;q=0.9"}
        self._auth: httpx.Auth | None = None
        if isinstance(settings.auth, BasicAuth):
            self._auth = httpx.BasicAuth(settings.auth.username, settings.auth.password.get_secret_value())
        elif isinstance(settings.auth, BearerAuth):
            self._headers["Authorization"] = f"Bearer {settings.auth.token.get_secret_value()}"

    @property
    def _client(self) -> httpx.AsyncClient:
        return self._http

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Every study matching the query, following limit/offset pages up to ``max_results``."""
        params = _query_params(query)
        page_size = min(self.settings.page_size, self.settings.max_results)
        records: dict[str, StudyRecord] = {}
        warnings_seen: list[str] = []
        offset = 0
        truncated = False
        while True:
            page, header_warning = await self._get_page(
                {**params, "limit": page_size, "offset": offset}, deadline
            )
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
        await self._get_page({"limit": 1, "includefield": "StudyInstanceUID"}, deadline)

    async def aclose(self) -> None:
        """Close this source's HTTP client."""
        await self._http.aclose()

    async def _get_page(self, params: dict[str, Any], deadline: Deadline) -> tuple[list[Any], str | None]:
        timeout = max(min(self.settings.timeout_s, deadline.remaining()), 0.01)
        try:
            async with self._client.stream(
                "GET",
                f"{self._base_url}/studies",
                params=params,
                headers=self._headers,
                auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                timeout=timeout,
            ) as response:
                body = await _read_capped(response)
        except httpx.TimeoutException as exc:
            raise SourceTimeout("QIDO request timed out") from exc
        except (httpx.ConnectError, httpx.UnsupportedProtocol) as exc:
            raise SourceUnreachable("connection refused or host unreachable") from exc
        except httpx.HTTPError as exc:
            raise SourceProtocolError(f"QIDO transport error ({type(exc).__name__})") from exc
        if response.status_code in (401, 403):
            raise SourceAuthError(f"QIDO refused our credentials (HTTP {response.status_code})")
        if response.status_code == 204 or (response.status_code == 200 and not body.strip()):
            return [], _warning_header(response)
        if response.status_code != 200:
            raise SourceProtocolError(f"QIDO answered HTTP {response.status_code}")
        try:
            page = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SourceProtocolError("QIDO answer is not valid JSON") from exc
        if not isinstance(page, list):
            raise SourceProtocolError("QIDO answer is not a JSON array")
        return page, _warning_header(response)


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


@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    """One TLS context per setting for the whole process: loading the CA bundle costs ~40 ms."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _read_capped(response: httpx.Response) -> bytes:
    """The response body, refusing bodies larger than MAX_RESPONSE_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise SourceProtocolError(f"QIDO answer larger than {MAX_RESPONSE_BYTES // (1024 * 1024)} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _warning_header(response: httpx.Response) -> str | None:
    """The server's Warning header (PS3.18 8.3.5.1), kept as a source warning rather than lost."""
    value = response.headers.get("Warning")
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
