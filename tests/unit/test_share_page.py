"""The share page says who the shared exams are of, as each hospital records them."""

from __future__ import annotations

import datetime as dt

from federation.models import Exam, ExamLocation, SourceInfo
from web.share_page import _patient_html

A = SourceInfo(id="a", name="Hospital A", kind="dimse")
B = SourceInfo(id="b", name="Hospital B", kind="dicomweb")


def location(source: SourceInfo, pid: str, name: str, born: dt.date | None, sex: str | None) -> ExamLocation:
    return ExamLocation(
        source=source, patient_id=pid, patient_name=name, patient_birth_date=born, patient_sex=sex
    )


def test_one_version_is_shown_without_a_flag() -> None:
    exam = Exam(
        study_instance_uid="1",
        locations=(
            location(A, "A-1", "Peeters^Jan", dt.date(1949, 6, 5), "M"),
            location(B, "B-1", "Peeters^Jan", dt.date(1949, 6, 5), "M"),
        ),
    )
    shown = _patient_html([exam])
    assert "<strong>Peeters, Jan</strong> · born 1949-06-05 · male" in shown
    assert "Hospital A (A-1), Hospital B (B-1)" in shown
    assert "not record this patient the same way" not in shown


def test_disagreeing_hospitals_are_each_shown_and_flagged_never_merged() -> None:
    exams = [
        Exam(
            study_instance_uid="1", locations=(location(A, "A-1", "Peeters^Jan", dt.date(1949, 6, 5), "M"),)
        ),
        Exam(
            study_instance_uid="2", locations=(location(B, "B-1", "Peters^Jan", dt.date(1949, 5, 6), None),)
        ),
    ]
    shown = _patient_html(exams)
    assert "not record this patient the same way (2 versions)" in shown
    assert "Peeters, Jan</strong> · born 1949-06-05 · male" in shown
    assert "Peters, Jan</strong> · born 1949-05-06 · no sex recorded" in shown


def test_names_are_escaped_and_nothing_is_said_without_exams() -> None:
    exam = Exam(study_instance_uid="1", locations=(location(A, "A-1", "<b>X</b>^Y", None, "U"),))
    assert "&lt;b&gt;X&lt;/b&gt;, Y" in _patient_html([exam])
    assert _patient_html([]) == ""


def test_versions_differing_only_in_case_accents_or_a_missing_field_are_shown_but_not_flagged() -> None:
    """Hospitals write "PEETERS^JAN" or "Peeters^Jan", some record no sex: not a mix-up to cry wolf about."""
    exams = [
        Exam(
            study_instance_uid="1", locations=(location(A, "A-1", "PEETERS^JAN", dt.date(1949, 6, 5), "M"),)
        ),
        Exam(
            study_instance_uid="2", locations=(location(B, "B-1", "Peéters^Jan", dt.date(1949, 6, 5), None),)
        ),
    ]
    shown = _patient_html(exams)
    assert "PEETERS, JAN</strong>" in shown and "Peéters, Jan</strong>" in shown  # each as written
    assert "not record this patient the same way" not in shown
