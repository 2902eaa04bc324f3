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

__all__ = ["SPAN_NAME", "SourceTracing", "source_tracing"]

SPAN_NAME = "source query"
_INSTALL = "pip install 'pacsfed[telemetry]'"


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


def source_tracing(settings: TelemetrySettings) -> SourceTracing | None:
    """The tracing ``settings`` ask for; None when disabled (OpenTelemetry is then never imported)."""
    if not settings.enabled:
        return None
    try:
        trace = importlib.import_module("opentelemetry.trace")
    except ImportError as exc:
        raise ConfigError(f"telemetry.enabled needs OpenTelemetry: {_INSTALL}") from exc
    if settings.exporter == "none":
        return SourceTracing(trace.get_tracer("pacsfed"))
    provider = _provider(settings)
    return SourceTracing(provider.get_tracer("pacsfed"), provider)


def _provider(settings: TelemetrySettings) -> Any:
    """An SDK tracer provider exporting in batches to the configured exporter."""
    try:
        sdk = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        resources = importlib.import_module("opentelemetry.sdk.resources")
    except ImportError as exc:
        raise ConfigError(
            f"telemetry.exporter {settings.exporter} needs the OpenTelemetry SDK: {_INSTALL}"
        ) from exc
    if settings.exporter == "console":
        exporter = export.ConsoleSpanExporter()
    else:
        try:
            otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
        except ImportError as exc:
            raise ConfigError(
                "telemetry.exporter otlp needs pip install opentelemetry-exporter-otlp-proto-http"
            ) from exc
        exporter = otlp.OTLPSpanExporter(**({"endpoint": settings.endpoint} if settings.endpoint else {}))
    provider = sdk.TracerProvider(resource=resources.Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(export.BatchSpanProcessor(exporter))
    return provider
