"""Settings: one YAML file plus ``PACSFED_`` environment overrides, validated once at start-up.

Environment variables override the file; nested keys use ``__`` (``PACSFED_CACHE__URL``).
The object is built by :func:`load_settings` and passed down; there is no module-level instance.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from federation.errors import ConfigError
from federation.settings_observability import LoggingSettings, TelemetrySettings
from federation.settings_security import (
    AuditSettings,
    AuthSettings,
    GraphqlLimits,
    ShareSettings,
    TlsSettings,
)
from federation.viewer import check_template

SourceId = Annotated[str, Field(pattern=r"^[a-z0-9-]+$", min_length=1, max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheSettings(_Strict):
    """Where answers are written through to."""

    backend: Literal["elasticsearch", "memory"] = "elasticsearch"
    url: str = "http://127.0.0.1:9200"
    index_prefix: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] = "pacsfed"
    request_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    write_wait_s: Annotated[float, Field(ge=0, le=10)] = 0.5
    """How long a query waits, after its last source answered, for its cache writes to finish."""
    keep_days: Annotated[int, Field(ge=1, le=3650)] = 30
    """Cached answers are deleted this long after their index's period ends (whole indices, never the audit's)."""
    index_period: Literal["day", "week"] = "week"
    """How much time one cache index covers: answers go to the index of the period they were made in."""
    ilm_policy: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")] | None = None
    """An ILM policy (clusters with ILM) the cache indices are put under, besides pacsfed's own deletion by age."""
    api_key: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsSettings | None = None
    """CA bundle / client certificate for an ``https://`` node."""


class CircuitSettings(_Strict):
    """When to stop asking a failing source, and when to try it again."""

    failures: Annotated[int, Field(ge=1, le=1000)] = 5
    reset_s: Annotated[float, Field(gt=0, le=3600)] = 30.0


class SourceSettings(_Strict):
    """The keys every source has; each connector kind's own model adds its keys (its ``settings_model``)."""

    kind: str
    """The connector kind: the name of its ``pacsfed.connectors`` entry point."""
    id: SourceId
    name: str = ""
    issuer: str | None = None
    """Issuer of the PatientIDs this PACS holds (its identifier domain)."""
    national_id_in: Literal["patient_id", "other_patient_ids", "none"] = "none"
    """Where this PACS keeps the national number, if anywhere."""
    match_issuer: bool = False
    """Send IssuerOfPatientID as a matching key (only for PACS that store and match it)."""
    enabled: bool = True
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    """Queries in flight to this source at most (DIMSE: also its threads and associations)."""
    circuit: CircuitSettings = CircuitSettings()
    ttl_s: Annotated[float, Field(ge=0, le=7 * 24 * 3600)] = 300.0
    """How long a cached answer of this source is served without waiting for the source."""
    non_ascii_name_keys: bool | None = None
    """Send a candidate search's name key in its own script (``*山田*``), beyond ASCII: DIMSE under
    ISO_IR 192, QIDO as UTF-8. Default: yes for DICOMweb (PS3.18 requires UTF-8) and for DIMSE
    unless ``query_charset`` is null; ``false`` for a PACS that cannot match them."""
    viewer_url: str | None = None
    """Link template of this source's viewer: an absolute http(s) URL with ``{studyInstanceUid}``,
    ``{accessionNumber}`` and ``{patientId}`` placeholders (values percent-encoded); see federation.viewer."""

    @field_validator("viewer_url")
    @classmethod
    def _viewer_template(cls, value: str | None) -> str | None:
        return check_template(value) if value else None

    @model_validator(mode="after")
    def _default_name(self) -> SourceSettings:
        if not self.name:
            self.name = self.id
        return self


CONNECTOR_ENTRY_POINTS = "pacsfed.connectors"
"""The entry point group naming each connector class by its kind (built-ins register there too)."""


class ConnectorsSettings(_Strict):
    """Which installed connector kinds may load (``pacsfed connectors list`` shows them)."""

    allow: list[Annotated[str, Field(min_length=1)]] | None = None
    """When set, only these kinds load, the built-in ``dimse`` and ``dicomweb`` too: the others are
    never imported, a source of another kind is a configuration error, and so is a listed kind that
    is not installed. Unset: every installed kind loads."""


