"""The GraphQL root: thin resolvers that call the federation engine."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any, TypedDict, Unpack

import graphene

from federation.access.principals import AccessContext
from federation.audit.records import AuditRecord
from federation.engine.engine import FederationEngine
from federation.engine.engine import HistoryUpdate as HistoryUpdateModel
from federation.engine.request import HistoryRequest
from federation.errors import AuthenticationError, CacheError, QueryError
from federation.identity.resolver import make_link
from federation.models import Freshness as FreshnessModel
from federation.models import PatientHistory as PatientHistoryModel
from federation.models import PatientQuery, SourceInfo
from federation.reports import Report as ReportModel
from federation.service import AuditPage, HistoryService
from schema.reports import Report
from schema.types import (
    AuditEvent,
    AuditEventsPage,
    Freshness,
    HistoryUpdate,
    IdentityLinkInput,
    PatientHistory,
    PatientInput,
    RevokedShareCode,
    ShareCode,
    ShareToken,
    Source,
)
from web.public_url import public_base


def engine_of(info: Any) -> FederationEngine:
    """The engine carried in the request context."""
    engine: FederationEngine = info.context["engine"]
    return engine


def service_of(info: Any) -> HistoryService:
    """The guarded history service (authorization and audit around the engine)."""
    service: HistoryService = info.context["request"].app.state.services.history
    return service


def access_of(info: Any) -> AccessContext:
    """Who is asking: set by the HTTP or WebSocket front end after authentication."""
    access: AccessContext | None = info.context.get("access")
    if access is None:  # put in the connection's state by the authentication middleware
        access = getattr(info.context["request"].state, "access", None)
    if access is None:
        raise AuthenticationError("authentication required")
    return access


def patient_query(patient: Any) -> PatientQuery:
    """The engine's PatientQuery for a PatientInput, or a BAD_PATIENT_INPUT error."""
    return PatientQuery(
        patient_id=patient.get("id"),
        issuer=patient.get("issuer"),
        national_id=patient.get("national_id"),
        family_name=patient.get("family_name"),
        given_name=patient.get("given_name"),
        birth_date=patient.get("birth_date"),
        sex=patient.get("sex"),
    )


def history_arguments() -> dict[str, Any]:
    """The arguments patientHistory and patientHistoryUpdates share."""
    return {
        "patient": graphene.Argument(PatientInput, required=True),
        "deadline_ms": graphene.Int(description="Give up on slow sources after this many milliseconds."),
        "sources": graphene.List(graphene.NonNull(graphene.ID), description="Ask only these sources."),
        "include_candidates": graphene.Boolean(
            default_value=False, description="Also search by name and birth date; results go to candidates."
        ),
        "freshness": graphene.Argument(Freshness, default_value=FreshnessModel.CACHE_THEN_REFRESH),
        "reason": graphene.String(
            description="Why (break-the-glass): required when only history:emergency grants access."
        ),
    }


class HistoryArguments(TypedDict, total=False):
    """The shared history arguments as graphene passes them to a resolver (see :func:`history_arguments`)."""

    deadline_ms: int | None
    sources: list[str] | None
    include_candidates: bool | None
    freshness: FreshnessModel | str | None
    reason: str | None


def history_request(arguments: HistoryArguments) -> HistoryRequest:
    """The typed request for the shared history arguments."""
    freshness = arguments.get("freshness") or FreshnessModel.CACHE_THEN_REFRESH  # an explicit null too
    sources = arguments.get("sources")
    return HistoryRequest(
        deadline_ms=arguments.get("deadline_ms"),
        source_ids=tuple(sources) if sources is not None else None,
        include_candidates=bool(arguments.get("include_candidates")),
        freshness=FreshnessModel(getattr(freshness, "value", freshness)),
        reason=arguments.get("reason"),
    )


