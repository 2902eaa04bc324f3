"""The short way for plain fields gives graphql-core's own data and errors, and is taken."""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from types import SimpleNamespace
from typing import Any

import graphene
from graphql import ExecutionContext, ExecutionResult, execute, parse
from pydantic import BaseModel, ConfigDict

from federation.engine.engine import HistoryUpdate, Phase
from federation.engine.resilience import CircuitState
from federation.models import (
    Exam,
    ExamLocation,
    PatientHistory,
    SourceInfo,
    SourceOutcome,
    SourceStatus,
)
from schema.execution import FastExecutionContext, is_awaitable, sharing_memo
from schema.query import build_schema


class Colour(enum.Enum):
    RED = "RED"
    BLUE = "BLUE"


class Thing(graphene.ObjectType):
    name = graphene.String(required=True)
    nick = graphene.String()
    count = graphene.Int()
    tags = graphene.List(graphene.NonNull(graphene.String), required=True)
    when = graphene.Date()
    colour = graphene.Field(graphene.Enum.from_enum(Colour))
    child = graphene.Field(lambda: Thing)
    must = graphene.Field(lambda: Thing, required=True)
    later = graphene.String()
    greet = graphene.String(who=graphene.String())

    @staticmethod
    async def resolve_later(root: Any, _info: Any) -> str:
        await asyncio.sleep(0)
        return f"later {root.name}"

    @staticmethod
    def resolve_greet(root: Any, _info: Any, who: str = "you") -> str:
        return f"{root.name} greets {who}"


