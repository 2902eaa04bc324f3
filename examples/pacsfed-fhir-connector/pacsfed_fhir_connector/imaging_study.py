"""FHIR R4 search answers read as pacsfed records: a searchset ``Bundle`` of ``ImagingStudy`` → ``StudyRecord``.

The mapping (FHIR R4 ImagingStudy, http://hl7.org/fhir/R4/imagingstudy.html, and its DICOM mapping):

- StudyInstanceUID: the ``identifier`` of system ``urn:dicom:uid``, its ``urn:oid:`` prefix removed;
- AccessionNumber: the ``identifier`` typed ``ACSN`` (code system v2-0203);
- StudyDate and StudyTime: ``started`` (a dateTime; the time is kept as the source wrote it, local);
- ModalitiesInStudy: the codes of ``modality`` and of each ``series.modality``;
- StudyDescription, NumberOfStudyRelatedSeries and -Instances: ``description``, ``numberOfSeries``,
  ``numberOfInstances``;
- the patient: the ``subject`` Patient, contained (``#id``) or included in the Bundle
  (``_include=ImagingStudy:subject``): its identifier in the asked system, name, birth date, gender.

Nothing here raises on a bad value: a value that cannot be read is left out with a warning, and
warnings never hold the value (it may be patient data). A Bundle that is not one is a
:class:`federation.errors.SourceProtocolError`.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.dicom import beyond_alphabetic, person_name_groups
from federation.errors import SourceProtocolError
from federation.models import StudyRecord

__all__ = ["BundlePage", "PatientKey", "outcome_summary", "read_search_page", "study_record"]

DICOM_UID_SYSTEM = "urn:dicom:uid"
ACCESSION_TYPE = "ACSN"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE_TIME = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(?:Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"
_GENDERS = {"male": "M", "female": "F", "other": "O"}


@dataclass(frozen=True)
class PatientKey:
    """Which of the subject's identifiers is its PatientID: the FHIR ``system`` (None: any) and ``value``
    it was asked with; a search by a national number or by name knows only the system (the source's own).

    ``issuers`` maps FHIR systems to pacsfed issuers: an identifier in a mapped system gives the
    record's IssuerOfPatientID (for the PatientID) or an OtherPatientIDs entry (for the others).
    """

    system: str | None
    value: str | None
    issuers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class BundlePage:
    """One page of a search: its studies, the problems met, and the next page's URL."""

    records: list[StudyRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    next_url: str | None = None


def read_search_page(bundle: Any, source_id: str, asked: PatientKey | None) -> BundlePage:
    """The ImagingStudy entries of one searchset Bundle as records, with the Bundle's ``next`` link."""
    if not isinstance(bundle, dict):
        raise SourceProtocolError("FHIR answer is not a JSON object")
    kind = bundle.get("resourceType")
    if kind == "OperationOutcome":
        raise SourceProtocolError(f"FHIR search failed ({outcome_summary(bundle)})")
    if kind != "Bundle":
        raise SourceProtocolError("FHIR answer is not a Bundle")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise SourceProtocolError("FHIR Bundle entry is not a list")
    page = BundlePage(next_url=_next_link(bundle.get("link")))
    included = _patients_by_reference(entries)
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            page.warnings.append("a Bundle entry without a resource was ignored")
            continue
        kind = resource.get("resourceType")
        if kind == "OperationOutcome":
            page.warnings.append(f"FHIR server said: {outcome_summary(resource)}")
        elif kind == "ImagingStudy" and _search_mode(entry) in (None, "match"):
            record, problems = study_record(resource, source_id, included, asked)
            page.warnings.extend(problems)
            if record is not None:
                page.records.append(record)
    return page


def study_record(
    resource: Mapping[str, Any],
    source_id: str,
    included: Mapping[str, Mapping[str, Any]],
    asked: PatientKey | None,
) -> tuple[StudyRecord | None, list[str]]:
    """One ImagingStudy as a StudyRecord (None when it has no usable StudyInstanceUID), and its problems."""
    problems: list[str] = []
    identifiers = [i for i in _list(resource.get("identifier")) if isinstance(i, dict)]
    uid = _study_uid(identifiers)
    if uid is None:
        return None, ["an ImagingStudy without a valid DICOM StudyInstanceUID identifier was ignored"]
    study_date, study_time = _started(resource.get("started"), problems)
    patient = _subject(resource, included)
    fields: dict[str, Any] = {
        "source_id": source_id,
        "study_instance_uid": uid,
        "accession_number": _accession(identifiers),
        "study_date": study_date,
        "study_time": study_time,
        "modalities": _modalities(resource),
        "description": _text(resource.get("description")),
        "number_of_series": _count(resource.get("numberOfSeries"), "numberOfSeries", problems),
        "number_of_instances": _count(resource.get("numberOfInstances"), "numberOfInstances", problems),
    }
    fields.update(_patient_fields(resource.get("subject"), patient, asked, problems))
    fields["warnings"] = tuple(dict.fromkeys(problems))
    return StudyRecord(**fields), problems


def outcome_summary(outcome: Mapping[str, Any]) -> str:
    """An OperationOutcome's issues as ``severity/code`` pairs: never its free text (it may name the patient)."""
    issues = [
        f"{issue.get('severity', '?')}/{issue.get('code', '?')}"
        for issue in _list(outcome.get("issue"))
        if isinstance(issue, dict)
    ]
    return "OperationOutcome " + (", ".join(_plain(i) for i in issues[:5]) or "without issues")


def _plain(text: str) -> str:
    """A code as printable ASCII of bounded length (codes come from the server)."""
    return "".join(c if c.isascii() and c.isprintable() else "?" for c in text)[:60]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _search_mode(entry: Any) -> str | None:
    search = entry.get("search") if isinstance(entry, dict) else None
    mode = search.get("mode") if isinstance(search, dict) else None
    return mode if isinstance(mode, str) else None


def _next_link(links: Any) -> str | None:
    for link in _list(links):
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            url: str = link["url"]
            return url
    return None


def _patients_by_reference(entries: list[Any]) -> dict[str, Mapping[str, Any]]:
    """Included Patients by ``Patient/{id}`` and by their ``fullUrl``."""
    found: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            continue
        if isinstance(resource.get("id"), str):
            found[f"Patient/{resource['id']}"] = resource
        if isinstance(entry.get("fullUrl"), str):
            found[entry["fullUrl"]] = resource
    return found


def _subject(
    resource: Mapping[str, Any], included: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The subject Patient: contained (``#id``) or included (``Patient/id``, absolute or versioned)."""
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str):
        return None
    if reference.startswith("#"):
        for contained in _list(resource.get("contained")):
            if (
                isinstance(contained, dict)
                and contained.get("resourceType") == "Patient"
                and contained.get("id") == reference[1:]
            ):
                return contained
        return None
    if reference in included:
        return included[reference]
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return included.get("/".join(parts[-2:])) if len(parts) >= 2 else None


def _study_uid(identifiers: list[dict[str, Any]]) -> str | None:
    for identifier in identifiers:
        value = identifier.get("value")
        if identifier.get("system") == DICOM_UID_SYSTEM and isinstance(value, str):
            uid = value.removeprefix("urn:oid:").strip()
            return uid if _UID.match(uid) and len(uid) <= 64 else None
    return None


def _accession(identifiers: list[dict[str, Any]]) -> str | None:
    for identifier in identifiers:
        codings = (
            identifier.get("type", {}).get("coding") if isinstance(identifier.get("type"), dict) else None
        )
        if any(isinstance(c, dict) and c.get("code") == ACCESSION_TYPE for c in _list(codings)):
            return _text(identifier.get("value"))
    return None


def _started(value: Any, problems: list[str]) -> tuple[dt.date | None, dt.time | None]:
    """``started`` as a date and a local time; a partial date (a year, a month) gives neither."""
    if value is None:
        return None, None
    match = _DATE_TIME.match(value) if isinstance(value, str) else None
    if match is None:
        problems.append("an ImagingStudy.started that is not a FHIR dateTime was ignored")
        return None, None
    year, month, day, hour, minute, second, fraction = match.groups()
    if day is None:
        return None, None
    try:
        date = dt.date(int(year), int(month), int(day))
        time = None
        if hour is not None:
            micro = int((fraction or "0")[:6].ljust(6, "0"))
            time = dt.time(int(hour), int(minute), int(second or 0), micro)
    except ValueError:
        problems.append("an ImagingStudy.started out of range was ignored")
        return None, None
    return date, time


def _modalities(resource: Mapping[str, Any]) -> tuple[str, ...]:
    codes = [c.get("code") for c in _list(resource.get("modality")) if isinstance(c, dict)]
    for series in _list(resource.get("series")):
        modality = series.get("modality") if isinstance(series, dict) else None
        if isinstance(modality, dict):
            codes.append(modality.get("code"))
    return tuple(dict.fromkeys(c.strip() for c in codes if isinstance(c, str) and c.strip()))


def _count(value: Any, name: str, problems: list[str]) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    problems.append(f"an ImagingStudy.{name} that is not an unsigned integer was ignored")
    return None


def _patient_fields(
    subject: Any, patient: Mapping[str, Any] | None, asked: PatientKey | None, problems: list[str]
) -> dict[str, Any]:
    """PatientID (the identifier in the asked system), name, birth date and sex of the subject."""
    identifiers: list[Any] = []
    if isinstance(subject, dict) and isinstance(subject.get("identifier"), dict):
        identifiers.append(subject["identifier"])
    fields: dict[str, Any] = {}
    if patient is not None:
        identifiers.extend(_list(patient.get("identifier")))
        groups = _name_groups(patient.get("name"))
        fields["patient_name"] = next((g for g in groups if g), None)
        fields["patient_name_groups"] = beyond_alphabetic(groups)
        birth = patient.get("birthDate")
        if isinstance(birth, str):
            try:
                fields["patient_birth_date"] = dt.date.fromisoformat(birth)
            except ValueError:
                if len(birth) not in (4, 7):  # a year or a month alone is valid FHIR, but no DICOM DA
                    problems.append("a Patient.birthDate that is not a FHIR date was ignored")
        fields["patient_sex"] = _GENDERS.get(patient.get("gender", ""))
    fields["patient_id"] = _patient_id(identifiers, asked)
    if asked is not None and asked.issuers:
        fields.update(_issuers(identifiers, fields["patient_id"], asked))
    return fields


def _issuers(identifiers: list[Any], patient_id: str | None, asked: PatientKey) -> dict[str, Any]:
    """IssuerOfPatientID of the PatientID, and the other identifiers in mapped systems as OtherPatientIDs."""
    issuer: str | None = None
    others: list[tuple[str | None, str]] = []
    for identifier in identifiers:
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            continue
        mapped = asked.issuers.get(identifier.get("system") or "")
        is_patient_id = identifier["value"] == patient_id and (
            asked.system is None or identifier.get("system") == asked.system
        )
        if is_patient_id:
            issuer = issuer or mapped
        elif mapped is not None and (mapped, identifier["value"]) not in others:
            others.append((mapped, identifier["value"]))
    return {"issuer_of_patient_id": issuer, "other_patient_ids": tuple(others)}


def _patient_id(identifiers: list[Any], asked: PatientKey | None) -> str | None:
    """The subject's identifier in the asked system (or equal to the asked value, when no system was)."""
    if asked is None or (asked.system is None and asked.value is None):
        return None
    for identifier in identifiers:
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            continue
        value: str = identifier["value"]
        if asked.system is None and value == asked.value:
            return value
        if asked.system is not None and identifier.get("system") == asked.system:
            return value
    return None


def _name_groups(names: Any) -> tuple[str, ...]:
    """The patient's HumanNames as PN component groups (Alphabetic, Ideographic, Phonetic).

    A name marked with the ``iso21090-EN-representation`` extension (``ABC``, ``IDE``, ``SYL``) fills
    its group, as Japanese and Korean systems send them; otherwise the official (else the first)
    name is the Alphabetic group.
    """
    candidates = [n for n in _list(names) if isinstance(n, dict)]
    groups = {"ABC": "", "IDE": "", "SYL": ""}
    plain: list[dict[str, Any]] = []
    for name in candidates:
        representation = _representation(name)
        if representation in groups:
            groups[representation] = groups[representation] or _pn(name)
        else:
            plain.append(name)
    if not groups["ABC"] and plain:
        groups["ABC"] = _pn(next((n for n in plain if n.get("use") == "official"), plain[0]))
    return person_name_groups("=".join(groups.values()))


def _representation(name: dict[str, Any]) -> str | None:
    for extension in _list(name.get("extension")):
        if isinstance(extension, dict) and extension.get("url") == _REPRESENTATION:
            code = extension.get("valueCode")
            return code if isinstance(code, str) else None
    return None


def _pn(name: dict[str, Any]) -> str:
    """One HumanName as a PN group: ``Family^Given Middle^^Prefix^Suffix`` (``^`` and ``=`` dropped)."""
    family = name.get("family")
    parts: list[str] = [
        family if isinstance(family, str) else "",
        " ".join(g for g in _list(name.get("given")) if isinstance(g, str)),
        "",
        " ".join(p for p in _list(name.get("prefix")) if isinstance(p, str)),
        " ".join(s for s in _list(name.get("suffix")) if isinstance(s, str)),
    ]
    parts = [part.replace("^", " ").replace("=", " ").strip() for part in parts]
    pn = "^".join(parts).rstrip("^")
    text = name.get("text")
    if not pn and isinstance(text, str):
        pn = text.replace("^", " ").replace("=", " ").strip()
    return unicodedata.normalize("NFC", pn)
