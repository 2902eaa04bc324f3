"""No log line of the whole test session names a seeded patient (names, IDs, birth dates)."""

from __future__ import annotations

import re

import pytest
from log_hygiene import LOG_HYGIENE_MARK, SessionLogCapture
from peers.dicomdata import CATALOGUE
from peers.reportdata import AUTHOR, FINDING, PDF_TITLE, REPORT_PATIENT
from peers.wadodata import WADO_PATIENT_ID, WADO_PATIENT_NAME

from pacsfed.demo.patients import DEMO_PATIENTS

pytestmark = getattr(pytest.mark, LOG_HYGIENE_MARK)


def _needles() -> set[str]:
    needles: set[str] = set()
    needles.update((AUTHOR, FINDING, PDF_TITLE))  # what a report says is patient data too
    for patient in (*CATALOGUE.patients, REPORT_PATIENT):
        needles.add(patient.patient_id)
        for component in re.split(r"[\^=]", patient.name):
            if len(component) >= 4:
                needles.add(component)
        needles.add(patient.birth_date)
    needles.add(WADO_PATIENT_ID)
    needles.update(part for part in re.split(r"[\^=]", WADO_PATIENT_NAME) if len(part) >= 4)
    for demo in DEMO_PATIENTS:
        needles.add(demo.patient_id)
        needles.update(part for part in re.split(r"[\^=]", demo.name) if len(part) >= 4)
        needles.add(demo.birth_date)
    return needles


def test_no_log_line_carries_patient_data(request: pytest.FixtureRequest) -> None:
    capture = request.config.stash[SessionLogCapture.KEY]
    needles = _needles()
    pattern = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    leaks = [line for line in capture.lines if pattern.search(line)]
    print(f"log hygiene: {capture.records} records searched for {len(needles)} patient identifiers and names")
    assert not leaks, "patient data in logs:\n" + "\n".join(leaks[:20])
