"""The FHIR example connector (examples/pacsfed-fhir-connector), pip-installed beside a clean pacsfed and served.

A FHIR endpoint and a forward proxy run in this test process (the example's own test helpers);
``pacsfed serve`` runs from a clean virtualenv holding pacsfed and the example package, and is
asked with gql, a GraphQL client nobody here wrote.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.httpx import HTTPXTransport
from peers import PacsfedServer
from peers.pacsfed import clean_install
from peers.ports import free_port

from pacsfed.demo.signer import DemoSigner

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pacsfed-fhir-connector"
if str(EXAMPLE / "tests") not in sys.path:
    sys.path.insert(0, str(EXAMPLE / "tests"))

from fhir_endpoint import MRN, FhirEndpoint  # noqa: E402
from forward_proxy import ForwardProxy  # noqa: E402

QUERY = """query($id: String!) {
  patientHistory(patient: {id: $id}) {
    complete
    exams {
      studyInstanceUid studyDate studyTime modalities description accessionNumber patientName
      numberOfSeries numberOfInstances locations { source { id } patientId }
    }
    sources { source { id kind } status }
  }
}"""


NISS = "urn:oid:2.16.56.1.2.3"
NATIONAL_QUERY = """query($nationalId: String!) {
  patientHistory(patient: {nationalId: $nationalId}) {
    exams { studyInstanceUid locations { source { id } patientId issuerOfPatientId matchedBy { kind issuer value } } }
    sources { source { id } status }
  }
}"""


@pytest.fixture(scope="module")
def fhir_install() -> Path:
    """pacsfed from source plus the FHIR example package, in their own clean virtualenv."""
    return clean_install(extra_packages=[EXAMPLE])


@pytest.fixture
def served(fhir_install: Path, pacsfed_server: Callable[..., PacsfedServer]) -> Callable[..., PacsfedServer]:
    """``pacsfed serve`` from the virtualenv with the plugin installed."""
    return functools.partial(pacsfed_server, install=fhir_install)


@pytest.fixture
def fhir() -> Iterator[FhirEndpoint]:
    endpoint = FhirEndpoint().start()
    patient = endpoint.add_patient(
        MRN, "MRN-7", "Lefèvre", ["Élodie"], "1975-11-30", "female", other_identifiers=[(NISS, "75113012345")]
    )
    endpoint.add_study(
        patient,
        "1.2.250.1.59.7.1",
        accession="ACC-701",
        started="2024-02-29T14:05:00+01:00",
        modalities=["MR"],
        description="IRM genou",
        series=4,
        instances=120,
    )
    endpoint.token = "fhir-token"
    yield endpoint
    endpoint.stop()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    started = ForwardProxy().start()
    yield started
    started.stop()


def ask(server: PacsfedServer, token: str, value: str, query: str = QUERY, key: str = "id") -> dict[str, Any]:
    transport = HTTPXTransport(
        url=server.graphql_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    with Client(transport=transport, fetch_schema_from_transport=False) as session:
        result: dict[str, Any] = session.execute(GraphQLRequest(query, variable_values={key: value}))
    return result["patientHistory"]


def fhir_source(source_id: str, url: str, **keys: Any) -> dict[str, Any]:
    auth = {"type": "bearer", "token": "fhir-token"}
    return {"id": source_id, "kind": "fhir", "base_url": url, "identifier_system": MRN, "auth": auth, **keys}


def test_a_fhir_source_answers_through_a_served_pacsfed(
    served: Callable[[dict[str, Any]], PacsfedServer],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    fhir: FhirEndpoint,
) -> None:
    server = served(serve_config([fhir_source("hospital-d", fhir.url)]))
    history = ask(server, signer.token(), "MRN-7")
    assert history["sources"] == [{"source": {"id": "hospital-d", "kind": "fhir"}, "status": "OK"}]
    assert history["complete"] is True
    assert history["exams"] == [
        {
            "studyInstanceUid": "1.2.250.1.59.7.1",
            "studyDate": "2024-02-29",
            "studyTime": "14:05:00",
            "modalities": ["MR"],
            "description": "IRM genou",
            "accessionNumber": "ACC-701",
            "patientName": "Lefèvre^Élodie",
            "numberOfSeries": 4,
            "numberOfInstances": 120,
            "locations": [{"source": {"id": "hospital-d"}, "patientId": "MRN-7"}],
        }
    ]
    assert [seen.path for seen in fhir.seen] == ["/fhir/ImagingStudy"]


def test_a_national_number_is_searched_in_its_system_and_found_among_the_other_ids(
    served: Callable[[dict[str, Any]], PacsfedServer],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    fhir: FhirEndpoint,
) -> None:
    source = fhir_source("hospital-d", fhir.url, issuer="HOSP-D", national_id_in="other_patient_ids")
    source["issuer_systems"] = {"NISS": NISS, "HOSP-D": MRN}
    server = served(serve_config([source], identity={"national_issuer": "NISS"}))
    history = ask(server, signer.token(), "75113012345", NATIONAL_QUERY, "nationalId")
    assert history["sources"] == [{"source": {"id": "hospital-d"}, "status": "OK"}]
    [exam] = history["exams"]
    assert exam["studyInstanceUid"] == "1.2.250.1.59.7.1"
    assert exam["locations"] == [
        {
            "source": {"id": "hospital-d"},
            "patientId": "MRN-7",
            "issuerOfPatientId": "HOSP-D",
            "matchedBy": {"kind": "NATIONAL_ID", "issuer": "NISS", "value": "75113012345"},
        }
    ]
    assert dict(fhir.seen[0].params)["patient.identifier"] == f"{NISS}|75113012345"


def test_a_proxied_fhir_source_goes_through_its_proxy_and_a_dead_proxy_is_unreachable(
    served: Callable[[dict[str, Any]], PacsfedServer],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    fhir: FhirEndpoint,
    proxy: ForwardProxy,
) -> None:
    sources = [
        fhir_source("via-proxy", fhir.url, proxy=proxy.url),
        fhir_source("dead-proxy", fhir.url, proxy=f"http://127.0.0.1:{free_port()}"),
    ]
    server = served(serve_config(sources))
    history = ask(server, signer.token(), "MRN-7")
    statuses = {s["source"]["id"]: s["status"] for s in history["sources"]}
    assert statuses == {"via-proxy": "OK", "dead-proxy": "UNREACHABLE"}
    assert history["complete"] is False
    assert [exam["studyInstanceUid"] for exam in history["exams"]] == ["1.2.250.1.59.7.1"]
    assert [line.split("?")[0] for line in proxy.forwarded] == [f"GET {fhir.url}/ImagingStudy"]
    assert len(fhir.seen) == 1


def test_an_unknown_key_of_a_fhir_source_is_refused_by_pacsfed_check(
    fhir_install: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pacsfed.yaml"
    source = {
        "id": "hospital-d",
        "kind": "fhir",
        "base_url": "http://127.0.0.1:1/fhir",
        "proxi": "http://p:3128",
    }
    config.write_text(json.dumps({"cache": {"backend": "memory"}, "sources": [source]}))
    result = subprocess.run(
        [str(fhir_install / "pacsfed"), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "sources.0.fhir.proxi" in result.stderr


def test_pacsfed_connectors_list_shows_the_fhir_kind_with_its_package_and_flags(fhir_install: Path) -> None:
    result = subprocess.run(
        [str(fhir_install / "pacsfed"), "connectors", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.split()[:1] == ["fhir"]]
    assert line.split()[1:3] == ["pacsfed-fhir-connector", "0.1.0"]
    assert "demographic_search=yes" in line.split()
    assert "issuer_of_patient_id=yes" in line.split()
