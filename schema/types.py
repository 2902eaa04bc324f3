"""GraphQL object types: thin views over the engine's normalized models (snake_case fields become camelCase)."""

from __future__ import annotations

import io
from typing import Any

import graphene
import segno

from federation.engine.engine import Phase as PhaseModel
from federation.engine.resilience import CircuitState as CircuitStateModel
from federation.models import CacheStatus as CacheStatusModel
from federation.models import Freshness as FreshnessModel
from federation.models import MatchKind as MatchKindModel
from federation.models import SourceStatus as SourceStatusModel
from schema.enums import ActorKind, AuditAction, AuditOutcome, CandidateReason
from schema.reports import Report, ReportAvailability, resolve_exam_report

SourceStatus = graphene.Enum.from_enum(
    SourceStatusModel,
    description="How one source's part of a query ended: OK, TIMEOUT, UNREACHABLE or ERROR; BUSY (pacsfed's own"
    " limit, never the hospital's), or not asked (NO_IDENTIFIER, SKIPPED, NOT_CACHED, UNSUPPORTED).",
)
CacheStatus = graphene.Enum.from_enum(
    CacheStatusModel, description="Whether this answer reached the exam cache."
)


Freshness = graphene.Enum.from_enum(
    FreshnessModel,
    description="CACHE_ONLY: no source is asked; CACHE_THEN_REFRESH: fresh cached answers at once, refreshed"
    " in the background; LIVE: every source is asked now.",
)
CircuitState = graphene.Enum.from_enum(
    CircuitStateModel, description="CLOSED (asked), OPEN (skipped after failures) or HALF_OPEN (probing)."
)


class Source(graphene.ObjectType):
    """A configured hospital PACS."""

    id = graphene.ID(required=True)
    name = graphene.String(required=True)
    kind = graphene.String(required=True, description="Protocol: dimse or dicomweb.")
    circuit = graphene.Field(CircuitState, required=True, description="The source's circuit breaker now.")

    @staticmethod
    def resolve_circuit(root: Any, info: Any) -> Any:
        return info.context["engine"].circuit_state(root.id)


MatchKind = graphene.Enum.from_enum(
    MatchKindModel, description="LOCAL_ID, NATIONAL_ID, XREF (a cross-referenced ID) or DEMOGRAPHICS."
)


class MatchedBy(graphene.ObjectType):
    """The identifier a location was found with."""

    kind = graphene.Field(MatchKind, required=True)
    issuer = graphene.String()
    value = graphene.String()


class ExamLocation(graphene.ObjectType):
    """One source holding the exam, and how to fetch it there."""

    source = graphene.Field(Source, required=True)
    patient_id = graphene.String(description="The PatientID under which this source holds the exam.")
    issuer_of_patient_id = graphene.String()
    accession_number = graphene.String()
    retrieve_url = graphene.String(description="DICOMweb RetrieveURL (0008,1190), when the source gives one.")
    retrieve_ae_title = graphene.String(description="RetrieveAETitle (0008,0054) for C-MOVE/C-GET.")
    matched_by = graphene.Field(MatchedBy, description="Which identifier found the exam at this source.")
    cached_at = graphene.DateTime(
        description="Set when this location came from the cache: when the source said so."
    )
    viewer_url = graphene.String(
        description="This exam in the source's viewer (its viewer_url template); null without one."
    )
    patient_name = graphene.String(
        description="The patient as this source records them (DICOM PN, decoded: Family^Given^Middle^Prefix^Suffix);"
        " the exam's patientName is only the first source's."
    )
    patient_birth_date = graphene.Date(description="The birth date this source records.")
    patient_sex = graphene.String(description="The sex this source records (M, F, O), as it gives it.")


class PersonNameGroups(graphene.ObjectType):
    """A person name's three component groups (PS3.5 6.2.1.1), each Family^Given^Middle^Prefix^Suffix."""

    alphabetic = graphene.String(description="Latin letters (or the name's only script).")
    ideographic = graphene.String(description="Kanji, hanzi or hanja.")
    phonetic = graphene.String(description="Hiragana, katakana or hangul: how the name is read.")


