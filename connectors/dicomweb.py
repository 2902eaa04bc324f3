"""DICOMweb connector: QIDO-RS study search (PS3.18 10.6) with paging, parsed from the DICOM JSON model (PS3.18 F.2)."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from importlib.metadata import version
from typing import Any, TypeVar
from urllib.parse import quote

from connectors import dicomweb_reports
from connectors.base import Connector, ConnectorContext, InstanceAnswer, SeriesAnswer, SourceAnswer
from connectors.dicom_json import record_from_qido_item
from connectors.dicom_levels import (
    INSTANCE_RETURN_KEYWORDS,
    SERIES_RETURN_KEYWORDS,
    instance_record_from_json,
    series_record_from_json,
)
from connectors.dicomweb_retrieve import open_retrieve
from connectors.dicomweb_settings import BasicAuth, BearerAuth, DicomwebSourceSettings
from connectors.http_auth import SourceAuth, basic_auth, bearer_auth
from connectors.http_source import HttpSource
from connectors.normalize import STUDY_RETURN_KEYWORDS
from connectors.oauth2 import OAuth2ClientCredentialsAuth
from federation.errors import SourceAuthError, SourceProtocolError
from federation.models import Deadline, InstanceQuery, SeriesQuery, StudyQuery, StudyRecord
from federation.reports import ReportAnswer, ReportDocument, ReportInstance, StudyRef
from federation.retrieve import RetrieveRequest, RetrieveStream
from federation.settings_security import OAuth2ClientCredentials

DICOM_JSON = "application/dicom+json"
DICOM_ACCEPT = DICOM_JSON
"""One media type, the one PS3.18 8.7.3 requires of every QIDO-RS server: Orthanc 1.10 reads the
Accept header as a single type and logs "Unsupported return MIME type" for a list or a q-value."""
USER_AGENT = f"pacsfed/{version('pacsfed')}"
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest QIDO page read: a 10,000-study page is ~15 MiB of DICOM JSON, and json.loads makes
several times that in objects. Reading stops as soon as a body passes it (measured: a 200 MB
answer costs < 30 MB and well under a second)."""
# Repeated, not comma-separated: Orthanc 1.10's plugin ignores a comma-separated list.
_INCLUDE_FIELDS = [k for k in STUDY_RETURN_KEYWORDS if k != "RetrieveAETitle"] + ["RetrieveURL"]
_SERIES_FIELDS = [k for k in SERIES_RETURN_KEYWORDS if k != "RetrieveAETitle"] + ["RetrieveURL"]
_INSTANCE_FIELDS = [k for k in INSTANCE_RETURN_KEYWORDS if k != "RetrieveAETitle"] + ["RetrieveURL"]
R = TypeVar("R")


