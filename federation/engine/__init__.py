"""The engine: planning, fan-out, request sharing, write-through, progressive state and circuit breakers."""

from federation.engine._guard import SourceCall
from federation.engine.engine import FederationEngine, HistoryUpdate, Phase
from federation.engine.observe import EngineObserver
from federation.engine.request import HistoryRequest
from federation.engine.resilience import CircuitBreaker, CircuitState
from federation.engine.write_through import WriteThrough

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "EngineObserver",
    "FederationEngine",
    "HistoryRequest",
    "HistoryUpdate",
    "Phase",
    "SourceCall",
    "WriteThrough",
]
