"""A test hospital for WADO-RS: an Orthanc that asks for credentials, holding multi-frame images (``peers.wadodata``).

Import the fixtures into a test module (``from wado_fixtures import ...``): each module gets its
own peer, and the session's seeded hospitals keep their catalogue unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers.orthanc import OrthancPeer
from peers.process import PeerError
from peers.wadodata import WadoStudy, write_wado_study

ORTHANC_USER = ("pacsfed-wado", "origin-secret-7Hq")
"""The origin's credentials: configured in pacsfed, never known to pacsfed's callers."""


@pytest.fixture(scope="module")
def wado_study(tmp_path_factory: pytest.TempPathFactory) -> WadoStudy:
    return write_wado_study(tmp_path_factory.mktemp("wado"))


@pytest.fixture(scope="module")
def orthanc_wado(tmp_path_factory: pytest.TempPathFactory, wado_study: WadoStudy) -> Iterator[OrthancPeer]:
    """Orthanc (DICOMweb, HTTP Basic authentication on) holding :func:`wado_study`."""
    user, password = ORTHANC_USER
    config = {"AuthenticationEnabled": True, "RegisteredUsers": {user: password}}
    peer = OrthancPeer("HOSPW", tmp_path_factory.mktemp("orthanc-wado"), extra_config=config)
    try:
        peer.start()
        peer.upload(wado_study.paths)
        if peer.study_uids() != {wado_study.study_uid}:
            raise PeerError("HOSPW does not hold the WADO study after seeding")
    except (PeerError, OSError) as exc:
        peer.close()
        pytest.fail(f"Orthanc HOSPW could not be started: {exc}", pytrace=False)
    yield peer
    peer.close()
