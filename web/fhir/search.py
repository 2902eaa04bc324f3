"""FHIR search parameters to a pacsfed patient query, and the response format a client accepts.

``patient.identifier`` is a token (FHIR R4 search, 3.1.1.5.4 "token"): ``system|value``,
``|value`` (an identifier without a system) or ``value`` (any system). A ``system`` is mapped to a
pacsfed issuer: the issuer whose ``identity.issuer_systems`` entry it is, a configured issuer
name itself (``HOSP_A|123``, as GraphQL's ``{id, issuer}``), or any system that is not a URI
(no ``:``), taken as an issuer name. A URI that maps to no issuer matches nothing: FHIR search
semantics make that an empty searchset (200), with an informational outcome saying why, not an
error. The issuer ``identity.national_issuer`` makes a ``{nationalId}`` query. A bare value is
sent as ``{id}`` without issuer. One identifier per search: ``,`` (OR) and repeated parameters
(AND) are refused, and so is ``system|`` (every patient of a system).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from federation.errors import QueryError
from federation.models import PatientQuery
from web.fhir.resources import Identifier

__all__ = ["PatientSearch", "accepts_json", "parse_token", "patient_search"]

PATIENT_IDENTIFIER = "patient.identifier"

_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})
_JSON_MEDIA = frozenset({"*/*", "application/*", "application/json", "application/fhir+json"})


def accepts_json(format_param: str | None, accept: str | None) -> bool:
    """Whether the client takes FHIR JSON: ``_format`` decides when given, else the Accept header."""
    if format_param is not None:
        return format_param.strip().lower().split(";")[0].strip() in _JSON_FORMATS
    if not accept or not accept.strip():
        return True
    for item in accept.split(","):
        media, *params = (part.strip().lower() for part in item.split(";"))
        refused = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
        if media in _JSON_MEDIA and not refused:
            return True
    return False


def parse_token(token: str) -> tuple[str | None, str]:
    """(system, value) of a token search value; system None when absent, ``""`` for ``|value``."""
    system: list[str] = []
    value: list[str] = []
    current = value
    split = False
    chars = iter(token)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ",":
            raise QueryError("search for one patient identifier at a time (no ',')", code="BAD_SEARCH")
        elif char == "|" and not split:
            split = True
            system, value = value, []
            current = value
        else:
            current.append(char)
    return ("".join(system) if split else None), "".join(value)


@dataclass(frozen=True, slots=True)
class PatientSearch:
    """What a search asks for: the subject identifier, and the pacsfed query (None: matches nothing)."""

    subject: Identifier
    query: PatientQuery | None


def patient_search(
    values: Sequence[str],
    issuer_systems: Mapping[str, str],
    known_issuers: Collection[str],
    national_issuer: str | None,
) -> PatientSearch:
    """The patient query for the ``patient.identifier`` values of a request; QueryError when unusable."""
    if not values:
        raise QueryError(
            f"search ImagingStudy by {PATIENT_IDENTIFIER}=[system|]value (no other search is served)",
            code="BAD_SEARCH",
        )
    if len(values) > 1:
        raise QueryError(f"give {PATIENT_IDENTIFIER} once", code="BAD_SEARCH")
    system, value = parse_token(values[0])
    if not value.strip():
        raise QueryError(f"{PATIENT_IDENTIFIER} needs a value", code="BAD_SEARCH")
    if not system:
        return PatientSearch(Identifier(value), PatientQuery(patient_id=value))
    by_system = {uri: issuer for issuer, uri in issuer_systems.items()}
    issuer = by_system.get(system)
    if issuer is None and (system in known_issuers or system in issuer_systems or ":" not in system):
        issuer = system
    subject = Identifier(value, issuer_systems.get(issuer, system) if issuer is not None else system)
    if issuer is None:
        return PatientSearch(subject, None)
    if national_issuer is not None and issuer == national_issuer:
        return PatientSearch(subject, PatientQuery(national_id=value))
    return PatientSearch(subject, PatientQuery(patient_id=value, issuer=issuer))
