"""No log line of the whole test session names a seeded patient (names, IDs, birth dates).

Run alone or in one process, this test searches the session's lines; under pytest-xdist the
controller searches every worker's instead (tests/conftest.py), and this test is not collected.
"""

from __future__ import annotations

import pytest
from log_hygiene import LOG_HYGIENE_MARK, SessionLogCapture, leaked_lines, patient_needles

pytestmark = getattr(pytest.mark, LOG_HYGIENE_MARK)


def test_no_log_line_carries_patient_data(request: pytest.FixtureRequest) -> None:
    capture = request.config.stash[SessionLogCapture.KEY]
    leaks = leaked_lines(capture.lines)
    print(
        f"log hygiene: {capture.records} records searched for {len(patient_needles())} patient identifiers and names"
    )
    assert not leaks, "patient data in logs:\n" + "\n".join(leaks[:20])
