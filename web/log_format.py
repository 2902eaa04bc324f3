"""Log lines as one JSON object each (``logging: {format: json}``), tagged with the request being served.

An event holds the time (UTC, ISO 8601), level, logger, message, process id, the request id when
the line was logged while serving a request, and a formatted exception if there was one. It holds
what the message holds and nothing more: pacsfed's messages carry no patient data (the session-wide
log hygiene test reads every line of the test session through this formatter).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from web.request_id import current_request_id

__all__ = ["LOG_FORMATS", "TEXT_FORMAT", "JsonFormatter", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON event."""
        event: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = current_request_id()
        if request_id is not None:
            event["request_id"] = request_id
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            event["exception"] = record.exc_text
        return json.dumps(event, ensure_ascii=False, default=str)


class _OwnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` puts on the root logger (told apart from others')."""


def configure_logging(level: str, log_format: str) -> None:
    """Log to stderr in ``log_format`` (``text`` or ``json``) at ``level``; a second call changes the format.

    Like :func:`logging.basicConfig`, it leaves a root logger configured by someone else alone
    (pacsfed embedded in another program, or a test session's capture).
    """
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    root = logging.getLogger()
    own = [handler for handler in root.handlers if isinstance(handler, _OwnHandler)]
    if root.handlers and not own:
        return
    if not own:
        own = [_OwnHandler(sys.stderr)]
        root.addHandler(own[0])
    for handler in own:
        handler.setFormatter(formatter)
    root.setLevel(level)