class Exam(graphene.ObjectType):
    """One study, merged across every source that holds it."""

    study_instance_uid = graphene.ID(required=True)
    study_date = graphene.Date(description="ISO 8601 date, e.g. 2024-01-05.")
    study_time = graphene.Time()
    modalities = graphene.List(graphene.NonNull(graphene.String), required=True)
    description = graphene.String()
    accession_number = graphene.String()
    patient_name = graphene.String(description="DICOM PN, decoded: Family^Given^Middle^Prefix^Suffix.")
    patient_name_groups = graphene.Field(
        PersonNameGroups, description="The name in every script it was given in."
    )
    patient_birth_date = graphene.Date()
    patient_sex = graphene.String()
    referring_physician_name = graphene.String()
    number_of_series = graphene.Int()
    number_of_instances = graphene.Int()
    locations = graphene.List(graphene.NonNull(ExamLocation), required=True)
    report_availability = graphene.Field(
        ReportAvailability,
        required=True,
        description="The report's likely status, known without reading it (no source asked, nothing audited).",
    )
    cached_at = graphene.DateTime(
        description="Set when every location came from the cache (older answers): the newest of their times."
    )
    report = graphene.Field(
        Report,
        resolver=resolve_exam_report,
        deadline_ms=graphene.Int(description="The report's own deadline (default: reports.deadline_ms)."),
        description="The exam's report, read from its sources only when selected (authorized and audited).",
    )


class SourceOutcome(graphene.ObjectType):
    """One queried source's status: partial answers are explicit."""

    source = graphene.Field(Source, required=True)
    status = graphene.Field(SourceStatus, required=True)
    latency_ms = graphene.Int(required=True)
    exam_count = graphene.Int(required=True)
    error = graphene.String(description="Why the source failed; never holds patient data.")
    warnings = graphene.List(graphene.NonNull(graphene.String), required=True)
    cached = graphene.Boolean(required=True, description="Answered from the cache, not live.")
    cached_at = graphene.DateTime(description="When the source gave the cached answer.")
    stale_cached_at = graphene.DateTime(
        description="The source gave no answer now (see status): its exams are its older cached answer, of this time."
    )


class Candidate(graphene.ObjectType):
    """Another patient record that may be the same person: never merged into the exams."""

    score = graphene.Float(required=True, description="0 to 1; deterministic.")
    reasons = graphene.List(graphene.NonNull(CandidateReason), required=True)
    source = graphene.Field(Source, required=True)
    patient_id = graphene.String()
    issuer_of_patient_id = graphene.String()
    patient_name = graphene.String()
    patient_name_groups = graphene.Field(
        PersonNameGroups, description="The name in every script it was given in."
    )
    birth_date = graphene.Date()
    sex = graphene.String()
    exams = graphene.List(graphene.NonNull(Exam), required=True)


class PatientHistory(graphene.ObjectType):
    """The merged exam history of one patient across the queried sources."""

    complete = graphene.Boolean(required=True, description="Every queried source answered in time.")
    exams = graphene.List(graphene.NonNull(Exam), required=True, description="Newest first.")
    sources = graphene.List(graphene.NonNull(SourceOutcome), required=True)
    candidates = graphene.List(
        graphene.NonNull(Candidate),
        required=True,
        description="Best score first; only with includeCandidates.",
    )
    warnings = graphene.List(graphene.NonNull(graphene.String), required=True)
    cache_status = graphene.Field(CacheStatus, required=True)
    cache_error = graphene.String()
    elapsed_ms = graphene.Int(required=True)


class PatientInput(graphene.InputObjectType):
    """Which patient: exactly one of {id, issuer}, {nationalId}, or {familyName, givenName, birthDate, sex}."""

    id = graphene.String(description="PatientID (0010,0020); matched exactly, wildcards refused.")
    issuer = graphene.String(description="IssuerOfPatientID (0010,0021) of that ID.")
    national_id = graphene.String(description="The national number (issuer: identity.national_issuer).")
    family_name = graphene.String()
    given_name = graphene.String()
    birth_date = graphene.Date()
    sex = graphene.String(description="M, F or O.")


class IdentityLinkInput(graphene.InputObjectType):
    """One cross-reference row: this identifier belongs to ``person``."""

    person = graphene.String(required=True)
    issuer = graphene.String(required=True)
    patient_id = graphene.String(required=True)


