"""A session-wide log capture, so that one test can search every log line for patient data."""

from __future__ import annotations

import logging
import threading

import pytest

LOG_HYGIENE_MARK = "log_hygiene"
_OWN_LOGGERS = ("pacsfed", "federation", "connectors", "schema", "web")


class SessionLogCapture(logging.Handler):
    """Formats and keeps every record that reaches the root logger (bounded)."""

    KEY = pytest.StashKey["SessionLogCapture"]()
    MAX_LINES = 2_000_000

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.records = 0
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    @classmethod
    def install(cls) -> SessionLogCapture:
        """Attach to the root logger; pacsfed's loggers at DEBUG, the rest (pynetdicom, httpx…) at INFO."""
        capture = cls()
        root = logging.getLogger()
        root.addHandler(capture)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        for name in _OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.DEBUG)
        return capture

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a broken record must not break the test that logged it
            line = f"{record.name} {record.levelname} <unformattable: {record.msg!r}>"
        with self._guard:
            self.records += 1
            if len(self.lines) < self.MAX_LINES:
                self.lines.append(line)
