"""The settings of a FHIR source (its ``settings_model``): the common source keys plus this kind's own."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, FilePath, SecretStr

from federation.settings import SourceSettings

__all__ = ["BearerToken", "FhirSourceSettings"]

HttpUrl = Annotated[str, Field(pattern=r"^https?://[^\s]+$")]


class BearerToken(BaseModel):
    """A static bearer token sent as ``Authorization: Bearer …``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["bearer"]
    token: SecretStr


class FhirSourceSettings(SourceSettings):
    """A FHIR R4 server searched for ``ImagingStudy`` resources by the patient's identifier.

    ``SourceSettings`` refuses unknown keys (``extra="forbid"``), and so does this model: a typo in a
    source's keys is a configuration error at start-up.
    """

    kind: Literal["fhir"]
    base_url: HttpUrl
    """The FHIR base (``https://fhir.example.org/r4``): searches go to ``{base_url}/ImagingStudy``."""
    identifier_system: str | None = None
    """The FHIR identifier ``system`` of this source's PatientIDs (``urn:oid:…``); without it the
    value is sent alone (``patient.identifier=value``), matching it in any system."""
    issuer_systems: dict[str, str] = Field(default_factory=dict)
    """pacsfed issuers → FHIR identifier systems (``{NISS: "urn:oid:2.16.56.1.2.3"}``): a query that
    names an issuer (``match_issuer``, a national number in ``other_patient_ids``) is sent in its
    system, and a patient's identifiers in these systems come back as its IssuerOfPatientID and
    OtherPatientIDs."""
    auth: BearerToken | None = None
    proxy: HttpUrl | None = None
    """An HTTP proxy every request to this source goes through (``http://proxy.hospital:3128``)."""
    include_patient: bool = True
    """Ask for the subject ``Patient`` in the same Bundle (``_include=ImagingStudy:subject``). Without
    it the server must contain the Patient or put its identifier in the subject reference: a record
    without the PatientID asked for is dropped by pacsfed, which cannot tell it is the patient's."""
    page_size: Annotated[int, Field(ge=1, le=1000)] = 100
    """``_count``: resources per page; later pages are read through the Bundle's ``next`` links."""
    max_results: Annotated[int, Field(ge=1, le=100_000)] = 1000
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Longest wait for one request (connect, each read), within the query's deadline."""
    verify_tls: bool = True
    ca_file: FilePath | None = None
    """A PEM bundle of the CAs this source's certificate is checked against (a hospital's own CA),
    instead of the usual public ones."""
