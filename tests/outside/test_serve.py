"""`pacsfed serve` from a clean install, asked over plain HTTP by httpx as any EHR would."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from peers.ports import free_port

from federation.access.auth import new_api_key
from pacsfed.demo.signer import DemoSigner

QUERY = (
    "query($id: String!) { patientHistory(patient: {id: $id}) { complete sources { source { id } status } } }"
)


def test_a_served_pacsfed_answers_an_authenticated_query_and_refuses_an_anonymous_one(
    pacsfed_server: Callable[..., Any],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
    orthanc_c: Any,
) -> None:
    server = pacsfed_server(
        serve_config([{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}])
    )
    body = {"query": QUERY, "variables": {"id": "PA-001"}}
    assert httpx.post(server.graphql_url, json=body, timeout=10).status_code == 401
    headers = {"authorization": f"Bearer {signer.token()}"}
    answer = httpx.post(server.graphql_url, json=body, headers=headers, timeout=30).json()
    assert "errors" not in answer, answer
    assert answer["data"]["patientHistory"]["sources"] == [{"source": {"id": "hosp-c"}, "status": "OK"}]


def test_a_served_pacsfed_with_api_keys_only_answers_an_ehr_s_service_account(
    pacsfed_server: Callable[..., Any], orthanc_c: Any
) -> None:
    key, digest = new_api_key("ehr-a")
    config = {
        "cache": {"backend": "memory"},
        "sources": [{"id": "hosp-c", "kind": "dicomweb", "url": orthanc_c.dicomweb_url}],
        "auth": {
            "mode": "api_key",
            "api_keys": [{"id": "ehr-a", "sha256": digest, "scopes": ["history:read"]}],
        },
    }
    server = pacsfed_server(config)
    body = {"query": QUERY, "variables": {"id": "PA-001"}}
    assert httpx.post(server.graphql_url, json=body, timeout=10).status_code == 401
    answer = httpx.post(server.graphql_url, json=body, headers={"authorization": f"ApiKey {key}"}, timeout=30)
    assert answer.json()["data"]["patientHistory"]["sources"] == [
        {"source": {"id": "hosp-c"}, "status": "OK"}
    ]


def test_an_unreadable_signing_key_is_a_configuration_error_with_exit_code_2(
    pacsfed_install: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-key.pem"
    config = tmp_path / "pacsfed.yaml"
    config.write_text(
        json.dumps(
            {
                "cache": {"backend": "memory"},
                "auth": {"mode": "jwt", "issuer": "i", "audience": "a", "public_key_file": str(missing)},
                "audit": {"journal_dir": str(tmp_path / "audit")},
            }
        )
    )
    result = subprocess.run(
        [str(pacsfed_install / "pacsfed"), "serve", "--config", str(config), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "auth.public_key_file: cannot be read" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_demo_on_a_busy_port_says_so_before_any_banner(pacsfed_install: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            [str(pacsfed_install / "pacsfed"), "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "token" not in result.stdout  # no fresh token for a demo that is not the one answering


def test_a_taken_dicom_facade_port_is_a_configuration_error_with_exit_code_2(
    pacsfed_install: Path, tmp_path: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        dicom_port = busy.getsockname()[1]
        config = tmp_path / "pacsfed.yaml"
        config.write_text(
            json.dumps(
                {
                    "cache": {"backend": "memory"},
                    "auth": {"mode": "api_key", "api_keys": [{"id": "k", "sha256": new_api_key("k")[1]}]},
                    "audit": {"journal_dir": str(tmp_path / "audit")},
                    "dicom_facade": {"port": dicom_port, "allowed_calling_aes": ["FINDSCU"]},
                }
            )
        )
        result = subprocess.run(
            [str(pacsfed_install / "pacsfed"), "serve", "--config", str(config), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert f"dicom_facade: cannot listen on 127.0.0.1:{dicom_port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_version_prints_the_installed_version(pacsfed_install: Path) -> None:
    result = subprocess.run(
        [str(pacsfed_install / "pacsfed"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    installed = subprocess.run(
        [
            str(pacsfed_install / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('pacsfed'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert (result.returncode, result.stdout) == (0, f"pacsfed {installed}\n"), result.stderr
