"""OpenTelemetry spans around each request to a source, when ``telemetry: {enabled: true}``.

Disabled (the default), nothing here imports OpenTelemetry and the engine gets no span opener: its
hot path pays nothing. Enabled, a span ``source query`` (kind CLIENT, attribute ``pacsfed.source.id``;
never patient data) wraps each query sent to a source, as a child of whatever span is current
(none of pacsfed's own). The exporter is optional: ``otlp`` needs
``opentelemetry-exporter-otlp-proto-http``; ``none`` leaves the spans to the global provider.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from federation.engine.observe import SourceSpan
from federation.errors import ConfigError
from federation.settings_observability import TelemetrySettings

__all__ = ["SPAN_NAME", "SourceTracing", "check_tracing", "source_tracing"]

SPAN_NAME = "source query"


class SourceTracing:
    """The span opener the engine calls for each source request, and the provider to flush at exit."""

    def __init__(self, tracer: Any, provider: Any | None = None) -> None:
        self._tracer = tracer
        self._provider = provider
        self._client = importlib.import_module("opentelemetry.trace").SpanKind.CLIENT

    def span(self, source_id: str) -> contextlib.AbstractContextManager[object]:
        """A span around one request to ``source_id`` (exceptions recorded, status ERROR)."""
        return self._tracer.start_as_current_span(  # type: ignore[no-any-return]
            SPAN_NAME, kind=self._client, attributes={"pacsfed.source.id": source_id}
        )

    @property
    def opener(self) -> SourceSpan:
        """:meth:`span`, as :attr:`federation.engine.EngineObserver.source_span` takes it."""
        return self.span

    def shutdown(self) -> None:
        """Export what is buffered and stop (only the provider made here; a global one is not ours)."""
        if self._provider is not None:
            self._provider.shutdown()


def check_tracing(settings: TelemetrySettings) -> None:
    """ConfigError now (exit 2) when enabled tracing lacks its libraries; nothing is started."""
    _modules(settings)


def source_tracing(settings: TelemetrySettings) -> SourceTracing | None:
    """The tracing ``settings`` ask for, its exporter started; None when disabled (nothing imported)."""
    modules = _modules(settings)
    if modules is None:
        return None
    if settings.exporter == "none":
        return SourceTracing(modules["trace"].get_tracer("pacsfed"))
    export = modules["export"]
    if settings.exporter == "console":
        exporter = export.ConsoleSpanExporter()
    else:
        options = {"endpoint": settings.endpoint} if settings.endpoint else {}
        exporter = modules["otlp"].OTLPSpanExporter(**options)
    resource = modules["resources"].Resource.create({"service.name": settings.service_name})
    provider = modules["sdk"].TracerProvider(resource=resource)
    provider.add_span_processor(export.BatchSpanProcessor(exporter))
    return SourceTracing(provider.get_tracer("pacsfed"), provider)


def _modules(settings: TelemetrySettings) -> dict[str, Any] | None:
    """The OpenTelemetry modules ``settings`` need (None when disabled); ConfigError when one is missing."""
    if not settings.enabled:
        return None
    needed = {"trace": "opentelemetry.trace"}
    if settings.exporter != "none":
        needed |= {
            "sdk": "opentelemetry.sdk.trace",
            "export": "opentelemetry.sdk.trace.export",
            "resources": "opentelemetry.sdk.resources",
        }
    if settings.exporter == "otlp":
        needed["otlp"] = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    modules: dict[str, Any] = {}
    for key, name in needed.items():
        try:
            modules[key] = importlib.import_module(name)
        except ImportError as exc:
            extra = "opentelemetry-exporter-otlp-proto-http" if key == "otlp" else "'pacsfed[telemetry]'"
            raise ConfigError(
                f"telemetry (exporter {settings.exporter}) needs {name}: pip install {extra}"
            ) from exc
    return modules
