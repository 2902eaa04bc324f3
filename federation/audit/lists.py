"""What goes into an audit record's lists: the patients an answer named, capped or split in parts.

An audit record must say which patients an access reached, including those a demographic
search returned (its exams and its candidates), so that ``auditEvents(patientId:)`` finds the
access by any of them. A record stays small: a list is cut at a cap and the record says how many
values it lost, or, where every value must stay findable (identity links, the patients an answer
returned), the values are spread over several records of at most the cap each.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from federation.models import PatientHistory

__all__ = ["MAX_LISTED", "audit_id", "capped", "in_parts", "returned_patient_ids"]

MAX_LISTED = 100
"""The most values one list of one audit record holds."""


def audit_id(patient_id: str, issuer: str | None) -> str:
    """An identifier as the audit trail writes it: ``ID^^^ISSUER`` (ISSUER empty when unknown)."""
    return f"{patient_id}^^^{issuer or ''}"


def returned_patient_ids(history: PatientHistory) -> list[str]:
    """Every patient identifier ``history`` hands out: its exams' locations, its candidates and theirs, each once."""
    found: dict[str, None] = {}
    for exam in history.exams:
        for location in exam.locations:
            if location.patient_id:
                found.setdefault(audit_id(location.patient_id, location.issuer_of_patient_id))
    for candidate in history.candidates:
        if candidate.patient_id:
            found.setdefault(audit_id(candidate.patient_id, candidate.issuer_of_patient_id))
        for exam in candidate.exams:
            for location in exam.locations:
                if location.patient_id:
                    found.setdefault(audit_id(location.patient_id, location.issuer_of_patient_id))
    return list(found)


def capped(values: Sequence[str], cap: int = MAX_LISTED) -> tuple[list[str], int]:
    """The first ``cap`` values and how many were left out."""
    return list(values[:cap]), max(0, len(values) - cap)


def in_parts(values: Iterable[str], size: int = MAX_LISTED) -> list[list[str]]:
    """``values`` (each once, in order) in parts of at most ``size``; one empty part when there are none."""
    unique = list(dict.fromkeys(values))
    return [unique[i : i + size] for i in range(0, len(unique), size)] or [[]]