def connector_entry_points(allow: Collection[str] | None = None) -> list[EntryPoint]:
    """The installed ``pacsfed.connectors`` entry points, only the allowed ones when ``allow`` is given."""
    found = {entry.name: entry for entry in entry_points(group=CONNECTOR_ENTRY_POINTS)}
    if allow is None:
        return list(found.values())
    missing = sorted(set(allow) - set(found))
    if missing:
        installed = ", ".join(repr(name) for name in sorted(found)) or "none"
        raise ConfigError(
            f"connectors.allow names {', '.join(repr(m) for m in missing)}, not installed (installed: {installed})"
        )
    return [entry for name, entry in found.items() if name in allow]


def load_connector(entry: EntryPoint) -> Any:
    """The object an entry point names, imported now; a plugin that fails to import is a ConfigError."""
    try:
        return entry.load()
    except Exception as exc:
        package = f" (package {entry.dist.name})" if entry.dist is not None else ""
        raise ConfigError(
            f"connector plugin {entry.name!r}{package} failed to load: {type(exc).__name__}: {exc}"
        ) from exc


def source_settings_models(allow: Collection[str] | None = None) -> dict[str, type[SourceSettings]]:
    """Each installed (and allowed) connector kind's settings model (its class's ``settings_model``), by kind."""
    models: dict[str, type[SourceSettings]] = {}
    for entry in connector_entry_points(allow):
        connector = load_connector(entry)
        models[entry.name] = checked_settings_model(entry.name, getattr(connector, "settings_model", None))
    return models


def checked_settings_model(kind: str, model: object) -> type[SourceSettings]:
    """A connector kind's ``settings_model``, if it is a SourceSettings that refuses unknown keys."""
    if not (isinstance(model, type) and issubclass(model, SourceSettings)):
        raise ConfigError(f"connector plugin {kind!r} declares no settings_model (a SourceSettings)")
    if model.model_config.get("extra") != "forbid":
        raise ConfigError(f"connector plugin {kind!r}: its settings_model must refuse unknown keys")
    return model


def validate_sources(
    value: Any, models: Mapping[str, type[SourceSettings]], allow: Collection[str] | None = None
) -> list[SourceSettings]:
    """Validate each source by its ``kind``'s model; errors are located ``<index>.<kind>.<key>``."""
    if not isinstance(value, list | tuple):
        raise ValueError("sources must be a list of mappings")
    sources: list[SourceSettings] = []
    errors: list[InitErrorDetails] = []
    for index, item in enumerate(value):
        if isinstance(item, SourceSettings):
            model = models.get(item.kind)
            if model is not None and isinstance(item, model):
                sources.append(item)
            else:
                errors.append(_error((index,), "source_kind", f"not a settings model of kind {item.kind!r}"))
            continue
        if not isinstance(item, dict):
            errors.append(_error((index,), "source_type", "a source must be a mapping of keys"))
            continue
        kind = item.get("kind")
        if kind is None:
            errors.append(_error((index, "kind"), "missing", "Field required"))
        elif allow is not None and kind not in allow:
            allowed = ", ".join(repr(name) for name in allow) or "none"
            message = f"kind {kind!r} is not allowed by connectors.allow (allowed: {allowed})"
            errors.append(_error((index,), "source_kind", message))
        elif not isinstance(kind, str) or kind not in models:
            installed = ", ".join(repr(name) for name in sorted(models)) or "none"
            message = f"no connector is installed for kind {kind!r} (installed: {installed})"
            errors.append(_error((index,), "source_kind", message))
        else:
            try:
                sources.append(models[kind].model_validate(item))
            except ValidationError as exc:
                for detail in exc.errors(include_url=False):
                    errors.append(_error((index, kind, *detail["loc"]), detail["type"], detail["msg"]))
    if errors:
        raise ValidationError.from_exception_data("sources", errors)
    return sources


def _error(loc: tuple[int | str, ...], kind: str, message: str) -> InitErrorDetails:
    # A kind's own message is passed as is: braces in it are not template fields.
    return InitErrorDetails(
        type=PydanticCustomError(kind, message.replace("{", "{{").replace("}", "}}")), loc=loc, input=None
    )


