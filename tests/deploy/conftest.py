"""Fixtures of the deploy checks: pacsfed installed from the lock file as the image installs it, and the
compose stack's two Orthanc hospitals, seeded by the stack's own seed job.

- ``locked_install``: the ``bin`` folder of a virtualenv made as deploy/docker/Dockerfile's build
  stage makes /opt/pacsfed (``pip install --require-hashes --only-binary=:all: -r
  deploy/requirements.lock``, then pacsfed ``--no-deps``, then ``pip check``); cached like
  ``pacsfed_install``.
- ``compose``: deploy/compose/compose.yaml, parsed.
- ``compose_hospitals``: ``{"orthanc-a": OrthancPeer, "orthanc-b": OrthancPeer}`` configured as the
  compose services are (AE title, encoding), then seeded by running the ``seed`` service's
  entrypoint and command from ``locked_install``, with the services' addresses mapped to these peers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from peers import OrthancPeer, PeerError
from peers.pacsfed import clean_install

from deploy.image import REPO

LOCK = REPO / "deploy" / "requirements.lock"
COMPOSE = REPO / "deploy" / "compose" / "compose.yaml"
ORTHANC_HTTP_PORT, ORTHANC_DICOM_PORT = 8042, 4242
"""Orthanc's default ports: the compose services do not change them."""


@pytest.fixture(scope="session")
def locked_install() -> Path:
    try:
        return clean_install(lock_file=LOCK)
    except (PeerError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"pacsfed could not be installed from {LOCK.name}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def container_path(service: dict[str, Any], path: str) -> Path:
    """The host file a service's bind mount puts at ``path`` in its container."""
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if target == path and source.startswith("."):
            return (COMPOSE.parent / source).resolve()
    raise AssertionError(f"nothing is mounted at {path}")


def service_url(url: str, hospitals: dict[str, OrthancPeer]) -> str:
    """A compose service's URL (``http://orthanc-a:8042/...``) as the local peer's."""
    for name, peer in hospitals.items():
        url = url.replace(f"//{name}:{ORTHANC_HTTP_PORT}", f"//{peer.host}:{peer.http_port}")
    return url


@pytest.fixture(scope="session")
def compose_hospitals(
    compose: dict[str, Any], locked_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, OrthancPeer]]:
    hospitals: dict[str, OrthancPeer] = {}
    try:
        for name in ("orthanc-a", "orthanc-b"):
            env = compose["services"][name]["environment"]
            peer = OrthancPeer(
                env["ORTHANC__DICOM_AET"],
                tmp_path_factory.mktemp(name),
                name=name,
                default_encoding=env["ORTHANC__DEFAULT_ENCODING"],
            )
            hospitals[name] = peer
            peer.start()
        seed = compose["services"]["seed"]
        python, script = seed["entrypoint"]
        argv = [
            str(locked_install / python),
            str(container_path(seed, script)),
            *(service_url(arg, hospitals) for arg in seed["command"]),
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            pytest.fail(f"the seed job failed:\n{result.stdout}\n{result.stderr}", pytrace=False)
    except PeerError as exc:
        for peer in hospitals.values():
            peer.close()
        pytest.fail(f"the compose hospitals could not be started: {exc}", pytrace=False)
    yield hospitals
    for peer in hospitals.values():
        peer.close()
