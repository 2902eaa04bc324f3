"""pacsfed's federation engine: normalized models, fan-out, merge, cache and settings."""

from federation.cache.base import CacheHealth, ExamCache, MemoryExamCache
from federation.engine.engine import FederationEngine, HistoryUpdate, Phase
from federation.errors import (
    CacheError,
    ConfigError,
    ConnectorError,
    PacsfedError,
    QueryError,
    SourceAuthError,
    SourceProtocolError,
    SourceTimeout,
    SourceUnreachable,
)
from federation.models import (
    CacheStatus,
    Deadline,
    Exam,
    ExamLocation,
    PatientHistory,
    PatientQuery,
    SourceInfo,
    SourceOutcome,
    SourceStatus,
    StudyRecord,
)
from federation.settings import Settings, load_settings, settings_from_mapping

__all__ = [
    "CacheError",
    "CacheHealth",
    "CacheStatus",
    "ConfigError",
    "ConnectorError",
    "Deadline",
    "Exam",
    "ExamCache",
    "ExamLocation",
    "FederationEngine",
    "HistoryUpdate",
    "MemoryExamCache",
    "PacsfedError",
    "PatientHistory",
    "PatientQuery",
    "Phase",
    "QueryError",
    "Settings",
    "SourceAuthError",
    "SourceInfo",
    "SourceOutcome",
    "SourceProtocolError",
    "SourceStatus",
    "SourceTimeout",
    "SourceUnreachable",
    "StudyRecord",
    "load_settings",
    "settings_from_mapping",
]
