"""Patient identity across hospitals: the cross-reference store and the per-source query plan.

Each source's PatientIDs belong to one identifier domain (its configured ``issuer``); some
sources also keep the national number, in PatientID or in OtherPatientIDsSequence. Links
``(issuer, id) ↔ (issuer, id)`` (PIX-like, IHE ITI-9) are kept in a store; before the fan-out
the resolver gives each source the identifiers valid in its own domain, and nothing else.
A wrong merge is a safety incident: every record a source returns is checked against the
identifier it was asked for (:func:`record_matches`) before it can reach the exams.
"""

from __future__ import annotations

import abc
import csv
import datetime as dt
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from federation.errors import ConfigError, QueryError
from federation.models import MatchedBy, MatchKind, PatientQuery, PatientQueryKind, StudyQuery, StudyRecord

_MAX_CLOSURE_ROUNDS = 8


@dataclass(frozen=True, order=True)
class Identifier:
    """One patient identifier in one domain."""

    issuer: str
    value: str


@dataclass(frozen=True)
class IdentityLink:
    """One row of the cross-reference: this identifier belongs to ``person``; who said so, when."""

    person: str
    identifier: Identifier
    added_by: str
    added_at: dt.datetime


@dataclass(frozen=True)
class SourceIdentity:
    """What the resolver needs to know about one source."""

    source_id: str
    issuer: str | None
    national_id_in: str = "none"
    match_issuer: bool = False


@dataclass(frozen=True)
class PlannedQuery:
    """One query to send to one source, and what a hit will be said to be matched by."""

    query: StudyQuery
    matched_by: MatchedBy


class IdentityStore(abc.ABC):
    """Where cross-reference links live (Elasticsearch in service, memory in the demo)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare the backend; never raises if it is down."""

    @abc.abstractmethod
    async def add_links(self, links: Sequence[IdentityLink]) -> int:
        """Store links (idempotent per person and identifier); return how many were written."""

    @abc.abstractmethod
    async def persons_of(self, identifiers: Iterable[Identifier]) -> set[str]:
        """The persons any of these identifiers are linked to."""

    @abc.abstractmethod
    async def identifiers_of(self, persons: Iterable[str]) -> set[Identifier]:
        """Every identifier linked to any of these persons."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release clients."""

    async def linked(self, identifier: Identifier) -> set[Identifier]:
        """Every identifier of the same person (transitive closure), including ``identifier``."""
        known = {identifier}
        for _ in range(_MAX_CLOSURE_ROUNDS):
            persons = await self.persons_of(known)
            if not persons:
                break
            found = await self.identifiers_of(persons) | known
            if found == known:
                break
            known = found
        return known


