"""JSON log lines: one event per line, tagged with the request being served; a foreign root logger left alone."""

from __future__ import annotations

import json
import logging

from starlette.types import Message

from web.log_format import JsonFormatter, configure_logging
from web.request_id import RequestIdMiddleware


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "federation.engine.engine", logging.WARNING, __file__, 1, message, args, exc_info
    )


async def test_a_line_logged_while_serving_a_request_is_one_json_event_with_its_id() -> None:
    lines: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        try:
            raise ValueError("first line\nsecond line")
        except ValueError as exc:
            lines.append(JsonFormatter().format(_record("source %s: %s", "hosp-a", "failed", exc=exc)))

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        return None

    scope = {"type": "http", "headers": [(b"x-request-id", b"ehr-42")]}
    await RequestIdMiddleware(app)(scope, receive, send)
    lines.append(JsonFormatter().format(_record("outside any request")))
    assert all("\n" not in line for line in lines)
    during, outside = (json.loads(line) for line in lines)
    assert during["request_id"] == "ehr-42" and during["message"] == "source hosp-a: failed"
    assert during["level"] == "WARNING" and during["logger"] == "federation.engine.engine"
    assert "second line" in during["exception"]
    assert "request_id" not in outside


def test_configure_logging_leaves_a_root_logger_someone_else_set_up_alone() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_logging("ERROR", "json")  # the test session's capture is on the root logger
    assert (list(root.handlers), root.level) == before