class Query(graphene.ObjectType):
    """Read-only queries over the federation."""

    sources = graphene.List(graphene.NonNull(Source), required=True, description="Configured sources.")
    patient_history = graphene.Field(
        PatientHistory,
        required=True,
        description="Every exam of one patient across the connected hospitals.",
        **history_arguments(),
    )

    exam_report = graphene.Field(
        Report,
        description="One exam's report (a page's 'open report'): only this exam's report is read and audited;"
        " null when the patient's history has no such exam.",
        study_instance_uid=graphene.ID(required=True),
        **history_arguments(),
    )

    audit_events = graphene.List(
        graphene.NonNull(AuditEvent),
        required=True,
        description="Audited accesses, newest first (audit:read); reading them is audited too.",
        patient_id=graphene.String(description="Only events naming this patient id (ID or ID^^^ISSUER)."),
        first=graphene.Int(default_value=50, description="At most this many (capped at 500)."),
    )
    audit_events_page = graphene.Field(
        AuditEventsPage,
        required=True,
        description="Audited accesses, newest first, a page at a time (audit:read); says when partial.",
        patient_id=graphene.String(description="Only events naming this patient id (ID or ID^^^ISSUER)."),
        first=graphene.Int(default_value=50, description="At most this many (capped at 500)."),
        after=graphene.String(description="The endCursor of the previous page."),
    )

    @staticmethod
    def resolve_sources(_root: Any, info: Any) -> list[SourceInfo]:
        sources = engine_of(info).sources
        allowed = access_of(info).principal.sources
        return sources if allowed is None else [s for s in sources if s.id in allowed]

    @staticmethod
    async def resolve_patient_history(
        _root: Any, info: Any, patient: Any, **arguments: Unpack[HistoryArguments]
    ) -> PatientHistoryModel:
        return await service_of(info).patient_history(
            patient_query(patient), access_of(info), history_request(arguments)
        )

    @staticmethod
    async def resolve_exam_report(
        _root: Any, info: Any, patient: Any, study_instance_uid: str, **arguments: Unpack[HistoryArguments]
    ) -> ReportModel | None:
        service, access = service_of(info), access_of(info)
        history = await service.patient_history(patient_query(patient), access, history_request(arguments))
        exam = next((e for e in history.exams if e.study_instance_uid == study_instance_uid), None)
        return None if exam is None else await service.exam_report(exam, access)

    @staticmethod
    async def resolve_audit_events(
        _root: Any, info: Any, patient_id: str | None = None, first: int | None = 50
    ) -> list[AuditRecord]:
        try:
            return await service_of(info).audit_events(access_of(info), patient_id, first)
        except CacheError as exc:
            raise QueryError("the audit index is unavailable", code="AUDIT_UNAVAILABLE") from exc

    @staticmethod
    async def resolve_audit_events_page(
        _root: Any, info: Any, patient_id: str | None = None, first: int | None = 50, after: str | None = None
    ) -> AuditPage:
        return await service_of(info).audit_events_page(access_of(info), patient_id, first, after)


class IdentityLinksResult(graphene.ObjectType):
    """What an identity import did."""

    added = graphene.Int(required=True)


class AddIdentityLinks(graphene.Mutation):
    """Add cross-reference links (admin): rows sharing a person are the same person."""

    class Arguments:
        links = graphene.List(graphene.NonNull(IdentityLinkInput), required=True)

    Output = IdentityLinksResult

    @staticmethod
    async def mutate(_root: Any, info: Any, links: list[Any]) -> IdentityLinksResult:
        access = access_of(info)
        now = dt.datetime.now(dt.UTC)
        added_by = f"{access.principal.subject}@{access.client_address or 'unknown'}"
        parsed = [make_link(x["person"], x["issuer"], x["patient_id"], added_by, now) for x in links]
        try:
            added = await service_of(info).add_identity_links(access, parsed)
        except CacheError as exc:
            raise QueryError("the identity store is unavailable", code="IDENTITY_UNAVAILABLE") from exc
        return IdentityLinksResult(added=added)


class PurgeCache(graphene.Mutation):
    """Forget the cached answers for a patient (of one source, or all): corrections, erasure requests."""

    class Arguments:
        patient = graphene.Argument(PatientInput, required=True)
        source = graphene.ID(description="Only this source's answer.")

    purged = graphene.Int(required=True, description="How many cached source answers were removed.")

    @staticmethod
    async def mutate(_root: Any, info: Any, patient: Any, source: str | None = None) -> PurgeCache:
        try:
            purged = await service_of(info).purge_cache(access_of(info), patient_query(patient), source)
        except CacheError as exc:
            raise QueryError("the cache is unavailable", code="CACHE_UNAVAILABLE") from exc
        return PurgeCache(purged=purged)


