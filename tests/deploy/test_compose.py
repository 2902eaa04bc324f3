"""deploy/compose/compose.yaml: valid Compose, the services and health checks a visitor needs, and the stack run without Docker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import yaml
from peers import ElasticsearchNode, OrthancPeer, free_port
from peers.process import ManagedProcess

from deploy.conftest import COMPOSE, ORTHANC_DICOM_PORT, container_path, service_url
from deploy.image import DOCKERFILE, REPO, image_run
from federation.settings import load_settings

SCHEMA = Path(__file__).with_name("compose-spec.json")
"""The Compose Specification's JSON schema (github.com/compose-spec/compose-spec, schema/compose-spec.json
at 170098ba, Apache-2.0), kept here: CI has no network to fetch it and no Docker to ask."""
SERVICES = {"elasticsearch", "orthanc-a", "orthanc-b", "seed", "pacsfed"}
CONFIG_PATH = "/etc/pacsfed/pacsfed.yaml"


def test_the_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]


def test_every_service_is_there_and_every_long_running_one_has_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        if name == "seed":
            assert service["restart"] == "no", "the seed job runs once"
            continue
        test = service["healthcheck"]["test"]
        assert test[0] in {"CMD", "CMD-SHELL"} and test[1:], name
    assert "/healthz" in " ".join(services["pacsfed"]["healthcheck"]["test"])
    assert "_cluster/health" in " ".join(services["elasticsearch"]["healthcheck"]["test"])
    assert services["elasticsearch"]["environment"]["discovery.type"] == "single-node"


def test_services_start_in_order_and_pacsfed_is_published(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["seed"]["depends_on"] == {
        "orthanc-a": {"condition": "service_healthy"},
        "orthanc-b": {"condition": "service_healthy"},
    }
    assert services["pacsfed"]["depends_on"] == {
        "elasticsearch": {"condition": "service_healthy"},
        "seed": {"condition": "service_completed_successfully"},
    }
    assert any(str(port).endswith(":8000:8000") for port in services["pacsfed"]["ports"])
    for name in ("seed", "pacsfed"):
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"]).resolve() == REPO
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE
        for volume in services[name]["volumes"]:
            if volume.startswith("."):
                assert (COMPOSE.parent / volume.split(":")[0]).is_file(), volume
    assert any(v.endswith(":/var/lib/pacsfed") for v in services["pacsfed"]["volumes"]), "the audit journal"


def test_pacsfeds_configuration_names_the_stacks_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    settings = load_settings(container_path(services["pacsfed"], CONFIG_PATH))
    assert settings.cache.backend == "elasticsearch"
    assert httpx.URL(settings.cache.url).host == "elasticsearch"
    dimse, dicomweb = settings.sources
    orthanc_a, orthanc_b = services["orthanc-a"]["environment"], services["orthanc-b"]["environment"]
    assert (dimse.kind, dimse.host, dimse.port, dimse.called_ae) == (  # type: ignore[union-attr]
        "dimse",
        "orthanc-a",
        ORTHANC_DICOM_PORT,
        orthanc_a["ORTHANC__DICOM_AET"],
    )
    assert dimse.calling_ae in orthanc_a["ORTHANC__DICOM_MODALITIES"]  # type: ignore[union-attr]
    assert httpx.URL(dicomweb.url).host == "orthanc-b"  # type: ignore[union-attr]
    assert orthanc_b["DICOM_WEB_PLUGIN_ENABLED"] == "true"


def _local_config(compose: dict[str, Any], hospitals: dict[str, OrthancPeer], es: ElasticsearchNode) -> str:
    """compose's pacsfed.yaml with the services' addresses replaced by the local peers'."""
    config = yaml.safe_load(container_path(compose["services"]["pacsfed"], CONFIG_PATH).read_text("utf-8"))
    config["cache"] |= {"url": es.url, "index_prefix": "deploy-compose"}
    for source in config["sources"]:
        if source["kind"] == "dimse":
            peer = hospitals[source["host"]]
            source |= {"host": peer.host, "port": peer.dicom_port}
        else:
            source["url"] = service_url(source["url"], hospitals)
    return json.dumps(config)


def test_the_stack_answers_a_visitor_without_docker(
    compose: dict[str, Any],
    compose_hospitals: dict[str, OrthancPeer],
    locked_install: Path,
    elasticsearch: ElasticsearchNode,
    tmp_path: Path,
) -> None:
    """The seeded hospitals (the seed job ran), and pacsfed run with the pacsfed service's command line."""
    port = free_port()
    run = image_run(tmp_path / "image", locked_install, port, compose["services"]["pacsfed"]["command"])
    (tmp_path / "image" / CONFIG_PATH.lstrip("/")).write_text(
        _local_config(compose, compose_hospitals, elasticsearch), encoding="utf-8"
    )
    process = ManagedProcess(
        "pacsfed (compose)", run.argv, log_path=tmp_path / "serve.log", cwd=run.cwd, env=run.env
    )
    process.start()
    base = f"http://127.0.0.1:{port}"
    try:
        process.wait_until(
            lambda: httpx.get(f"{base}/healthz").status_code == 200, timeout=90, what="/healthz"
        )
        page = httpx.get(f"{base}/", timeout=10)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        query = (
            '{ patientHistory(patient: {id: "DEMO-001"}) { exams { studyInstanceUid modalities description'
            " report { status mimeType } } sources { source { id } status } } }"
        )
        history = httpx.post(f"{base}/graphql", json={"query": query}, timeout=30).json()["data"][
            "patientHistory"
        ]
        assert {s["source"]["id"]: s["status"] for s in history["sources"]} == {
            "demo-chu-nord": "OK",
            "demo-az-sint-jan": "OK",
        }
        assert len(history["exams"]) == 4, "DEMO-001's four demo studies held by these two hospitals"
        modalities = {m for exam in history["exams"] for m in exam["modalities"]}
        assert modalities and all(len(m) >= 2 for m in modalities), modalities  # never split into letters
        echo = next(e for e in history["exams"] if e["description"] == "Echografie abdomen")
        assert set(echo["modalities"]) == {"US", "DOC"}
        assert echo["report"] == {"status": "AVAILABLE", "mimeType": "application/pdf"}  # the seeded PDF
    finally:
        process.stop()
