"""A session-wide log capture, so that one test can search every log line for patient data.

Under pytest-xdist each worker process captures its own lines and writes what it found to
``LOG_HYGIENE_DIR_ENV`` at its session's end; the controller fails the run on any leak or missing report.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import pytest

LOG_HYGIENE_MARK = "log_hygiene"
LOG_HYGIENE_DIR_ENV = "PACSFED_LOG_HYGIENE_DIR"
_SHOWN_LEAKS = 20
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


def patient_needles() -> set[str]:
    """Every seeded patient's identifiers, name parts, birth date and report text: none may be logged."""
    from peers.dicomdata import CATALOGUE  # imported when the check runs, not when conftest loads
    from peers.reportdata import AUTHOR, FINDING, PDF_TITLE, REPORT_PATIENT
    from peers.wadodata import WADO_PATIENT_ID, WADO_PATIENT_NAME

    from pacsfed.demo.patients import DEMO_PATIENTS

    needles: set[str] = set()
    needles.update((AUTHOR, FINDING, PDF_TITLE))  # what a report says is patient data too
    for patient in (*CATALOGUE.patients, REPORT_PATIENT):
        needles.add(patient.patient_id)
        needles.update(part for part in re.split(r"[\^=]", patient.name) if len(part) >= 4)
        needles.add(patient.birth_date)
    needles.add(WADO_PATIENT_ID)
    needles.update(part for part in re.split(r"[\^=]", WADO_PATIENT_NAME) if len(part) >= 4)
    for demo in DEMO_PATIENTS:
        needles.add(demo.patient_id)
        needles.update(part for part in re.split(r"[\^=]", demo.name) if len(part) >= 4)
        needles.add(demo.birth_date)
    return needles


def leaked_lines(lines: list[str]) -> list[str]:
    """The lines that name a seeded patient."""
    needles = patient_needles()
    pattern = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    return [line for line in lines if pattern.search(line)]


def write_worker_report(capture: SessionLogCapture, folder: Path, worker: str) -> None:
    """One worker's finding, for the controller: how many records it searched and the first leaks."""
    leaks = leaked_lines(capture.lines)
    report = {"records": capture.records, "leaks": len(leaks), "shown": leaks[:_SHOWN_LEAKS]}
    (folder / f"{worker}.json").write_text(json.dumps(report))


def read_worker_reports(folder: Path, workers: int) -> tuple[list[str], str]:
    """Every worker's leaks and a one-line summary; a missing report is a failure, never a pass."""
    reports = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    problems = [line for report in reports for line in report["shown"]]
    records = sum(report["records"] for report in reports)
    summary = f"log hygiene: {records} records of {len(reports)} workers searched for patient data"
    if len(reports) < workers:
        problems.append(
            f"only {len(reports)} of {workers} workers reported their logs: the check is incomplete"
        )
    return problems, summary
