"""Settings of what pacsfed tells its operators: the log format and OpenTelemetry traces."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["LoggingSettings", "TelemetrySettings"]


class LoggingSettings(BaseModel):
    """How log lines are written (``pacsfed --log-format`` overrides ``format``)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["text", "json"] = "text"
    """``json``: one JSON object per line (time, level, logger, message, request_id); never patient data."""


class TelemetrySettings(BaseModel):
    """OpenTelemetry spans around each request to a source (needs ``pip install 'pacsfed[telemetry]'``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    """Off: OpenTelemetry is not even imported, and the engine's hot path pays nothing."""
    exporter: Literal["otlp", "console", "none"] = "otlp"
    """``otlp`` (OTLP over HTTP; needs opentelemetry-exporter-otlp-proto-http), ``console`` (stdout),
    ``none``: the process's global tracer provider (as ``opentelemetry-instrument`` sets it up)."""
    endpoint: str | None = Field(default=None, min_length=1)
    """The OTLP traces endpoint (default: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or the exporter's own)."""
    service_name: str = Field(default="pacsfed", min_length=1)