Phase = graphene.Enum.from_enum(
    PhaseModel, description="CACHE: what the cache held; SOURCE: one source answered; FINAL: the last event."
)


class HistoryUpdate(graphene.ObjectType):
    """One step of a progressive patient history."""

    phase = graphene.Field(Phase, required=True)
    source = graphene.Field(
        Source, description="The source that just answered (SOURCE events); the last of answeredSources."
    )
    answered_sources = graphene.List(
        graphene.NonNull(Source),
        required=True,
        description="Every source this SOURCE event covers, in the order they answered: answers that came"
        " while the client was still reading the previous event are coalesced into one event. Empty for"
        " CACHE and FINAL.",
    )
    history = graphene.Field(
        PatientHistory,
        required=True,
        description="The merged history so far; with delta, a SOURCE event's exams are only those it added"
        " or changed (its sources stay complete).",
    )

    @staticmethod
    def resolve_answered_sources(root: Any, _info: Any) -> Any:
        return root.answered


class ShareCode(graphene.ObjectType):
    """A new share code: shown once, never stored in clear; give it by hand, never by e-mail."""

    code = graphene.String(required=True, description="At least 128 random bits; type it or scan it.")
    expires_at = graphene.DateTime(required=True, description="At most 24 hours after creation.")
    url_path = graphene.String(required=True, description="The page that redeems it: /s/{code}.")
    url = graphene.String(
        required=True, description="The same page as an absolute URL (as this server is reached)."
    )
    qr_svg = graphene.String(
        required=True, description="The URL as a QR code (SVG), to show on screen for a phone to scan."
    )
    single_use = graphene.Boolean(required=True)

    @staticmethod
    def resolve_qr_svg(root: Any, _info: Any) -> str:
        return qr_svg(root.url)


def qr_svg(text: str) -> str:
    """``text`` as a QR code in SVG (error correction M), computed only when asked for."""
    buffer = io.BytesIO()
    segno.make(text, error="m").save(buffer, kind="svg", scale=4, xmldecl=False, border=2)
    return buffer.getvalue().decode("ascii")


class RevokedShareCode(graphene.ObjectType):
    """A share code that no longer opens anything."""

    revoked = graphene.Boolean(required=True)
    revoked_at = graphene.DateTime()


class ShareToken(graphene.ObjectType):
    """A bearer token reading exactly one share code's scope, read-only."""

    token = graphene.String(required=True, description="Send as Authorization: Bearer <token>.")
    expires_at = graphene.DateTime(required=True)
    patient_id = graphene.String(description="The shared patient's id, to query patientHistory with.")
    issuer = graphene.String()
    national_id = graphene.String()
    studies = graphene.List(graphene.NonNull(graphene.ID), description="Only these studies, when set.")


class AuditEvent(graphene.ObjectType):
    """One audited access (for reviewers holding audit:read)."""

    id = graphene.ID(required=True)
    at = graphene.DateTime(required=True)
    actor = graphene.String(required=True)
    actor_kind = graphene.Field(ActorKind, required=True)
    action = graphene.Field(AuditAction, required=True)
    outcome = graphene.Field(AuditOutcome, required=True)
    patient_ids = graphene.List(graphene.NonNull(graphene.String), required=True)
    patient_ids_omitted = graphene.Int(required=True, description="Identifiers left out of patientIds.")
    sources = graphene.List(graphene.NonNull(graphene.String), required=True)
    sources_omitted = graphene.Int(required=True, description="Sources left out of sources.")
    suppressed = graphene.Int(
        required=True, description="Failures this summary stands for (flood control); 0 otherwise."
    )
    exam_count = graphene.Int()
    reason = graphene.String()
    emergency = graphene.Boolean(required=True, description="Break-the-glass access, to be reviewed.")
    client_address = graphene.String()
    request_id = graphene.String()
    channel = graphene.String(required=True)
    detail = graphene.String()


class AuditEventsPage(graphene.ObjectType):
    """One page of audit events, newest first, with the cursor to ask for the next one."""

    events = graphene.List(graphene.NonNull(AuditEvent), required=True)
    end_cursor = graphene.String(description="Pass as `after` for the next page (null when empty).")
    has_next_page = graphene.Boolean(required=True)
    partial = graphene.Boolean(
        required=True,
        description="True when the audit index could not be read: only this server's own journal was.",
    )
