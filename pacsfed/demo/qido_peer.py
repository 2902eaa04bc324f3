"""A simulated DICOMweb PACS (demo only): QIDO-RS over a study list, and WADO-RS of its reports.

``GET /dicom-web/studies`` searches studies (PS3.18 10.6); ``/studies/{study}/series`` and
``/studies/{study}/series/{series}/instances`` search within one study or series, whose series and
instances are its report instances only (no image is simulated); ``.../instances/{instance}``
retrieves one of them (WADO-RS, PS3.18 10.4) as ``multipart/related; type="application/dicom"``.
A study, series or instance the PACS does not hold is ``404``. Matching keys are given by keyword or by tag (``PatientID`` or ``00100020``) and follow PS3.4
C.2.2.2; ``includefield``, ``limit`` and ``offset`` follow PS3.18 8.3.4; ``fuzzymatching`` is
accepted and ignored. Answers are DICOM JSON (PS3.18 F.2), ``200 []`` when nothing matches, and
``400`` with ``{"error": ...}`` on a bad parameter. Error messages name parameters, never values.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import socket
from collections.abc import Generator, Iterable
from typing import Any

import uvicorn
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pacsfed.demo.patients import UTF8_CHARSET, MatchError, MatchKey, record_matches, validate_key
from pacsfed.demo.reports import series_record

DICOM_JSON = "application/dicom+json"

# PS3.18 Table 10.6.3-3: the study attributes returned when no includefield asks for more.
_DEFAULT_STUDY_FIELDS = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
# PS3.18 Tables 10.6.3-4 and 10.6.3-5: the series and instance defaults.
_DEFAULT_SERIES_FIELDS = (
    "SpecificCharacterSet",
    "Modality",
    "TimezoneOffsetFromUTC",
    "SeriesDescription",
    "SeriesInstanceUID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
)
_DEFAULT_INSTANCE_FIELDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "TimezoneOffsetFromUTC",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
_RESERVED = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
_LIST_VRS = frozenset({"UI", "CS"})  # values that may be comma-separated alternatives
_START_TIMEOUT_S = 5.0


class BadQuery(ValueError):
    """A QIDO-RS query parameter that cannot be honoured; the message names no patient data."""


def _tag(name: str) -> int:
    """The tag of a keyword or an 8-hex-digit tag; BadQuery if unknown."""
    if "." in name:
        raise BadQuery(f"{name}: sequence attribute paths are not supported")
    tag = tag_for_keyword(name)
    if tag is None and len(name) == 8:
        with contextlib.suppress(ValueError):
            tag = int(name, 16)
    if tag is None:
        raise BadQuery(f"{name}: unknown attribute")
    try:
        dictionary_VR(tag)
    except KeyError:
        raise BadQuery(f"{name}: unknown attribute") from None
    return tag


def _key(name: str, raw: str) -> MatchKey:
    tag = _tag(name)
    vr = dictionary_VR(tag)
    if vr == "SQ":
        raise BadQuery(f"{name}: sequence matching is not supported")
    separators = ",\\" if vr in _LIST_VRS else "\\"
    values = [raw]
    for sep in separators:
        values = [part for value in values for part in value.split(sep)]
    key = MatchKey(tag, vr, tuple(v.strip() for v in values if v.strip()))
    try:
        validate_key(key)
    except MatchError as exc:
        raise BadQuery(str(exc)) from None
    return key


def _non_negative(name: str, raw: str, minimum: int) -> int:
    if not raw.isdigit() or int(raw) < minimum:
        raise BadQuery(f"{name}: must be an integer of at least {minimum}")
    return int(raw)


class _Query:
    """The parsed parameters of one QIDO-RS request."""

    def __init__(
        self, params: Iterable[tuple[str, str]], defaults: tuple[str, ...] = _DEFAULT_STUDY_FIELDS
    ) -> None:
        self.keys: list[MatchKey] = []
        self.fields: set[int] = {_tag(name) for name in defaults}
        self.all_fields = False
        self.limit: int | None = None
        self.offset = 0
        seen: set[str] = set()
        for name, raw in params:
            if name != "includefield" and name in seen:
                raise BadQuery(f"{name}: given more than once")
            seen.add(name)
            if name == "includefield":
                self._include(raw)
            elif name == "limit":
                self.limit = _non_negative(name, raw, 1)
            elif name == "offset":
                self.offset = _non_negative(name, raw, 0)
            elif name == "fuzzymatching":
                if raw not in ("true", "false"):
                    raise BadQuery("fuzzymatching: must be true or false")
            else:
                key = _key(name, raw)
                self.keys.append(key)
                self.fields.add(key.tag)

    def _include(self, raw: str) -> None:
        for name in (part.strip() for part in raw.split(",")):
            if name == "all":
                self.all_fields = True
            elif name:
                self.fields.add(_tag(name))


def _record_json(record: Dataset, query: _Query, retrieve_url: str) -> dict[str, Any]:
    out = Dataset()
    for elem in record:
        if query.all_fields or elem.tag in query.fields:
            out.add(copy.deepcopy(elem))
    out.SpecificCharacterSet = UTF8_CHARSET
    out.RetrieveURL = retrieve_url
    return out.to_json_dict()


def _part10(instance: Dataset) -> bytes:
    buffer = io.BytesIO()
    instance.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _accepts_dicom(accept: str) -> bool:
    """True if the Accept header allows a multipart of application/dicom (PS3.18 8.7.3.3)."""
    if not accept.strip():
        return True
    for media_range in accept.lower().replace(" ", "").split(","):
        kind, _, parameters = media_range.partition(";")
        if kind in ("*/*", "multipart/*"):
            return True
        if kind == "multipart/related" and (
            "type=" not in parameters or 'type="application/dicom"' in parameters
        ):
            return True
    return False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_qido_app(
    datasets: Iterable[Dataset], latency_s: float = 0.0, reports: Iterable[Dataset] = ()
) -> Starlette:
    """A Starlette app serving QIDO-RS over ``datasets`` (oldest first) and WADO-RS of ``reports``."""
    studies = sorted(
        (copy.deepcopy(ds) for ds in datasets),
        key=lambda ds: (str(ds.get("StudyDate", "")), str(ds.get("StudyTime", "")),
                        str(ds.get("StudyInstanceUID", ""))),
    )  # fmt: skip
    held = {str(ds.StudyInstanceUID) for ds in studies}
    instances = [copy.deepcopy(ds) for ds in reports if str(ds.StudyInstanceUID) in held]
    series = {str(ds.SeriesInstanceUID): series_record(ds) for ds in instances}
    encoded = {str(ds.SOPInstanceUID): _part10(ds) for ds in instances}

    async def search_studies(request: Request) -> JSONResponse:
        """GET /dicom-web/studies: PS3.18 10.6.1, Search Transaction at the study level."""
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        try:
            query = _Query(request.query_params.multi_items())
        except BadQuery as exc:
            return _error(400, str(exc))
        matches = [ds for ds in studies if record_matches(ds, query.keys)]
        end = len(matches) if query.limit is None else query.offset + query.limit
        page = matches[query.offset : end]
        base_url = str(request.base_url).rstrip("/")
        headers = {}
        if end < len(matches):
            # PS3.18 8.3.4.4 (RFC 7234 Warning): more results can be requested with offset.
            agent = request.url.netloc or "pacsfed-demo"
            headers["Warning"] = f'299 {agent} "There are additional results that can be requested"'
        body = [_record_json(ds, query, f"{base_url}/dicom-web/studies/{ds.StudyInstanceUID}") for ds in page]
        return JSONResponse(body, headers=headers, media_type=DICOM_JSON)

    async def search_within(request: Request) -> JSONResponse:
        """GET .../studies/{study}/series and .../series/{series}/instances (PS3.18 10.6.1)."""
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        study, in_series = request.path_params["study"], request.path_params.get("series")
        if study not in held or (in_series is not None and in_series not in series):
            return _error(404, "no such study or series here")
        defaults = _DEFAULT_SERIES_FIELDS if in_series is None else _DEFAULT_INSTANCE_FIELDS
        try:
            query = _Query(request.query_params.multi_items(), defaults)
        except BadQuery as exc:
            return _error(400, str(exc))
        base_url = f"{str(request.base_url).rstrip('/')}/dicom-web/studies/{study}/series"
        body = []
        for record in series.values() if in_series is None else instances:
            where = (str(record.StudyInstanceUID), str(record.SeriesInstanceUID))
            if where[0] == study and (in_series in (None, where[1])) and record_matches(record, query.keys):
                url = f"{base_url}/{where[1]}"
                if in_series is not None:
                    url += f"/instances/{record.SOPInstanceUID}"
                body.append(_record_json(record, query, url))
        return JSONResponse(body, media_type=DICOM_JSON)

    async def retrieve_instance(request: Request) -> Response:
        """GET .../instances/{instance}: WADO-RS, one instance as a one-part multipart (PS3.18 10.4)."""
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        uid = request.path_params["instance"]
        found = next((ds for ds in instances if str(ds.SOPInstanceUID) == uid), None)
        if found is None or (str(found.StudyInstanceUID), str(found.SeriesInstanceUID)) != (
            request.path_params["study"],
            request.path_params["series"],
        ):
            return _error(404, "no such instance here")
        if not _accepts_dicom(request.headers.get("accept", "")):
            return _error(406, 'only multipart/related; type="application/dicom" is offered')
        boundary = f"pacsfed-demo-{uid}"
        body = (
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")
            + encoded[uid]
            + f"\r\n--{boundary}--\r\n".encode("ascii")
        )
        media_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        return Response(body, media_type=media_type)

    study_path = "/dicom-web/studies/{study}/series"
    return Starlette(
        routes=[
            Route("/dicom-web/studies", search_studies, methods=["GET"]),
            Route(study_path, search_within, methods=["GET"]),
            Route(study_path + "/{series}/instances", search_within, methods=["GET"]),
            Route(study_path + "/{series}/instances/{instance}", retrieve_instance, methods=["GET"]),
        ]
    )


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class SimulatedQidoServer:
    """The QIDO-RS app run by uvicorn inside the current asyncio loop, on a port it binds itself."""

    def __init__(
        self,
        datasets: Iterable[Dataset],
        host: str = "127.0.0.1",
        port: int = 0,
        latency_s: float = 0.0,
        *,
        reports: Iterable[Dataset] = (),
    ) -> None:
        self.host = host
        self._requested_port = port
        self._app = create_qido_app(datasets, latency_s=latency_s, reports=reports)
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The bound port; only meaningful once started."""
        if self._port is None:
            raise RuntimeError("the simulated QIDO-RS server is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """The DICOMweb root, e.g. ``http://127.0.0.1:PORT/dicom-web``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/dicom-web"

    async def start(self) -> int:
        """Bind, start serving in a task of the running loop, and return the port once ready."""
        if self._task is not None:
            return self.port
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio turns Nagle off on accepted sockets only when the
        # listening socket says proto == IPPROTO_TCP; with proto 0 every keep-alive response
        # body waited ~40 ms for a delayed ACK (measured here, uvicorn with h11).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        port = int(sock.getsockname()[1])
        # log_config=None: leave the process's logging set-up alone. log_level="warning" silences
        # uvicorn.access, whose lines would carry PatientID in query strings (process-wide).
        config = uvicorn.Config(
            self._app,
            host=self.host,
            port=port,
            log_config=None,
            log_level="warning",
            lifespan="off",
            http="h11",
            ws="none",
            server_header=False,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + _START_TIMEOUT_S
        while not self._server.started:
            if self._task.done() or asyncio.get_running_loop().time() > deadline:
                await self.stop()
                sock.close()
                raise RuntimeError("the simulated QIDO-RS server did not start")
            await asyncio.sleep(0.005)
        self._port = port
        return port

    async def stop(self) -> None:
        """Ask uvicorn to exit and wait for it (about 0.2 s: it polls every 0.1 s)."""
        server, task = self._server, self._task
        self._server = self._task = None
        self._port = None
        if server is None or task is None:
            return
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def __aenter__(self) -> SimulatedQidoServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