class MemoryIdentityStore(IdentityStore):
    """Links kept in process memory."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, Identifier], IdentityLink] = {}

    async def add_links(self, links: Sequence[IdentityLink]) -> int:
        """Keep each (person, identifier) once; a re-import refreshes who and when."""
        for link in links:
            self._links[(link.person, link.identifier)] = link
        return len(links)

    async def persons_of(self, identifiers: Iterable[Identifier]) -> set[str]:
        """Persons linked to any of the identifiers."""
        wanted = set(identifiers)
        return {person for person, identifier in self._links if identifier in wanted}

    async def identifiers_of(self, persons: Iterable[str]) -> set[Identifier]:
        """Identifiers linked to any of the persons."""
        wanted = set(persons)
        return {identifier for person, identifier in self._links if person in wanted}

    def all_links(self) -> list[IdentityLink]:
        """Every stored link (for tests and export)."""
        return list(self._links.values())


def make_link(person: str, issuer: str, value: str, added_by: str, at: dt.datetime) -> IdentityLink:
    """One validated link; QueryError (BAD_IDENTITY_LINK) says what is wrong, without the values."""
    person, issuer, value = person.strip(), issuer.strip(), value.strip()
    if not (person and issuer and value):
        raise QueryError("person, issuer and patient_id must all be given", code="BAD_IDENTITY_LINK")
    try:
        PatientQuery(patient_id=value, issuer=issuer)
    except QueryError as exc:
        raise QueryError(str(exc), code="BAD_IDENTITY_LINK") from exc
    return IdentityLink(person, Identifier(issuer, value), added_by, at)


def parse_links_csv(text: str, added_by: str, now: dt.datetime | None = None) -> list[IdentityLink]:
    """Links from CSV with the header ``person,issuer,patient_id``; ConfigError names the bad line."""
    now = now or dt.datetime.now(dt.UTC)
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or [f.strip() for f in reader.fieldnames] != [
        "person",
        "issuer",
        "patient_id",
    ]:
        raise ConfigError("the links file must start with the header person,issuer,patient_id")
    links: list[IdentityLink] = []
    for line, row in enumerate(reader, start=2):
        try:
            links.append(
                make_link(
                    row.get("person") or "",
                    row.get("issuer") or "",
                    row.get("patient_id") or "",
                    added_by,
                    now,
                )
            )
        except QueryError as exc:
            raise ConfigError(f"line {line}: {exc}") from exc
    return links


class IdentityResolver:
    """Plans, for each source, the queries that use identifiers valid in its domain."""

    def __init__(self, store: IdentityStore | None, national_issuer: str | None) -> None:
        self.store = store
        self.national_issuer = national_issuer

    async def known_identifiers(self, patient: PatientQuery) -> tuple[Identifier | None, set[Identifier]]:
        """The identifier the client gave (if it has a domain) and every identifier linked to it."""
        if patient.kind is PatientQueryKind.NATIONAL_ID:
            if not self.national_issuer:
                raise QueryError(
                    "nationalId needs identity.national_issuer in the configuration", code="BAD_PATIENT_INPUT"
                )
            given = Identifier(self.national_issuer, patient.national_id or "")
        elif patient.kind is PatientQueryKind.LOCAL_ID and patient.issuer:
            given = Identifier(patient.issuer, patient.patient_id or "")
        else:
            return None, set()
        linked = await self.store.linked(given) if self.store is not None else {given}
        return given, linked

    async def plan(
        self, patient: PatientQuery, sources: Sequence[SourceIdentity]
    ) -> dict[str, list[PlannedQuery]]:
        """The identifier queries per source id; an empty list means NO_IDENTIFIER."""
        if patient.kind is PatientQueryKind.DEMOGRAPHICS:
            return {source.source_id: [] for source in sources}
        if patient.kind is PatientQueryKind.LOCAL_ID and not patient.issuer:
            # No domain given: the ID is sent as it is to every source (the first issue's contract).
            plain = PlannedQuery(
                StudyQuery(patient_id=patient.patient_id),
                MatchedBy(kind=MatchKind.LOCAL_ID, issuer=None, value=patient.patient_id),
            )
            return {source.source_id: [plain] for source in sources}
        given, linked = await self.known_identifiers(patient)
        national = (
            sorted(i for i in linked if i.issuer == self.national_issuer) if self.national_issuer else []
        )
        plans: dict[str, list[PlannedQuery]] = {}
        for source in sources:
            planned: list[PlannedQuery] = []
            for identifier in sorted(i for i in linked if source.issuer and i.issuer == source.issuer):
                kind = MatchKind.LOCAL_ID if identifier == given else MatchKind.XREF
                if identifier.issuer == self.national_issuer:
                    kind = MatchKind.NATIONAL_ID
                planned.append(
                    PlannedQuery(
                        StudyQuery(
                            patient_id=identifier.value,
                            issuer_of_patient_id=identifier.issuer if source.match_issuer else None,
                        ),
                        MatchedBy(kind=kind, issuer=identifier.issuer, value=identifier.value),
                    )
                )
            for identifier in national:
                if source.issuer == identifier.issuer:
                    continue  # already asked as a local identifier above
                matched = MatchedBy(
                    kind=MatchKind.NATIONAL_ID, issuer=identifier.issuer, value=identifier.value
                )
                if source.national_id_in == "patient_id":
                    planned.append(PlannedQuery(StudyQuery(patient_id=identifier.value), matched))
                elif source.national_id_in == "other_patient_ids":
                    planned.append(
                        PlannedQuery(
                            StudyQuery(
                                other_patient_id=identifier.value, other_patient_id_issuer=identifier.issuer
                            ),
                            matched,
                        )
                    )
            plans[source.source_id] = planned
        return plans


def record_matches(record: StudyRecord, planned: PlannedQuery, source: SourceIdentity) -> bool:
    """Whether a returned record really carries the identifier it was asked for.

    A PACS that ignores a matching key it does not support answers for every patient: such
    records must never reach the exams. The same ID string in another domain is another
    patient, so a record that names an issuer must name the expected one (the identifier's
    own, or the source's: a national number kept in PatientID may carry the hospital's issuer).
    """
    query, expected = planned.query, planned.matched_by.issuer
    if query.patient_id is not None:
        if record.patient_id != query.patient_id:
            return False
        if expected is None or record.issuer_of_patient_id is None:
            return True
        return record.issuer_of_patient_id in (expected, source.issuer)
    if query.other_patient_id is not None:
        return any(
            value == query.other_patient_id and issuer in (None, query.other_patient_id_issuer)
            for issuer, value in record.other_patient_ids
        )
    return False
