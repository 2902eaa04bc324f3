"""A small FHIR R4 server for the tests: ImagingStudy search by patient identifier, under uvicorn on a loopback port.

It holds Patients and ImagingStudies (each validated with the ``fhir.resources`` R4B models when
added, and each answered Bundle too), answers ``GET /fhir/ImagingStudy?patient.identifier=…`` as a
searchset Bundle with ``_count`` paging through ``next`` links and ``_include=ImagingStudy:subject``,
and ``GET /fhir/metadata``. ``fault`` makes it answer as a broken server would: ``slow`` (no
answer for a while), ``trickle`` (a body a byte at a time), ``malformed`` (not JSON),
``outcome`` (HTTP 400 with an OperationOutcome whose text names the patient), ``foreign-next`` (a
``next`` link to another host). ``token`` makes it ask for that bearer token.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.patient import Patient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MRN = "urn:oid:1.2.250.1.71.4.2.1"
"""The identifier system of the test hospital's PatientIDs."""
FHIR_JSON = "application/fhir+json"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"


@dataclass
class Seen:
    """One request the endpoint answered: its path, query string and headers."""

    path: str
    query: str
    headers: dict[str, str]
    params: list[tuple[str, str]] = field(default_factory=list)


class FhirEndpoint:
    """The server and what it holds; ``start()`` serves it, ``stop()`` ends it."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.tls = tls
        """(certificate, key) PEM files: served over https:// when set."""
        self.patients: dict[str, dict[str, Any]] = {}
        self.studies: list[dict[str, Any]] = []
        self.seen: list[Seen] = []
        self.fault: str | None = None
        self.slow_s = 5.0
        self.token: str | None = None
        self.contained_subject = False
        """Answer each study with its Patient contained (``subject: #p``), not included."""
        self._thread: threading.Thread | None = None
        self._server: uvicorn.Server | None = None
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/fhir"

    # -- holding resources -------------------------------------------------------------------------

    def add_patient(
        self,
        system: str,
        value: str,
        family: str,
        given: Sequence[str] = (),
        birth_date: str | None = None,
        gender: str | None = None,
        ideographic: tuple[str, Sequence[str]] | None = None,
        phonetic: tuple[str, Sequence[str]] | None = None,
        other_identifiers: Sequence[tuple[str, str]] = (),
    ) -> str:
        """A Patient with one identifier and its names; returns its id."""
        patient_id = f"p{len(self.patients) + 1}"
        names: list[dict[str, Any]] = [{"use": "official", "family": family, "given": list(given)}]
        for code, extra in (("IDE", ideographic), ("SYL", phonetic)):
            if extra is not None:
                ext = [{"url": REPRESENTATION, "valueCode": code}]
                names.append({"extension": ext, "family": extra[0], "given": list(extra[1])})
        if ideographic or phonetic:
            names[0]["extension"] = [{"url": REPRESENTATION, "valueCode": "ABC"}]
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": patient_id,
            "identifier": [{"system": system, "value": value}]
            + [{"system": other_system, "value": other} for other_system, other in other_identifiers],
            "name": names,
        }
        if birth_date:
            resource["birthDate"] = birth_date
        if gender:
            resource["gender"] = gender
        Patient.model_validate(resource)
        self.patients[patient_id] = resource
        return patient_id

    def add_study(
        self,
        patient: str,
        uid: str,
        *,
        accession: str | None = None,
        started: str | None = None,
        modalities: Sequence[str] = (),
        series_modalities: Sequence[str] = (),
        description: str | None = None,
        series: int | None = None,
        instances: int | None = None,
    ) -> dict[str, Any]:
        """An ImagingStudy of the Patient ``patient`` (its id)."""
        identifiers: list[dict[str, Any]] = [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}]
        if accession is not None:
            kind = {"coding": [{"system": V2_0203, "code": "ACSN"}]}
            identifiers.append({"type": kind, "value": accession})
        resource: dict[str, Any] = {
            "resourceType": "ImagingStudy",
            "id": f"s{len(self.studies) + 1}",
            "identifier": identifiers,
            "status": "available",
            "subject": {"reference": f"Patient/{patient}"},
        }
        if modalities:
            resource["modality"] = [{"system": DCM, "code": code} for code in modalities]
        if series_modalities:
            resource["series"] = [
                {"uid": f"{uid}.{index}", "modality": {"system": DCM, "code": code}}
                for index, code in enumerate(series_modalities, start=1)
            ]
        for key, value in (
            ("started", started),
            ("description", description),
            ("numberOfSeries", series),
            ("numberOfInstances", instances),
        ):
            if value is not None:
                resource[key] = value
        ImagingStudy.model_validate(resource)
        self.studies.append(resource)
        return resource

    # -- serving -----------------------------------------------------------------------------------

    def start(self) -> FhirEndpoint:
        """Serve on the bound loopback port, in a thread of its own; return once it listens."""
        app = Starlette(
            routes=[
                Route("/fhir/ImagingStudy", self._search),
                Route("/fhir/metadata", self._metadata),
            ]
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True, name="fhir-endpoint"
        )
        self._thread.start()
        started = time.monotonic()
        while not self._server.started:
            if time.monotonic() - started > 10 or not self._thread.is_alive():
                raise RuntimeError("the FHIR test endpoint did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._socket.close()

    async def _metadata(self, request: Request) -> Response:
        self._record(request)
        body = {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance"}
        return JSONResponse(body, media_type=FHIR_JSON)

    async def _search(self, request: Request) -> Response:
        self._record(request)
        if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
            return _outcome(401, "login", "no or wrong bearer token")
        if self.fault == "slow":
            await asyncio.sleep(self.slow_s)
        if self.fault == "malformed":
            return Response(b'{"resourceType": "Bundle", "entry": [', media_type=FHIR_JSON)
        if self.fault == "outcome":
            return _outcome(400, "processing", f"no such patient: {self._asked(request)}")
        if self.fault == "trickle":
            return StreamingResponse(_trickle(b'{"resourceType": "Bundle"}'), media_type=FHIR_JSON)
        bundle = self._bundle(request)
        Bundle.model_validate(bundle)
        return JSONResponse(bundle, media_type=FHIR_JSON)

    def _record(self, request: Request) -> None:
        self.seen.append(
            Seen(
                request.url.path,
                request.url.query,
                dict(request.headers),
                list(request.query_params.multi_items()),
            )
        )

    @staticmethod
    def _asked(request: Request) -> str:
        return request.query_params.get("patient.identifier", "")

    def _bundle(self, request: Request) -> dict[str, Any]:
        matching = {pid for pid, patient in self.patients.items() if _matches(patient, request)}
        studies = [s for s in self.studies if s["subject"]["reference"].removeprefix("Patient/") in matching]
        count = int(request.query_params.get("_count", "50"))
        offset = int(request.query_params.get("_offset", "0"))
        page = studies[offset : offset + count]
        base = str(request.base_url).rstrip("/") + "/fhir"
        entries: list[dict[str, Any]] = []
        included: dict[str, dict[str, Any]] = {}
        for study in page:
            patient = self.patients[study["subject"]["reference"].removeprefix("Patient/")]
            if self.contained_subject:
                study = {**study, "contained": [{**patient, "id": "p"}], "subject": {"reference": "#p"}}
            elif request.query_params.get("_include") == "ImagingStudy:subject":
                included[patient["id"]] = patient
            entries.append(
                {
                    "fullUrl": f"{base}/ImagingStudy/{study['id']}",
                    "resource": study,
                    "search": {"mode": "match"},
                }
            )
        for patient in included.values():
            entries.append(
                {
                    "fullUrl": f"{base}/Patient/{patient['id']}",
                    "resource": patient,
                    "search": {"mode": "include"},
                }
            )
        links = [{"relation": "self", "url": str(request.url)}]
        if offset + count < len(studies):
            following = str(request.url.include_query_params(_offset=offset + count))
            if self.fault == "foreign-next":
                following = following.replace("127.0.0.1", "localhost")
            links.append({"relation": "next", "url": following})
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(studies),
            "link": links,
            "entry": entries,
        }


def _matches(patient: dict[str, Any], request: Request) -> bool:
    """Whether the Patient matches the chained parameters: identifier (token), family (prefix or contains), birthdate."""
    params = request.query_params
    if "patient.identifier" in params:
        system, value = split_token(params["patient.identifier"])
        if not any(i["value"] == value and system in (None, i.get("system")) for i in patient["identifier"]):
            return False
    families = [name.get("family", "").casefold() for name in patient["name"]]
    if "patient.family" in params:
        prefix = split_token(params["patient.family"])[1].casefold()
        if not any(family.startswith(prefix) for family in families):
            return False
    if "patient.family:contains" in params:
        part = split_token(params["patient.family:contains"])[1].casefold()
        if not any(part in family for family in families):
            return False
    return "patient.birthdate" not in params or patient.get("birthDate") == params["patient.birthdate"]


def split_token(token: str) -> tuple[str | None, str]:
    """A token search value as (system, value): split at the first unescaped ``|``, escapes removed."""
    parts: list[str] = []
    current = ""
    escaped = False
    for char in token:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|" and not parts:
            parts.append(current)
            current = ""
        else:
            current += char
    if parts:
        return parts[0] or None, current
    return None, current


def _outcome(status: int, code: str, text: str) -> Response:
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}],
    }
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON)


async def _trickle(body: bytes) -> AsyncIterator[bytes]:
    for index in range(len(body)):
        await asyncio.sleep(0.3)
        yield body[index : index + 1]
