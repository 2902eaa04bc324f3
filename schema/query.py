"""The GraphQL root: thin resolvers that call the federation engine."""

from __future__ import annotations

from typing import Any

import graphene

from federation.engine import FederationEngine
from federation.errors import QueryError
from federation.models import PatientHistory as PatientHistoryModel
from federation.models import PatientQuery, SourceInfo
from schema.types import PatientHistory, PatientInput, Source


def engine_of(info: Any) -> FederationEngine:
    """The engine carried in the request context."""
    engine: FederationEngine = info.context["engine"]
    return engine


def patient_query(patient: Any) -> PatientQuery:
    """The engine's PatientQuery for a PatientInput, or a BAD_PATIENT_INPUT error."""
    patient_id = getattr(patient, "id", None)
    if patient_id is None:
        raise QueryError("patient.id is required", code="BAD_PATIENT_INPUT")
    return PatientQuery(patient_id=patient_id, issuer=getattr(patient, "issuer", None))


class Query(graphene.ObjectType):
    """Read-only queries over the federation."""

    sources = graphene.List(graphene.NonNull(Source), required=True, description="Configured sources.")
    patient_history = graphene.Field(
        PatientHistory,
        required=True,
        patient=graphene.Argument(PatientInput, required=True),
        deadline_ms=graphene.Int(description="Give up on slow sources after this many milliseconds."),
        sources=graphene.List(graphene.NonNull(graphene.ID), description="Ask only these sources."),
        description="Every exam of one patient across the connected hospitals.",
    )

    @staticmethod
    def resolve_sources(_root: Any, info: Any) -> list[SourceInfo]:
        return engine_of(info).sources

    @staticmethod
    async def resolve_patient_history(
        _root: Any,
        info: Any,
        patient: Any,
        deadline_ms: int | None = None,
        sources: list[str] | None = None,
    ) -> PatientHistoryModel:
        return await engine_of(info).patient_history(
            patient_query(patient), deadline_ms=deadline_ms, source_ids=sources
        )


def build_schema() -> graphene.Schema:
    """The pacsfed GraphQL schema."""
    return graphene.Schema(query=Query, auto_camelcase=True)