class CreateShareCode(graphene.Mutation):
    """A code giving read-only access to one patient's history (or chosen studies) for at most 24 h."""

    class Arguments:
        patient = graphene.Argument(PatientInput, required=True)
        studies = graphene.List(graphene.NonNull(graphene.ID), description="Only these StudyInstanceUIDs.")
        ttl_seconds = graphene.Int(description="Lifetime: 1 h when absent, capped at 24 h whatever is asked.")
        single_use = graphene.Boolean(default_value=False, description="Redeemable once only.")

    Output = ShareCode

    @staticmethod
    async def mutate(
        _root: Any,
        info: Any,
        patient: Any,
        studies: list[str] | None = None,
        ttl_seconds: int | None = None,
        single_use: bool = False,
    ) -> ShareCode:
        created = await service_of(info).create_share(
            access_of(info), patient_query(patient), studies, ttl_seconds, bool(single_use)
        )
        base = public_base(info.context["request"])
        return ShareCode(
            code=created.code,
            expires_at=created.record.expires_at,
            url_path=f"/s/{created.code}",
            url=f"{base}/s/{created.code}",
            single_use=created.record.single_use,
        )


class RevokeShareCode(graphene.Mutation):
    """Stop a share code (and every token redeemed from it) at once."""

    class Arguments:
        code = graphene.String(required=True)

    Output = RevokedShareCode

    @staticmethod
    async def mutate(_root: Any, info: Any, code: str) -> RevokedShareCode:
        record = await service_of(info).revoke_share(access_of(info), code)
        return RevokedShareCode(revoked=True, revoked_at=record.revoked_at)


class RedeemShareCode(graphene.Mutation):
    """Trade a share code for a read-only bearer token (no account needed; failures are rate-limited)."""

    class Arguments:
        code = graphene.String(required=True)

    Output = ShareToken

    @staticmethod
    async def mutate(_root: Any, info: Any, code: str) -> ShareToken:
        access = access_of(info)
        redeemed = await service_of(info).redeem_share(code, access.client_address, access)
        patient = redeemed.record.patient
        return ShareToken(
            token=redeemed.token,
            expires_at=redeemed.expires_at,
            patient_id=patient.patient_id,
            issuer=patient.issuer,
            national_id=patient.national_id,
            studies=list(redeemed.record.studies) if redeemed.record.studies is not None else None,
        )


class Mutation(graphene.ObjectType):
    """Changes: identity administration, cache purges, share codes."""

    add_identity_links = AddIdentityLinks.Field()
    purge_cache = PurgeCache.Field()
    create_share_code = CreateShareCode.Field()
    revoke_share_code = RevokeShareCode.Field()
    redeem_share_code = RedeemShareCode.Field()


class Subscription(graphene.ObjectType):
    """Progressive answers, served over WebSocket (graphql-transport-ws) at /graphql."""

    patient_history_updates = graphene.Field(
        HistoryUpdate,
        required=True,
        description="The cached history at once (CACHE), then an event as sources answer (SOURCE; those"
        " answering while the client still reads the previous event come as one), then FINAL.",
        **history_arguments(),
        delta=graphene.Boolean(
            default_value=False,
            description="SOURCE events carry only the exams they added or changed (CACHE and FINAL: all).",
        ),
    )

    @staticmethod
    async def subscribe_patient_history_updates(
        _root: Any,
        info: Any,
        patient: Any,
        delta: bool | None = False,
        **arguments: Unpack[HistoryArguments],
    ) -> AsyncIterator[HistoryUpdateModel]:
        updates = service_of(info).stream_history(
            patient_query(patient), access_of(info), history_request(arguments), delta=bool(delta)
        )
        async with contextlib.aclosing(updates):
            async for update in updates:
                yield update


def build_schema() -> graphene.Schema:
    """The pacsfed GraphQL schema."""
    return graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription, auto_camelcase=True)
