"""A third-party connector, pip-installed beside pacsfed, is configured with its own keys and queried."""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from peers import PacsfedServer
from peers.pacsfed import clean_install

from pacsfed.demo.signer import DemoSigner

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "pacsfed-example-connector"
QUERY = """query($id: String!) {
  patientHistory(patient: {id: $id}) { complete exams { studyInstanceUid studyDate description } sources { source { id } status } }
}"""


@pytest.fixture(scope="module")
def plugin_install() -> Path:
    """pacsfed from source plus the example connector package, in their own clean virtualenv."""
    return clean_install(extra_packages=[PLUGIN])


@pytest.fixture
def served(
    plugin_install: Path, pacsfed_server: Callable[..., PacsfedServer]
) -> Callable[..., PacsfedServer]:
    """``pacsfed serve`` from the virtualenv with the plugin installed."""
    return functools.partial(pacsfed_server, install=plugin_install)


def test_a_plugin_kind_with_its_own_keys_answers_through_a_served_pacsfed(
    served: Callable[[dict[str, Any]], PacsfedServer],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
) -> None:
    exam = {"patient_id": "EX-1", "study_instance_uid": "1.2.3.4.5", "description": "CT head"}
    exam["study_date"] = "20240105"
    source = {"id": "lab", "kind": "example", "greeting": "from the plugin", "exams": [exam]}
    server = served(serve_config([source]))
    body = {"query": QUERY, "variables": {"id": "EX-1"}}
    headers = {"authorization": f"Bearer {signer.token()}"}
    answer = httpx.post(server.graphql_url, json=body, headers=headers, timeout=30).json()
    assert "errors" not in answer, answer
    history = answer["data"]["patientHistory"]
    assert history["sources"] == [{"source": {"id": "lab"}, "status": "OK"}]
    assert history["exams"] == [
        {
            "studyInstanceUid": "1.2.3.4.5",
            "studyDate": "2024-01-05",
            "description": "from the plugin: CT head",
        }
    ]


def test_an_unknown_key_of_the_plugin_kind_is_refused_by_pacsfed_check(
    plugin_install: Path, tmp_path: Path
) -> None:
    config = tmp_path / "pacsfed.yaml"
    source = {"id": "lab", "kind": "example", "greetin": "typo"}
    config.write_text(json.dumps({"cache": {"backend": "memory"}, "sources": [source]}))
    result = subprocess.run(
        [str(plugin_install / "pacsfed"), "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "sources.0.example.greetin" in result.stderr