class Model(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str | None
    tags: tuple[str, ...] = ()
    must: Model | None = None


GOOD = Model(name="g", must=Model(name="m", must=Model(name="n")))
BAD = Model(name=None, must=GOOD)  # null for a non-null String


class Query(graphene.ObjectType):
    things = graphene.List(Thing)
    fine = graphene.Field(Thing)
    models = graphene.List(Thing)
    strict_models = graphene.List(graphene.NonNull(Thing))

    @staticmethod
    def resolve_models(_root: Any, _info: Any) -> list[Model]:
        return [GOOD, BAD, GOOD]

    @staticmethod
    def resolve_strict_models(_root: Any, _info: Any) -> list[Model]:
        return [GOOD, BAD]

    @staticmethod
    def resolve_fine(_root: Any, _info: Any) -> Any:
        return {"name": "fine", "tags": [], "must": {"name": "m", "tags": []}, "child": _coroutine_thing()}

    @staticmethod
    def resolve_things(_root: Any, _info: Any) -> list[Any]:
        leaf = {"name": "leaf", "tags": ["a"], "must": None, "count": 3}
        good = SimpleNamespace(
            name="good",
            nick=None,
            count=2,
            tags=("x", "y"),
            when=dt.date(2024, 1, 5),
            colour=Colour.BLUE,
            child=leaf,
            must=SimpleNamespace(name="m", tags=[], must=None),
        )
        return [
            good,
            SimpleNamespace(name=None, tags=[], must=good),  # null for a non-null String
            SimpleNamespace(name="n", count="many", tags=["a", None], must=good),  # refused Int, null item
            SimpleNamespace(name="o", tags=["t"], colour="GREEN", must=good),
            SimpleNamespace(name="p", tags="not a list", must=good),
        ]


async def _coroutine_thing() -> Any:
    return SimpleNamespace(name="awaited", tags=["t"], must=SimpleNamespace(name="m", tags=[]))


DOCUMENT = """{ models { name tags must { name } } strictModels { name } fine { name later child { name later must { name } } }
  things {
  name nick count tags when colour greet(who: "me") alias: name __typename
  child { name count tags must { name } ...F }
  must { name tags child { name } must { name } }
  ... @skip(if: true) { nick }
} }
fragment F on Thing { colour when nick }"""


def _run(
    context: type[ExecutionContext], schema: graphene.Schema, source: str, root: Any = None
) -> ExecutionResult:
    result = execute(
        schema.graphql_schema,
        parse(source),
        root_value=root,
        is_awaitable=is_awaitable,
        execution_context_class=context,
    )
    return asyncio.run(_awaited(result))


async def _awaited(result: Any) -> ExecutionResult:
    done = await result if is_awaitable(result) else result
    assert isinstance(done, ExecutionResult)
    return done


def test_the_short_way_gives_graphql_cores_data_and_errors() -> None:
    schema = graphene.Schema(query=Query)
    fast = _run(FastExecutionContext, schema, DOCUMENT)
    slow = _run(ExecutionContext, schema, DOCUMENT)
    assert slow.errors  # the document meets every kind of field error
    assert fast.data == slow.data
    assert [e.formatted for e in fast.errors or []] == [e.formatted for e in slow.errors]


def _event(n_sources: int) -> HistoryUpdate:
    sources = [SourceInfo(id=f"src-{i}", name=f"S {i}", kind="dicomweb") for i in range(n_sources)]
    exams = tuple(
        Exam(
            study_instance_uid=f"1.2.{e}",
            study_date=dt.date(2024, 1, e + 1),
            modalities=("CT", "SR"),
            description=None,
            locations=tuple(ExamLocation(source=s, patient_id="P", retrieve_url=None) for s in sources),
        )
        for e in range(3)
    )
    outcomes = tuple(
        SourceOutcome(source=s, status=SourceStatus.OK, latency_ms=i, exam_count=3, warnings=("w",))
        for i, s in enumerate(sources)
    )
    history = PatientHistory(complete=True, exams=exams, sources=outcomes, warnings=())
    return HistoryUpdate(Phase.SOURCE, sources[-1], history, tuple(sources))


EVENT_SELECTION = """subscription { patientHistoryUpdates(patient: {id: "P"}) { phase
  source { id } answeredSources { id name kind }
  history { complete cacheStatus elapsedMs warnings
    exams { studyInstanceUid studyDate studyTime modalities description reportAvailability cachedAt
      locations { source { id name } patientId retrieveUrl matchedBy { kind } } }
    sources { source { id } status latencyMs examCount error warnings cached cachedAt staleCachedAt } } } }"""


def test_a_history_event_reads_the_same_the_short_way() -> None:
    schema = build_schema()
    event = _event(20)
    fast = _run(FastExecutionContext, schema, EVENT_SELECTION, event)
    slow = _run(ExecutionContext, schema, EVENT_SELECTION, event)
    assert slow.errors is None
    assert fast.errors is None
    assert fast.data == slow.data


def test_plain_fields_skip_graphql_cores_field_execution() -> None:
    calls: list[str] = []

    class Counting(FastExecutionContext):
        def execute_field(self, parent_type: Any, source: Any, field_nodes: Any, path: Any) -> Any:
            calls.append(field_nodes[0].name.value)
            return super().execute_field(parent_type, source, field_nodes, path)

    _run(Counting, build_schema(), EVENT_SELECTION, _event(20))
    # Only the fields with resolvers of their own go the long way: never a scalar, an enum, an
    # object or a list of them, so the count does not grow with the history.
    assert sorted(calls) == ["answeredSources", "patientHistoryUpdates"]


def test_one_operations_events_share_what_they_completed_and_nothing_live() -> None:
    schema = build_schema()
    first, second = _event(20), _event(21)  # new objects: every location and status differs
    again = HistoryUpdate(Phase.FINAL, None, first.history)  # the same objects again
    now = {"circuit": CircuitState.CLOSED}
    engine = SimpleNamespace(circuit_state=lambda _source_id: now["circuit"])
    document = parse(EVENT_SELECTION.replace("sources { source { id }", "sources { source { id circuit }"))

    def run(context: type[ExecutionContext], event: HistoryUpdate) -> dict[str, Any]:
        result = execute(
            schema.graphql_schema,
            document,
            root_value=event,
            context_value={"engine": engine},
            is_awaitable=is_awaitable,
            execution_context_class=context,
        )
        assert isinstance(result, ExecutionResult) and result.errors is None
        assert result.data is not None
        return result.data["patientHistoryUpdates"]["history"]  # type: ignore[no-any-return]

    context_class = sharing_memo()
    shared, alone = [], []
    for event in (first, second, again):
        if event is again:
            now["circuit"] = CircuitState.OPEN
        shared.append(run(context_class, event))
        alone.append(run(FastExecutionContext, event))
    assert shared == alone
    # Live state (a resolver of its own) is read at every event: the statuses holding it are
    # completed again; an unchanged location is not (the same dict), a new one is.
    assert {s["source"]["circuit"] for s in shared[2]["sources"]} == {"OPEN"}
    assert shared[2]["exams"][0]["locations"][0] is shared[0]["exams"][0]["locations"][0]
    assert shared[1]["exams"][0]["locations"][0] is not shared[0]["exams"][0]["locations"][0]