class ServerSettings(_Strict):
    """Where ``pacsfed serve`` listens."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    mode: Literal["production", "development"] = "production"
    """``development`` turns on GraphiQL, introspection and detailed errors."""
    forwarded_allow_ips: list[str] = []
    """Reverse proxies whose X-Forwarded-For is trusted for the client address (audit, rate limits)."""
    public_url: Annotated[str, Field(pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")] | None = None
    """Where callers reach pacsfed (``https://pacsfed.example.org``): the start of every absolute URL it
    writes (DICOMweb RetrieveURL and BulkDataURI, report and share links, FHIR fullUrl). Unset: the
    request's own scheme and ``Host`` (the scheme from X-Forwarded-Proto of a trusted proxy)."""
    cors_origins: list[Annotated[str, Field(pattern=r"^https?://[a-z0-9.:\[\]-]+$")]] = []
    """Browser origins (``https://ehr.example.org``) allowed to call /graphql (CORS, no cookies)."""
    graphql: GraphqlLimits = GraphqlLimits()
    header_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """A connection whose request head is not complete after this long is closed (slow clients)."""
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    """A request whose body has not fully arrived this long after its head is answered 408 and closed."""
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Open connections (HTTP and WebSocket) beyond this many are answered 503."""
    max_pending_queries: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Patient queries in progress at once; one more is refused at once (``OVERLOADED``, HTTP 503 with
    ``Retry-After``) instead of queueing past its deadline. 100 is what 20 sources, 4 requests each
    at once (``max_concurrency``), answering in 100 ms serve in half the default 5 s deadline."""


class QuerySettings(_Strict):
    """Defaults for every patient query."""

    default_deadline_ms: Annotated[int, Field(ge=50, le=120_000)] = 5000
    max_deadline_ms: Annotated[int, Field(ge=50, le=600_000)] = 60_000


class ReportSettings(_Strict):
    """How exam reports are read (``exams { report }``) and how long their document links live."""

    deadline_ms: Annotated[int, Field(ge=50, le=120_000)] = 10_000
    """A report's own deadline: every source holding the exam is asked within it."""
    link_ttl_s: Annotated[int, Field(ge=10, le=24 * 3600)] = 900
    """How long a document report's ``url`` opens (for the caller it was made for only)."""


_AeTitle = Annotated[
    str, Field(pattern=r"^[\x21-\x5b\x5d-\x7e]([\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")
]
"""An AE title (PS3.5 6.2, VR AE): 1-16 characters, no backslash, no leading or trailing space."""


class DicomCallerSettings(_Strict):
    """What one calling AE of the DICOM facade may do, as an API key would (``scopes``, ``sources``)."""

    scopes: list[Literal["history:read", "history:emergency"]] = ["history:read"]
    sources: list[SourceId] | None = None
    """Sources this AE's queries reach (all when absent)."""
    partial_status: Literal["warning", "success"] = "warning"
    """The final C-FIND status when sources failed: Warning B000 with an ErrorComment naming them, or
    Success for callers that drop every answer on a warning (Orthanc 1.10 does)."""


class DicomFacadeSettings(_Strict):
    """``dicom_facade``: pacsfed as a DICOM node (C-ECHO, C-FIND SCP) for workstations."""

    port: Annotated[int, Field(ge=1, le=65535)]
    host: str = "127.0.0.1"
    ae_title: _AeTitle = "PACSFED"
    allowed_calling_aes: list[_AeTitle] | dict[_AeTitle, DicomCallerSettings]
    """Calling AEs let in; a plain list gives each read access to every source. Others get A-ASSOCIATE-RJ."""
    tls: TlsSettings | None = None
    """DICOM TLS (PS3.15 B.12): ``cert_file``/``key_file`` are ours; ``ca_file`` makes callers show a certificate."""
    deadline_ms: Annotated[int, Field(ge=50, le=120_000)] | None = None
    """Each C-FIND's deadline; ``query.default_deadline_ms`` when absent."""
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 300.0
    """An association with no message for this long is aborted."""
    artim_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """A caller silent this long after connecting, or after asking release, is dropped (ARTIM, PS3.8 9.1.5)."""
    max_associations: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Associations at once; one more is rejected (A-ASSOCIATE-RJ, transient, local limit)."""

    def callers(self) -> dict[str, DicomCallerSettings]:
        """Every allowed calling AE with what it may do."""
        if isinstance(self.allowed_calling_aes, list):
            return {ae: DicomCallerSettings() for ae in self.allowed_calling_aes}
        return dict(self.allowed_calling_aes)

    @model_validator(mode="after")
    def _tls_pair(self) -> DicomFacadeSettings:
        if self.tls is not None and self.tls.cert_file is None:
            raise ValueError("tls needs cert_file and key_file (the facade's own certificate)")
        return self


class IdentitySettings(_Strict):
    """Patient identity across hospitals."""

    national_issuer: str | None = None
    """The issuer of the national number (e.g. NISS); needed for ``{nationalId}`` queries."""
    issuer_systems: dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(pattern=r"^\S+$")]] = {}
    """FHIR identifier systems of pacsfed issuers (``HOSP_A: "urn:oid:1.2.3"``), for the FHIR view."""

    @field_validator("issuer_systems")
    @classmethod
    def _one_issuer_per_system(cls, value: dict[str, str]) -> dict[str, str]:
        if len(set(value.values())) != len(value):
            raise ValueError("two issuers have the same FHIR system")
        return value


class _EnvOverFile(BaseSettings):
    """Settings read from the environment first, then the YAML file (passed as init values)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first, then the YAML file (passed as init values): env overrides the file.
        return (env_settings, init_settings)


class Settings(_EnvOverFile):
    """Everything pacsfed is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="PACSFED_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    cache: CacheSettings = CacheSettings()
    connectors: ConnectorsSettings = ConnectorsSettings()
    """Validated before ``sources``, whose kinds it limits."""
    sources: list[SerializeAsAny[SourceSettings]] = []
    """Each validated by its kind's own model, found through the ``pacsfed.connectors`` entry points."""
    server: ServerSettings = ServerSettings()
    query: QuerySettings = QuerySettings()
    reports: ReportSettings = ReportSettings()
    identity: IdentitySettings = IdentitySettings()
    auth: AuthSettings = AuthSettings()
    audit: AuditSettings = AuditSettings()
    share: ShareSettings = ShareSettings()
    dicom_facade: DicomFacadeSettings | None = None
    logging: LoggingSettings = LoggingSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @field_validator("sources", mode="plain")
    @classmethod
    def _sources_by_kind(cls, value: Any, info: ValidationInfo) -> list[SourceSettings]:
        connectors = info.data.get("connectors")
        allow = connectors.allow if isinstance(connectors, ConnectorsSettings) else None
        return validate_sources(value, source_settings_models(allow), allow)

    @model_validator(mode="after")
    def _unique_source_ids(self) -> Settings:
        seen: set[str] = set()
        for source in self.sources:
            if source.id in seen:
                raise ValueError(f"source id {source.id!r} is used twice")
            seen.add(source.id)
        return self


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    return data


def _describe(error: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid configuration"]
    for item in error.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {key}: {item['msg']}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from ``path`` (YAML) and the environment; raise ConfigError if invalid."""
    data: dict[str, Any] = _read_yaml(Path(path)) if path is not None else {}
    data.update(overrides)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path) if path else "configuration")) from exc


class _ConnectorsOnly(_EnvOverFile):
    """The ``connectors`` section alone, from the file and the environment (other keys ignored)."""

    model_config = SettingsConfigDict(env_prefix="PACSFED_", env_nested_delimiter="__", extra="ignore")

    connectors: ConnectorsSettings = ConnectorsSettings()


def load_connectors_settings(path: str | os.PathLike[str] | None = None) -> ConnectorsSettings:
    """Only the ``connectors`` section of a configuration, without loading any connector (``connectors list``)."""
    data = _read_yaml(Path(path)) if path is not None else {}
    section = {"connectors": data["connectors"]} if "connectors" in data else {}
    try:
        return _ConnectorsOnly(**section).connectors
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path) if path else "configuration")) from exc


def settings_from_mapping(data: dict[str, Any]) -> Settings:
    """Build settings from an in-memory mapping (tests, the demo); raise ConfigError if invalid."""
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "configuration")) from exc
