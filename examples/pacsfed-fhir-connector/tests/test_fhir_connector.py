"""The FHIR connector against the FHIR endpoint the tests serve: records, paging, errors, proxy, clients."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir_endpoint import MRN, FhirEndpoint
from forward_proxy import ForwardProxy
from pacsfed_fhir_connector import FhirConnector, FhirSourceSettings
from pydantic import ValidationError
from tls_files import TlsFiles, make_tls_files

from connectors.base import ConnectorContext
from federation.errors import SourceAuthError, SourceProtocolError, SourceTimeout, SourceUnreachable
from federation.models import Deadline, StudyQuery

NISS = "urn:oid:2.16.56.1.2.3"


def connector(url: str, context: ConnectorContext | None = None, **keys: Any) -> FhirConnector:
    keys.setdefault("identifier_system", MRN)
    settings = FhirSourceSettings(id="fhir-a", kind="fhir", base_url=url, **keys)
    return FhirConnector(settings, context or ConnectorContext())


def seed_patient(fhir: FhirEndpoint) -> str:
    patient = fhir.add_patient(MRN, "MRN-1", "Durand", ["Anne", "Marie"], "1961-03-04", "female")
    fhir.add_study(
        patient,
        "1.2.250.1.59.3.1",
        accession="ACC-77",
        started="2024-01-05T09:30:12.25+01:00",
        modalities=["CT"],
        series_modalities=["CT", "SR"],
        description="CT thorax",
        series=3,
        instances=412,
    )
    return patient


async def test_a_study_comes_back_with_its_normalized_fields(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    source = connector(fhir.url)
    try:
        answer = await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
    finally:
        await source.aclose()
    assert answer.warnings == ()
    [record] = answer.records
    assert record.source_id == "fhir-a"
    assert record.study_instance_uid == "1.2.250.1.59.3.1"
    assert record.accession_number == "ACC-77"
    assert (record.study_date, record.study_time) == (dt.date(2024, 1, 5), dt.time(9, 30, 12, 250000))
    assert record.modalities == ("CT", "SR")
    assert record.description == "CT thorax"
    assert (record.number_of_series, record.number_of_instances) == (3, 412)
    assert record.patient_id == "MRN-1"
    assert record.patient_name == "Durand^Anne Marie"
    assert record.patient_birth_date == dt.date(1961, 3, 4)
    assert record.patient_sex == "F"
    [search] = fhir.seen
    assert search.path == "/fhir/ImagingStudy"
    assert ("patient.identifier", f"{MRN}|MRN-1") in search.params
    assert ("_include", "ImagingStudy:subject") in search.params
    assert search.headers["accept"] == "application/fhir+json"
    assert search.headers["prefer"] == "handling=strict"


async def test_a_contained_subject_gives_the_patient_too(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    fhir.contained_subject = True
    source = connector(fhir.url, include_patient=False)
    try:
        [record] = (await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))).records
    finally:
        await source.aclose()
    assert (record.patient_id, record.patient_name) == ("MRN-1", "Durand^Anne Marie")
    assert ("_include", "ImagingStudy:subject") not in fhir.seen[0].params


async def test_pages_are_followed_through_next_links(fhir: FhirEndpoint) -> None:
    patient = fhir.add_patient(MRN, "MRN-2", "Martin")
    uids = [f"1.2.3.{n}" for n in range(1, 8)]
    for uid in uids:
        fhir.add_study(patient, uid, started="2023-06-01")
    source = connector(fhir.url, page_size=3)
    try:
        answer = await source.find_studies(StudyQuery(patient_id="MRN-2"), Deadline.after(5))
    finally:
        await source.aclose()
    assert sorted(r.study_instance_uid for r in answer.records) == uids
    assert len(fhir.seen) == 3
    assert not answer.truncated


async def test_max_results_stops_the_paging_and_says_so(fhir: FhirEndpoint) -> None:
    patient = fhir.add_patient(MRN, "MRN-2", "Martin")
    for n in range(1, 8):
        fhir.add_study(patient, f"1.2.3.{n}")
    source = connector(fhir.url, page_size=2, max_results=3)
    try:
        answer = await source.find_studies(StudyQuery(patient_id="MRN-2"), Deadline.after(5))
    finally:
        await source.aclose()
    assert len(answer.records) == 3
    assert answer.truncated
    assert answer.warnings == ("stopped after 3 studies (max_results)",)


async def test_no_match_is_an_empty_answer(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    source = connector(fhir.url)
    try:
        answer = await source.find_studies(StudyQuery(patient_id="NOBODY"), Deadline.after(5))
    finally:
        await source.aclose()
    assert answer.records == []
    assert answer.warnings == ()


async def test_token_characters_in_a_value_are_escaped(fhir: FhirEndpoint) -> None:
    patient = fhir.add_patient(MRN, "A|1,2$3", "Petit")
    fhir.add_study(patient, "1.2.9")
    source = connector(fhir.url)
    try:
        answer = await source.find_studies(StudyQuery(patient_id="A|1,2$3"), Deadline.after(5))
    finally:
        await source.aclose()
    assert [r.study_instance_uid for r in answer.records] == ["1.2.9"]
    assert ("patient.identifier", f"{MRN}|A\\|1\\,2\\$3") in fhir.seen[0].params


async def test_issuers_are_sent_as_their_systems_and_come_back_with_the_records(fhir: FhirEndpoint) -> None:
    patient = fhir.add_patient(MRN, "MRN-9", "Durand", other_identifiers=[(NISS, "61030412345")])
    fhir.add_study(patient, "1.2.10")
    by_issuer = connector(fhir.url, issuer_systems={"NISS": NISS, "HOSP-A": MRN})
    bare = connector(fhir.url, identifier_system=None)
    try:
        national = StudyQuery(other_patient_id="61030412345", other_patient_id_issuer="NISS")
        found = await by_issuer.find_studies(national, Deadline.after(5))
        qualified = StudyQuery(patient_id="61030412345", issuer_of_patient_id="NISS")
        found_too = await by_issuer.find_studies(qualified, Deadline.after(5))
        unmapped = await bare.find_studies(national, Deadline.after(5))
        alone = await bare.find_studies(StudyQuery(patient_id="61030412345"), Deadline.after(5))
    finally:
        await by_issuer.aclose()
        await bare.aclose()
    [record] = found.records
    assert (record.study_instance_uid, record.patient_id, record.issuer_of_patient_id) == (
        "1.2.10",
        "MRN-9",
        "HOSP-A",
    )
    assert record.other_patient_ids == (("NISS", "61030412345"),)
    [record] = found_too.records
    assert (record.patient_id, record.issuer_of_patient_id) == ("61030412345", "NISS")
    assert record.other_patient_ids == (("HOSP-A", "MRN-9"),)
    assert unmapped.records == () and "issuer_systems" in unmapped.warnings[0]
    [record] = alone.records
    assert (record.patient_id, record.issuer_of_patient_id, record.other_patient_ids) == (
        "61030412345",
        None,
        (),
    )
    asked = [dict(s.params)["patient.identifier"] for s in fhir.seen]
    assert asked == [f"{NISS}|61030412345", f"{NISS}|61030412345", "61030412345"]


async def test_the_bearer_token_is_sent_and_a_wrong_one_is_an_auth_error(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    fhir.token = "s3cret"
    right = connector(fhir.url, auth={"type": "bearer", "token": "s3cret"})
    wrong = connector(fhir.url, auth={"type": "bearer", "token": "nope"})
    try:
        assert len((await right.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))).records) == 1
        with pytest.raises(SourceAuthError):
            await wrong.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
    finally:
        await right.aclose()
        await wrong.aclose()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_source_nobody_listens_on_is_unreachable() -> None:
    source = connector(f"http://127.0.0.1:{closed_port()}/fhir")
    try:
        with pytest.raises(SourceUnreachable):
            await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
        with pytest.raises(SourceUnreachable):
            await source.ping(Deadline.after(5))
    finally:
        await source.aclose()


@pytest.mark.parametrize("fault", ["slow", "trickle"])
async def test_a_source_that_does_not_finish_by_the_deadline_times_out(
    fhir: FhirEndpoint, fault: str
) -> None:
    seed_patient(fhir)
    fhir.fault = fault
    source = connector(fhir.url)
    try:
        with pytest.raises(SourceTimeout) as raised:
            await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(0.5))
    finally:
        await source.aclose()
    assert "MRN-1" not in str(raised.value)


async def test_malformed_json_is_a_protocol_error(fhir: FhirEndpoint) -> None:
    fhir.fault = "malformed"
    source = connector(fhir.url)
    try:
        with pytest.raises(SourceProtocolError, match="not valid JSON"):
            await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
    finally:
        await source.aclose()


async def test_an_operation_outcome_is_a_protocol_error_without_its_text(fhir: FhirEndpoint) -> None:
    fhir.fault = "outcome"
    source = connector(fhir.url)
    try:
        with pytest.raises(SourceProtocolError) as raised:
            await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
    finally:
        await source.aclose()
    assert str(raised.value) == "FHIR server answered HTTP 400 (OperationOutcome error/processing)"


async def test_a_next_link_to_another_origin_is_refused(fhir: FhirEndpoint) -> None:
    patient = fhir.add_patient(MRN, "MRN-2", "Martin")
    for n in range(1, 4):
        fhir.add_study(patient, f"1.2.3.{n}")
    fhir.fault = "foreign-next"
    source = connector(fhir.url, page_size=2, auth={"type": "bearer", "token": "s3cret"})
    try:
        with pytest.raises(SourceProtocolError, match="leaves the source's base URL"):
            await source.find_studies(StudyQuery(patient_id="MRN-2"), Deadline.after(5))
    finally:
        await source.aclose()
    assert len(fhir.seen) == 1


async def test_ping_reads_the_capability_statement(fhir: FhirEndpoint) -> None:
    source = connector(fhir.url)
    try:
        await source.ping(Deadline.after(5))
    finally:
        await source.aclose()
    assert [s.path for s in fhir.seen] == ["/fhir/metadata"]


async def test_the_process_client_is_borrowed_and_never_closed(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    sent: list[httpx.URL] = []

    async def note(request: httpx.Request) -> None:
        sent.append(request.url)

    async with httpx.AsyncClient(event_hooks={"request": [note]}) as shared:
        source = connector(fhir.url, ConnectorContext(http_client=shared))
        await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
        await source.aclose()
        await source.aclose()
        assert not shared.is_closed
    assert [url.path for url in sent] == ["/fhir/ImagingStudy"]


async def test_a_proxied_source_goes_through_its_proxy_with_a_client_of_its_own(
    fhir: FhirEndpoint, proxy: ForwardProxy
) -> None:
    seed_patient(fhir)
    sent: list[httpx.URL] = []

    async def note(request: httpx.Request) -> None:
        sent.append(request.url)

    async with httpx.AsyncClient(event_hooks={"request": [note]}) as shared:
        source = connector(fhir.url, ConnectorContext(http_client=shared), proxy=proxy.url)
        try:
            answer = await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
            await source.ping(Deadline.after(5))
        finally:
            await source.aclose()
            await source.aclose()  # idempotent
    assert [r.study_instance_uid for r in answer.records] == ["1.2.250.1.59.3.1"]
    assert sent == []
    assert [line.split("?")[0] for line in proxy.forwarded] == [
        f"GET {fhir.url}/ImagingStudy",
        f"GET {fhir.url}/metadata",
    ]


async def test_a_proxy_that_is_down_makes_the_source_unreachable(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    source = connector(fhir.url, proxy=f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(SourceUnreachable):
            await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
    finally:
        await source.aclose()
    assert fhir.seen == []


async def test_a_proxy_asking_for_credentials_gets_those_of_the_proxy_url(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    guarded = ForwardProxy(credentials="egress:pa55").start()
    url = f"http://127.0.0.1:{guarded.port}"
    without = connector(fhir.url, proxy=url)
    with_them = connector(fhir.url, proxy=f"http://egress:pa55@127.0.0.1:{guarded.port}")
    try:
        with pytest.raises(SourceAuthError, match="proxy"):
            await without.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
        answer = await with_them.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
    finally:
        await without.aclose()
        await with_them.aclose()
        guarded.stop()
    assert len(answer.records) == 1
    assert len(guarded.forwarded) == 1


def test_unknown_keys_and_a_proxy_that_is_no_url_are_refused() -> None:
    with pytest.raises(ValidationError, match="proxi"):
        FhirSourceSettings(id="f", kind="fhir", base_url="http://h/fhir", proxi="http://p:3128")
    with pytest.raises(ValidationError, match="proxy"):
        FhirSourceSettings(id="f", kind="fhir", base_url="http://h/fhir", proxy="p:3128")
    with pytest.raises(ValidationError, match="auth"):
        FhirSourceSettings(
            id="f", kind="fhir", base_url="http://h/fhir", auth={"type": "basic", "token": "x"}
        )


async def test_a_name_pattern_and_a_birth_date_find_that_patient_only(fhir: FhirEndpoint) -> None:
    seed_patient(fhir)
    namesake = fhir.add_patient(MRN, "MRN-3", "Durandal", ["Anne"], "1961-03-04", "female")
    fhir.add_study(namesake, "1.2.3.30")
    muller = fhir.add_patient(MRN, "MRN-4", "Müller", ["Jürgen"], "1970-05-06", "male")
    fhir.add_study(muller, "1.2.3.40")
    yamada = fhir.add_patient(
        MRN, "MRN-5", "Yamada", ["Tarou"], "1948-11-12", "male", ideographic=("山田", ["太郎"])
    )
    fhir.add_study(yamada, "1.2.3.50")
    source = connector(fhir.url)
    born = dt.date(1961, 3, 4)
    try:
        durand = await source.find_studies(
            StudyQuery(patient_name="Durand^Anne*", patient_birth_date=born), Deadline.after(5)
        )
        loose = await source.find_studies(StudyQuery(patient_name="M*ller*"), Deadline.after(5))
        kanji = await source.find_studies(StudyQuery(patient_name="*山田*"), Deadline.after(5))
    finally:
        await source.aclose()
    assert [(r.study_instance_uid, r.patient_id) for r in durand.records] == [("1.2.250.1.59.3.1", "MRN-1")]
    assert [r.patient_id for r in loose.records] == ["MRN-4"]
    assert [r.patient_pn for r in kanji.records] == ["Yamada^Tarou=山田^太郎"]
    asked = [{k: v for k, v in s.params if k.startswith("patient.")} for s in fhir.seen]
    assert asked == [
        {"patient.family": "Durand", "patient.birthdate": "1961-03-04"},
        {"patient.family:contains": "ller"},
        {"patient.family:contains": "山田"},
    ]


@pytest.fixture
def fhir_tls(tmp_path: Path) -> Iterator[tuple[FhirEndpoint, TlsFiles]]:
    """A FHIR endpoint over https://, with a certificate of a throw-away CA, holding one study."""
    files = make_tls_files(tmp_path)
    endpoint = FhirEndpoint(tls=(files.server_cert, files.server_key)).start()
    seed_patient(endpoint)
    yield endpoint, files
    endpoint.stop()


async def test_an_https_source_is_checked_against_its_ca_file_and_tunnelled_through_its_proxy(
    fhir_tls: tuple[FhirEndpoint, TlsFiles], proxy: ForwardProxy
) -> None:
    fhir, files = fhir_tls
    direct = connector(fhir.url, ca_file=str(files.ca_cert))
    proxied = connector(fhir.url, ca_file=str(files.ca_cert), proxy=proxy.url)
    untrusted = connector(fhir.url)
    try:
        for source in (direct, proxied):
            answer = await source.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
            assert [r.study_instance_uid for r in answer.records] == ["1.2.250.1.59.3.1"]
        with pytest.raises(SourceUnreachable, match="TLS certificate not trusted"):
            await untrusted.find_studies(StudyQuery(patient_id="MRN-1"), Deadline.after(5))
    finally:
        for source in (direct, proxied, untrusted):
            await source.aclose()
    assert proxy.forwarded == [f"CONNECT 127.0.0.1:{fhir.port}"]
    assert len(fhir.seen) == 2
