"""QIDO-RS query parameters (PS3.18 8.3.4) read into the service's searches.

Matching keys by keyword or by tag (``PatientID`` or ``00100020``), a key repeated or its values
comma-separated as a list; ``limit``, ``offset``, ``includefield`` (keywords, tags or ``all``,
repeated or comma-separated) and ``fuzzymatching``. What pacsfed matches on:

- studies: PatientID (with IssuerOfPatientID), PatientName (``*`` and ``?`` wildcards; without
  PatientID, sources that support name search; with it, matched by pacsfed on the patient's
  studies), StudyInstanceUID (a UID list: one search, each source asked once), AccessionNumber,
  StudyDate (``YYYYMMDD``, a ``-`` range), ModalitiesInStudy (any of a list);
- series: SeriesInstanceUID (a list), Modality; instances: SOPInstanceUID (a list; a study's
  instances: all three).

A study search needs PatientID, PatientName, StudyInstanceUID or AccessionNumber (400
``BAD_QUERY`` otherwise: a whole archive is never listed). Other matching keys are not matched:
they are named in a ``Warning`` header (PS3.18 8.3.5.1). pacsfed does no fuzzy matching: with
``fuzzymatching=true`` the answer says so in a ``Warning`` and names match as given.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from pydicom.datadict import keyword_for_tag
from starlette.datastructures import QueryParams

from federation.errors import QueryError
from federation.models import DateRange, PatientQuery
from federation.search import InstanceSearch, SeriesSearch, StudySearch

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "QidoQuery", "read_query"]

DEFAULT_LIMIT = 200
"""Matches answered when the request sets no ``limit``."""
MAX_LIMIT = 1000
_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_STUDY_KEYS = frozenset(
    {
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "StudyInstanceUID",
        "AccessionNumber",
        "StudyDate",
        "ModalitiesInStudy",
    }
)
_SERIES_KEYS = frozenset({"StudyInstanceUID", "SeriesInstanceUID", "Modality"})
_INSTANCE_KEYS = frozenset({"SOPInstanceUID"})


@dataclasses.dataclass(frozen=True, slots=True)
class QidoQuery:
    """One QIDO request's matching keys (by keyword) and controls."""

    keys: dict[str, list[str]]
    limit: int
    offset: int
    include: frozenset[str]
    """``includefield`` keywords (``all`` for every attribute); pacsfed returns what it knows in any case."""
    fuzzy: bool
    ignored: tuple[str, ...]
    """Matching keys given but not matched on at this level (named in a Warning)."""

    def one(self, keyword: str) -> str | None:
        """A single-valued key's value (BAD_QUERY when several are given)."""
        values = self.keys.get(keyword, [])
        if len(values) > 1:
            raise QueryError(f"{keyword} takes one value", code="BAD_QUERY")
        return values[0] if values else None

    def patient(self) -> PatientQuery | None:
        """The patient by id, with its issuer when given."""
        patient_id = self.one("PatientID")
        if patient_id is None:
            if self.one("IssuerOfPatientID") is not None:
                raise QueryError("IssuerOfPatientID qualifies a PatientID", code="BAD_QUERY")
            return None
        return PatientQuery(patient_id=patient_id, issuer=self.one("IssuerOfPatientID"))

    def study_search(self) -> StudySearch:
        """The study search: its StudyInstanceUIDs one UID list, its PatientName matched alongside a PatientID."""
        date = self.one("StudyDate")
        return StudySearch(
            patient=self.patient(),
            patient_name=self.one("PatientName"),
            study_instance_uids=tuple(self.keys.get("StudyInstanceUID", ())),
            accession_number=self.one("AccessionNumber"),
            study_date=DateRange.parse(date) if date else None,
            modalities=tuple(self.keys.get("ModalitiesInStudy", ())),
        )

    def series_search(self, study_uid: str | None) -> SeriesSearch:
        """The series search of a study (the path's, or the ``StudyInstanceUID`` key's)."""
        study = study_uid or self.one("StudyInstanceUID")
        if study is None:
            raise QueryError("a series search needs a StudyInstanceUID", code="BAD_QUERY")
        return SeriesSearch(
            study_instance_uid=study,
            series_instance_uids=tuple(self.keys.get("SeriesInstanceUID", ())),
            modality=self.one("Modality"),
            patient=self.patient(),
        )

    def instance_search(self, study_uid: str, series_uid: str) -> InstanceSearch:
        """The instance search of one series."""
        return InstanceSearch(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uids=tuple(self.keys.get("SOPInstanceUID", ())),
            patient=self.patient(),
        )


def _keyword(name: str) -> str:
    """A parameter's attribute keyword: itself, or the keyword of an eight-digit tag."""
    if _TAG.match(name):
        return keyword_for_tag(int(name, 16)) or name
    return name


def _values(raw: Iterable[str]) -> list[str]:
    values: list[str] = []
    for item in raw:
        values += [part.strip() for part in re.split(r"[,\\]", item) if part.strip()]
    return values


def _integer(params: QueryParams, name: str, default: int, most: int) -> int:
    text = params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise QueryError(f"{name} must be a whole number", code="BAD_QUERY") from None
    if not 0 <= value <= most:
        raise QueryError(f"{name} must be between 0 and {most}", code="BAD_QUERY")
    return value


def read_query(params: QueryParams, level: str) -> QidoQuery:
    """The request's keys at ``level`` (``studies``, ``series``, ``instances``, ``study-instances``); BAD_QUERY when malformed."""
    patient = {"PatientID", "IssuerOfPatientID"}
    known = {
        "studies": _STUDY_KEYS,
        "series": _SERIES_KEYS | patient,
        "study-instances": _SERIES_KEYS | _INSTANCE_KEYS | patient,
    }.get(level, _INSTANCE_KEYS | patient)
    keys: dict[str, list[str]] = {}
    ignored: list[str] = []
    for name in dict.fromkeys(params.keys()):
        if name.lower() in _CONTROL:
            continue
        keyword = _keyword(name)
        raw = params.getlist(name)
        if keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "AccessionNumber", "StudyDate"):
            values = [value.strip() for value in raw if value.strip()]  # no list matching for these
        else:
            values = _values(raw)
        if not values:
            continue  # an empty value is universal matching: nothing to match
        if keyword in known:
            keys.setdefault(keyword, []).extend(values)
        else:
            ignored.append(keyword)
    include = frozenset(
        _keyword(v) if v.lower() != "all" else "all" for v in _values(params.getlist("includefield"))
    )
    fuzzy = params.get("fuzzymatching", "false").strip().lower()
    if fuzzy not in ("true", "false"):
        raise QueryError("fuzzymatching must be true or false", code="BAD_QUERY")
    return QidoQuery(
        keys=keys,
        limit=_integer(params, "limit", DEFAULT_LIMIT, MAX_LIMIT) or DEFAULT_LIMIT,
        offset=_integer(params, "offset", 0, 1_000_000),
        include=include,
        fuzzy=fuzzy == "true",
        ignored=tuple(ignored),
    )
