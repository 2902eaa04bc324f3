"""The GraphQL root: thin resolvers that call the federation engine."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import graphene

from federation.engine import FederationEngine
from federation.engine import HistoryUpdate as HistoryUpdateModel
from federation.errors import CacheError, QueryError
from federation.identity import make_link
from federation.models import Freshness as FreshnessModel
from federation.models import PatientHistory as PatientHistoryModel
from federation.models import PatientQuery, SourceInfo
from schema.types import Freshness, HistoryUpdate, IdentityLinkInput, PatientHistory, PatientInput, Source


def engine_of(info: Any) -> FederationEngine:
    """The engine carried in the request context."""
    engine: FederationEngine = info.context["engine"]
    return engine


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
    }


def history_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The engine's keyword arguments for the shared history arguments."""
    freshness = arguments.get("freshness", FreshnessModel.CACHE_THEN_REFRESH)
    return {
        "deadline_ms": arguments.get("deadline_ms"),
        "source_ids": arguments.get("sources"),
        "include_candidates": arguments.get("include_candidates", False),
        "freshness": FreshnessModel(getattr(freshness, "value", freshness)),
    }


class Query(graphene.ObjectType):
    """Read-only queries over the federation."""

    sources = graphene.List(graphene.NonNull(Source), required=True, description="Configured sources.")
    patient_history = graphene.Field(
        PatientHistory,
        required=True,
        description="Every exam of one patient across the connected hospitals.",
        **history_arguments(),
    )

    @staticmethod
    def resolve_sources(_root: Any, info: Any) -> list[SourceInfo]:
        return engine_of(info).sources

    @staticmethod
    async def resolve_patient_history(
        _root: Any, info: Any, patient: Any, **arguments: Any
    ) -> PatientHistoryModel:
        return await engine_of(info).patient_history(patient_query(patient), **history_options(arguments))


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
        store = engine_of(info).identity_store
        if store is None:
            raise QueryError("no identity store is configured", code="IDENTITY_UNAVAILABLE")
        request = info.context.get("request")
        client = request.client.host if request is not None and request.client else "unknown"
        now = dt.datetime.now(dt.UTC)
        added_by = f"graphql@{client}"
        parsed = [make_link(x["person"], x["issuer"], x["patient_id"], added_by, now) for x in links]
        try:
            added = await store.add_links(parsed)
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
            purged = await engine_of(info).purge_cache(patient_query(patient), source)
        except CacheError as exc:
            raise QueryError("the cache is unavailable", code="CACHE_UNAVAILABLE") from exc
        return PurgeCache(purged=purged)


class Mutation(graphene.ObjectType):
    """Administrative changes."""

    add_identity_links = AddIdentityLinks.Field()
    purge_cache = PurgeCache.Field()


class Subscription(graphene.ObjectType):
    """Progressive answers, served over WebSocket (graphql-transport-ws) at /graphql."""

    patient_history_updates = graphene.Field(
        HistoryUpdate,
        required=True,
        description="The cached history at once (CACHE), then one event per source (SOURCE), then FINAL.",
        **history_arguments(),
    )

    @staticmethod
    async def subscribe_patient_history_updates(
        _root: Any, info: Any, patient: Any, **arguments: Any
    ) -> AsyncIterator[HistoryUpdateModel]:
        updates = engine_of(info).stream_history(patient_query(patient), **history_options(arguments))
        async for update in updates:
            yield update


def build_schema() -> graphene.Schema:
    """The pacsfed GraphQL schema."""
    return graphene.Schema(query=Query, mutation=Mutation, subscription=Subscription, auto_camelcase=True)
