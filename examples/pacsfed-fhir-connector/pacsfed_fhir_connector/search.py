"""FHIR search parameters for a StudyQuery: a patient identifier as a token, or a name pattern and a birth date.

Token values are escaped as FHIR R4 requires (http://hl7.org/fhir/R4/search.html#escaping). A
DICOM name pattern (PS3.4 C.2.2.2.4: ``*`` and ``?``) has no FHIR equal: the longest plain run of
its family component is searched (``patient.family`` when it starts the pattern, FHIR's
case-insensitive starts-with; ``patient.family:contains`` otherwise), and :func:`matches_demographics`
then keeps only the records the whole pattern and the birth date match, so a lenient server (one
that ignores a parameter it does not know) cannot bring another patient's studies.
"""

from __future__ import annotations

import re

from federation.models import StudyQuery, StudyRecord

__all__ = ["demographic_params", "matches_demographics", "search_token"]


def _escaped(text: str) -> str:
    for char in "\\|,$":
        text = text.replace(char, "\\" + char)
    return text


def search_token(system: str | None, value: str) -> str:
    """A FHIR token search value, ``system|value`` or ``value``, with ``\\ | , $`` escaped."""
    return _escaped(value) if system is None else f"{_escaped(system)}|{_escaped(value)}"


def demographic_params(query: StudyQuery) -> dict[str, str]:
    """Chained Patient parameters for a name pattern and a birth date (empty when the query has neither)."""
    params: dict[str, str] = {}
    if query.patient_name is not None:
        family = query.patient_name.split("=", 1)[0].split("^", 1)[0]
        runs = [run for run in re.split(r"[*?]", family) if run.strip()]
        if runs:
            literal = max(runs, key=len)
            key = "patient.family" if family.startswith(literal) else "patient.family:contains"
            params[key] = _escaped(literal.strip())
    if query.patient_birth_date is not None:
        params["patient.birthdate"] = query.patient_birth_date.isoformat()
    return params


def matches_demographics(record: StudyRecord, query: StudyQuery) -> bool:
    """Whether the record's patient matches the query's name pattern (any group, case-insensitive) and birth date."""
    if query.patient_birth_date is not None and record.patient_birth_date != query.patient_birth_date:
        return False
    if query.patient_name is None:
        return True
    pattern = re.compile(
        "".join(
            ".*" if c == "*" else "." if c == "?" else re.escape(c) for c in query.patient_name.casefold()
        ),
        re.DOTALL,
    )
    groups = (record.patient_pn or "").split("=")
    return any(group and pattern.fullmatch(group.casefold()) for group in groups)