class DicomwebConnector(Connector):
    """Queries one PACS with QIDO-RS over HTTP(S)."""

    kind = "dicomweb"
    settings_model = DicomwebSourceSettings
    supports_issuer_of_patient_id = True
    supports_demographic_search = True
    supports_reports = True
    supports_retrieve = True
    supports_study_keys = True
    supports_uid_lists = True
    supports_series_query = True
    supports_instance_query = True

    settings: DicomwebSourceSettings

    def __init__(self, settings: DicomwebSourceSettings, context: ConnectorContext) -> None:
        super().__init__(settings, context)
        self.http = HttpSource(
            settings.url,
            user_agent=USER_AGENT,
            timeout_s=settings.timeout_s,
            max_concurrency=settings.max_concurrency,
            auth=source_auth(settings.auth),
            tls=settings.tls,
            verify_tls=settings.verify_tls,
            http2=settings.http2,
            proxy=settings.proxy.get_secret_value() if settings.proxy is not None else None,
        )
        """The source's one HTTP request path (lean HTTP/1.1 pool, or httpx for HTTP/2 and proxies)."""
        self.protocols = self.http.protocols
        """Requests sent so far per HTTP version ("HTTP/1.1", "HTTP/2"): for tests and metrics."""
        self._ssl_context = self.http.ssl_context  # read by the TLS tests, as before the request path moved
        self._http = self.http.client

    async def find_studies(self, query: StudyQuery, deadline: Deadline) -> SourceAnswer:
        """Every study matching the query, following limit/offset pages up to ``max_results``."""
        page_size = min(self.settings.page_size, self.settings.max_results)
        records: dict[str, StudyRecord] = {}
        warnings_seen: list[str] = []
        offset = 0
        truncated = False
        while True:
            page, header_warning = await self._get_page(page_query(query, page_size, offset), deadline)
            if header_warning:
                warnings_seen.append(header_warning)
            for item in page:
                record = record_from_qido_item(item, self.id, warnings_seen)
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

    async def find_series(self, query: SeriesQuery, deadline: Deadline) -> SeriesAnswer:
        """The study's series: QIDO-RS ``studies/{uid}/series`` (PS3.18 10.6.1), paged like studies."""
        params: dict[str, str | int | list[str]] = {"includefield": list(_SERIES_FIELDS)}
        if query.series_instance_uid is not None:
            params["SeriesInstanceUID"] = query.series_instance_uid
        if query.modality is not None:
            params["Modality"] = query.modality
        path = f"studies/{quote(query.study_instance_uid, safe='')}/series"
        records, warnings, truncated = await self._find_level(path, params, series_record_from_json, deadline)
        return SeriesAnswer(records, warnings, truncated)

    async def find_instances(self, query: InstanceQuery, deadline: Deadline) -> InstanceAnswer:
        """The series' instances: QIDO-RS ``studies/{uid}/series/{uid}/instances`` (PS3.18 10.6.1)."""
        params: dict[str, str | int | list[str]] = {"includefield": list(_INSTANCE_FIELDS)}
        if query.sop_instance_uid is not None:
            params["SOPInstanceUID"] = query.sop_instance_uid
        study, series = quote(query.study_instance_uid, safe=""), quote(query.series_instance_uid, safe="")
        path = f"studies/{study}/series/{series}/instances"
        records, warnings, truncated = await self._find_level(
            path, params, instance_record_from_json, deadline
        )
        return InstanceAnswer(records, warnings, truncated)

    async def _find_level(
        self,
        path: str,
        params: dict[str, str | int | list[str]],
        read: Callable[[Any, str, list[str]], R | None],
        deadline: Deadline,
    ) -> tuple[list[R], tuple[str, ...], bool]:
        """Every page of one QIDO search below the study, read into records, up to ``max_results``."""
        page_size = min(self.settings.page_size, self.settings.max_results)
        records: list[R] = []
        warnings: list[str] = []
        offset = 0
        truncated = False
        while True:
            encoded = query_string({**params, "limit": page_size, "offset": offset})
            page, header_warning = await self._get_page(encoded, deadline, path)
            if header_warning:
                warnings.append(header_warning)
            for item in page:
                record = read(item, self.id, warnings)
                if record is None:
                    warnings.append("an answer without its UIDs was ignored")
                else:
                    records.append(record)
            offset += len(page)
            if len(page) != page_size:
                break
            if len(records) >= self.settings.max_results:
                truncated = True
                warnings.append(f"stopped after {self.settings.max_results} answers (max_results)")
                break
        return records, tuple(dict.fromkeys(warnings)), truncated

    async def ping(self, deadline: Deadline) -> None:
        """A minimal QIDO request that any conformant server answers (limit=1)."""
        await self._get_page(_PING_QUERY, deadline)

    async def fetch_report(self, study: StudyRef, deadline: Deadline) -> ReportAnswer:
        """The study's SR or document report (QIDO-RS series, WADO-RS instance): connectors.dicomweb_reports."""
        return await dicomweb_reports.fetch_report(self.http, study, deadline)

    async def fetch_report_document(
        self, study: StudyRef, document: ReportInstance, deadline: Deadline
    ) -> ReportDocument:
        """A document report's bytes, fetched again with WADO-RS."""
        return await dicomweb_reports.fetch_document(self.http, study, document, deadline)

    async def retrieve(self, request: RetrieveRequest) -> RetrieveStream:
        """WADO-RS forwarded with this source's credentials, streamed: connectors.dicomweb_retrieve."""
        return await open_retrieve(
            self.http,
            self.id,
            request,
            first_byte_s=self.settings.retrieve_first_byte_s,
            stall_s=self.settings.retrieve_stall_s,
        )

    async def aclose(self) -> None:
        """Close this source's connections."""
        await self.http.aclose()

    async def _get_page(
        self, query: bytes, deadline: Deadline, path: str = "studies"
    ) -> tuple[list[Any], str | None]:
        """One QIDO request: the decoded JSON array and the server's Warning, if any."""
        answer = await self.http.get(
            path, query, accept=DICOM_ACCEPT, deadline=deadline, max_body=MAX_RESPONSE_BYTES, what="QIDO"
        )
        status, body = answer.status, answer.body
        warning = _warning_header(answer.headers.get("warning"))
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


def source_auth(settings: BasicAuth | BearerAuth | OAuth2ClientCredentials | None) -> SourceAuth | None:
    """The one authentication object of a source, read by both request paths."""
    if isinstance(settings, BasicAuth):
        return basic_auth(settings.username, settings.password.get_secret_value())
    if isinstance(settings, BearerAuth):
        return bearer_auth(settings.token.get_secret_value())
    if isinstance(settings, OAuth2ClientCredentials):
        return OAuth2ClientCredentialsAuth(settings)
    return None


@functools.lru_cache(maxsize=64)
def page_query(query: StudyQuery, limit: int, offset: int) -> bytes:
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
    if query.study_instance_uid is not None:
        params["StudyInstanceUID"] = query.study_instance_uid
    elif query.study_instance_uids:
        params["StudyInstanceUID"] = ",".join(query.study_instance_uids)  # PS3.18 8.3.4.1 (Orthanc: not "\\")
    if query.accession_number is not None:
        params["AccessionNumber"] = query.accession_number
    if query.study_date is not None:
        params["StudyDate"] = query.study_date.dicom()
    if query.modalities:
        params["ModalitiesInStudy"] = "\\".join(query.modalities)
    if query.other_patient_id is not None:
        params["OtherPatientIDsSequence.PatientID"] = query.other_patient_id
        if query.other_patient_id_issuer:
            params["OtherPatientIDsSequence.IssuerOfPatientID"] = query.other_patient_id_issuer
        params["includefield"] = [*_INCLUDE_FIELDS, "OtherPatientIDsSequence"]
    return params


def _warning_header(value: str | None) -> str | None:
    """The server's Warning header (PS3.18 8.3.5.1), kept as a source warning rather than lost."""
    return f"server warning: {value[:200]}" if value else None
