"""Installed connector kinds as an operator sees them: ``pacsfed connectors list``, ``connectors.allow``, start-up errors.

A clean install holds pacsfed, the example plugin and a package of faulty plugins: ``broken``
(its module does not exist) and ``picky`` (refuses an odd ``shelf`` when built).
"""

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

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
QUERY = "query($id: String!) { patientHistory(patient: {id: $id}) { exams { studyInstanceUid } sources { status } } }"


@pytest.fixture(scope="module")
def kinds_install() -> Path:
    """pacsfed from source plus the example and the faulty plugin packages, in a clean virtualenv."""
    return clean_install(
        extra_packages=[PLUGINS / "pacsfed-example-connector", PLUGINS / "pacsfed-faulty-connectors"]
    )


def pacsfed(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "pacsfed"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def serve_once(bin_dir: Path, tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``pacsfed serve`` on a config expected to be refused before serving."""
    config.setdefault("audit", {"journal_dir": str(tmp_path / "audit")})
    path = tmp_path / "pacsfed.yaml"
    path.write_text(json.dumps(config))
    return pacsfed(bin_dir, "serve", "--config", str(path), "--port", "1")


def lines_by_kind(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line.strip()}


def test_connectors_list_prints_each_kind_with_its_package_version_and_flags(
    kinds_install: Path, tmp_path: Path
) -> None:
    result = pacsfed(kinds_install, "connectors", "list")
    assert result.returncode == 1, result.stderr  # one kind fails to load
    lines = lines_by_kind(result.stdout)
    assert sorted(lines) == ["broken", "dicomweb", "dimse", "example", "picky"]
    assert len(result.stdout.splitlines()) == 5
    for builtin in ("dimse", "dicomweb"):
        assert lines[builtin].split()[1:3] == ["pacsfed", "0.1.0"]
        assert "demographic_search=yes" in lines[builtin]
        assert "issuer_of_patient_id=yes" in lines[builtin]
        assert "series_query=yes" in lines[builtin]
        assert "study_keys=yes" in lines[builtin]
    assert lines["example"].split()[1:3] == ["pacsfed-example-connector", "0.1.0"]
    assert "demographic_search=no" in lines["example"]
    assert lines["picky"].split()[1:3] == ["pacsfed-faulty-connectors", "0.2.0"]
    assert "series_query=yes" in lines["picky"]
    assert "FAILED" in lines["broken"] and "ModuleNotFoundError" in lines["broken"]
    assert "Traceback" not in result.stderr

    config = tmp_path / "allow.yaml"
    config.write_text(json.dumps({"connectors": {"allow": ["example", "dimse"]}}))
    limited = pacsfed(kinds_install, "connectors", "list", "--config", str(config), "--json")
    assert limited.returncode == 0, limited.stdout + limited.stderr
    listed = {kind["kind"]: kind for kind in json.loads(limited.stdout)}
    assert not listed["broken"]["allowed"] and listed["broken"]["error"] is None
    assert listed["dimse"]["allowed"] and listed["dimse"]["capabilities"]["demographic_search"] is True


def test_a_plugin_that_fails_to_import_stops_serve_at_start_up(kinds_install: Path, tmp_path: Path) -> None:
    result = serve_once(kinds_install, tmp_path, {"cache": {"backend": "memory"}})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "connector plugin 'broken' (package pacsfed-faulty-connectors) failed to load" in result.stderr
    assert "ModuleNotFoundError" in result.stderr
    assert "Traceback" not in result.stderr


def test_allow_refuses_a_source_of_a_kind_it_leaves_out(kinds_install: Path, tmp_path: Path) -> None:
    source = {"id": "hosp", "kind": "dimse", "host": "127.0.0.1", "port": 104, "called_ae": "X"}
    config = {"cache": {"backend": "memory"}, "connectors": {"allow": ["example"]}, "sources": [source]}
    result = serve_once(kinds_install, tmp_path, config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "sources.0: kind 'dimse' is not allowed by connectors.allow (allowed: 'example')" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_plugin_refusing_its_settings_stops_serve_at_start_up_naming_the_source(
    kinds_install: Path, tmp_path: Path, serve_config: Callable[..., dict[str, Any]]
) -> None:
    config = serve_config([{"id": "odd", "kind": "picky", "shelf": 3}], connectors={"allow": ["picky"]})
    result = serve_once(kinds_install, tmp_path, config)
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        "source 'odd' (kind 'picky'): the connector cannot be built (ValueError: the shelf must be even)"
        in (result.stderr)
    )
    assert "Traceback" not in result.stderr

    typo = serve_config([{"id": "odd", "kind": "picky", "shelve": 4}], connectors={"allow": ["picky"]})
    result = serve_once(kinds_install, tmp_path, typo)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "sources.0.picky.shelve: Extra inputs are not permitted" in result.stderr


@pytest.fixture
def served(kinds_install: Path, pacsfed_server: Callable[..., PacsfedServer]) -> Callable[..., PacsfedServer]:
    """``pacsfed serve`` from the virtualenv with the plugin installed."""
    return functools.partial(pacsfed_server, install=kinds_install)


def test_with_allow_a_broken_plugin_installed_beside_is_never_loaded(
    served: Callable[[dict[str, Any]], PacsfedServer],
    serve_config: Callable[..., dict[str, Any]],
    signer: DemoSigner,
) -> None:
    exam = {"patient_id": "EX-1", "study_instance_uid": "1.2.3.4.5", "description": "CT head"}
    source = {"id": "lab", "kind": "example", "exams": [exam]}
    server = served(serve_config([source], connectors={"allow": ["example", "picky"]}))
    body = {"query": QUERY, "variables": {"id": "EX-1"}}
    answer = httpx.post(
        server.graphql_url, json=body, headers={"authorization": f"Bearer {signer.token()}"}, timeout=30
    ).json()
    assert answer == {
        "data": {
            "patientHistory": {"exams": [{"studyInstanceUid": "1.2.3.4.5"}], "sources": [{"status": "OK"}]}
        }
    }
    assert "ModuleNotFoundError" not in server.log_text()
