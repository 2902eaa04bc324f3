"""Session-wide fixtures: the real peers of the integration tests, started on demand.

Fixtures (all session-scoped; a peer starts only when a test asks for it):

- ``seed``: the catalogue (``peers.dicomdata.CATALOGUE``): which study is on which peer.
- ``dicom_files_dir``: a folder holding every seeded instance, one sub-folder per study.
- ``dicom_files``: study key -> list of its files in ``dicom_files_dir``.
- ``orthanc_a`` (AET HOSPA), ``orthanc_c`` (AET HOSPC): ``peers.OrthancPeer``, seeded.
  ``orthanc_a`` keeps Orthanc's default ``DefaultEncoding`` (Latin1): its C-FIND and QIDO
  answers are Latin-1 whatever the query asks, and lose what Latin-1 cannot carry (Greek,
  Japanese). ``orthanc_c`` runs with ``DefaultEncoding: Utf8`` and answers every script.
- ``dcmqrscp_b`` (AET HOSPB): ``peers.DcmqrscpPeer``, seeded.
- ``three_hospitals``: the three seeded hospitals as pacsfed ``sources`` (hosp-a: orthanc_a over
  DIMSE, hosp-b: dcmqrscp_b, hosp-c: orthanc_c over DICOMweb); read only, copy to change.
- ``elasticsearch``: ``peers.ElasticsearchNode`` (ours, or the node at ``ELASTICSEARCH_URL``).
  Nothing stops or freezes it: the tests after, on the same worker, rely on it.
- ``expendable_elasticsearch`` (function scope): a node of this worker's own for the tests that
  stop or freeze one (never ``ELASTICSEARCH_URL``'s); at the start of each test it answers and
  makes a new index (restarted if it cannot within 30 s).
- ``pacsfed_install``: the ``bin`` folder of a clean install of pacsfed (own virtualenv, no extras).
- ``pacsfed_server`` (function scope): a factory, ``pacsfed_server(config, insecure_dev=False)`` or
  ``pacsfed_server(demo=True)``, giving a started ``peers.PacsfedServer`` of that install, stopped
  after the test.
- ``js_clients``: ``tests/outside/js`` with its npm packages installed (``npm ci``): the
  reference JavaScript clients (graphql-ws, graphql-http) for tests that connect as outsiders.

A peer that is missing or does not start fails the test that needs it; nothing is
ever skipped. A test that stops a peer should bring it back (``peer.start()`` or
``peer.ensure_running()`` in a ``finally``) for the tests after it; one that stops or freezes
Elasticsearch takes ``expendable_elasticsearch``.

Nothing here imports the application packages.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

_TESTS = Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:  # "peers" is importable under every --import-mode
    sys.path.insert(0, str(_TESTS))

from peers import DcmqrscpPeer, ElasticsearchNode, OrthancPeer, PacsfedServer, PeerError  # noqa: E402
from peers.dicomdata import (  # noqa: E402
    CATALOGUE,
    DCMQRSCP_B,
    ORTHANC_A,
    ORTHANC_C,
    PEER_AETS,
    Catalogue,
    files_for_peer,
    write_catalogue,
)
from peers.hospitals import hospital_sources  # noqa: E402
from peers.pacsfed import clean_install  # noqa: E402
from peers.tiny_disk import TinyDisk, tiny_disk  # noqa: E402

P = TypeVar("P", OrthancPeer, DcmqrscpPeer, ElasticsearchNode, PacsfedServer)


def _started(peer: P, what: str, seed: Callable[[P], None] | None = None) -> P:
    """Start (and seed) *peer*, or fail the requesting test with the reason."""
    try:
        peer.start()
        if seed is not None:
            seed(peer)
    except (PeerError, OSError) as exc:
        reason = str(exc)
    else:
        return peer
    peer.close()
    pytest.fail(f"{what} could not be started: {reason}", pytrace=False)


@pytest.fixture(scope="session")
def seed() -> Catalogue:
    return CATALOGUE


@pytest.fixture(scope="session")
def dicom_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return write_catalogue(tmp_path_factory.mktemp("dicom"))


@pytest.fixture(scope="session")
def dicom_files_dir(dicom_files: dict[str, list[Path]]) -> Path:
    first = next(iter(dicom_files.values()))[0]
    return first.parent.parent


ORTHANC_DEFAULT_ENCODINGS: dict[str, str | None] = {ORTHANC_A: None, ORTHANC_C: "Utf8"}
"""``DefaultEncoding`` of each seeded Orthanc (None: Orthanc's own default, Latin1)."""


def _orthanc(
    name: str, tmp_path_factory: pytest.TempPathFactory, files: dict[str, list[Path]]
) -> Iterator[OrthancPeer]:
    peer = OrthancPeer(
        PEER_AETS[name], tmp_path_factory.mktemp(name), default_encoding=ORTHANC_DEFAULT_ENCODINGS[name]
    )

    def load(p: OrthancPeer) -> None:
        p.upload(files_for_peer(files, name))
        stored, expected = p.study_uids(), CATALOGUE.study_uids(name)
        if stored != expected:
            raise PeerError(f"{name} holds {sorted(stored)} after seeding, not {sorted(expected)}")

    yield _started(peer, f"Orthanc {name} ({peer.aet})", load)
    peer.close()


@pytest.fixture(scope="session")
def orthanc_a(
    tmp_path_factory: pytest.TempPathFactory, dicom_files: dict[str, list[Path]]
) -> Iterator[OrthancPeer]:
    yield from _orthanc(ORTHANC_A, tmp_path_factory, dicom_files)


@pytest.fixture(scope="session")
def orthanc_c(
    tmp_path_factory: pytest.TempPathFactory, dicom_files: dict[str, list[Path]]
) -> Iterator[OrthancPeer]:
    yield from _orthanc(ORTHANC_C, tmp_path_factory, dicom_files)


@pytest.fixture(scope="session")
def dcmqrscp_b(
    tmp_path_factory: pytest.TempPathFactory, dicom_files: dict[str, list[Path]]
) -> Iterator[DcmqrscpPeer]:
    peer = DcmqrscpPeer(PEER_AETS[DCMQRSCP_B], tmp_path_factory.mktemp(DCMQRSCP_B))
    yield _started(
        peer,
        f"dcmqrscp {DCMQRSCP_B} ({peer.aet})",
        lambda p: p.load(files_for_peer(dicom_files, DCMQRSCP_B)),
    )
    peer.close()


@pytest.fixture(scope="session")
def elasticsearch() -> Iterator[ElasticsearchNode]:
    # Its work folder is made under /tmp, not pytest's 0700 tmp root: the pacsfed-es
    # user must reach it when the tests run as root.
    node = ElasticsearchNode()
    yield _started(node, "Elasticsearch")
    node.close()


@pytest.fixture(scope="session")
def spare_elasticsearch() -> Iterator[ElasticsearchNode]:
    """This worker's second node, started when a test first stops or freezes one."""
    node = ElasticsearchNode(from_environment=False)
    yield _started(node, "Elasticsearch (the node tests stop)")
    node.close()


@pytest.fixture
def expendable_elasticsearch(spare_elasticsearch: ElasticsearchNode) -> ElasticsearchNode:
    """A node the test may stop or freeze: not the shared ``elasticsearch``, and running when it starts."""
    try:
        spare_elasticsearch.ensure_answering()  # a test before may have left it down, or hung after a thaw
    except (PeerError, OSError) as exc:
        pytest.fail(f"Elasticsearch (the node tests stop) could not be restarted: {exc}", pytrace=False)
    return spare_elasticsearch


@pytest.fixture(scope="session")
def three_hospitals(
    orthanc_a: OrthancPeer, dcmqrscp_b: DcmqrscpPeer, orthanc_c: OrthancPeer
) -> list[dict[str, Any]]:
    """The three seeded test hospitals as pacsfed sources (shared: copy a source before changing it)."""
    return hospital_sources(orthanc_a, dcmqrscp_b, orthanc_c)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    """A real tmpfs of 1 MiB mounted for the test (root only): ``fill()`` it for ENOSPC."""
    with tiny_disk(tmp_path / "disk") as disk:
        yield disk


@pytest.fixture(scope="session")
def pacsfed_install() -> Path:
    try:
        return clean_install()
    except (PeerError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"pacsfed could not be installed into a clean virtualenv: {exc}", pytrace=False)


@pytest.fixture
def pacsfed_server(
    pacsfed_install: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PacsfedServer]]:
    started: list[PacsfedServer] = []

    def start(
        config: dict[str, Any] | None = None,
        *,
        demo: bool = False,
        insecure_dev: bool = False,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        install: Path | None = None,
        port: int | None = None,
    ) -> PacsfedServer:
        """A started ``pacsfed serve`` (or ``demo``), from ``install`` (a clean install's bin folder, plugins and all) or the plain one."""
        server = PacsfedServer(
            install or pacsfed_install,
            tmp_path_factory.mktemp("pacsfed-serve"),
            config,
            demo=demo,
            insecure_dev=insecure_dev,
            extra_args=extra_args,
            env=env,
            port=port,
        )
        started.append(server)
        return _started(server, str(server))

    yield start
    for server in started:
        server.stop()


_JS_CLIENTS = _TESTS / "outside" / "js"


@pytest.fixture(scope="session")
def js_clients() -> Path:
    """The npm clients, installed exactly as package-lock.json says (once per lock file)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail(
            "node and npm are needed for the outside-client tests (Debian: nodejs, npm)", pytrace=False
        )
    lock = (_JS_CLIENTS / "package-lock.json").read_bytes()
    stamp = _JS_CLIENTS / "node_modules" / f".installed-{hashlib.sha256(lock).hexdigest()[:16]}"
    with _exclusive(_JS_CLIENTS / ".npm-ci.lock"):  # test worker processes install it once, one at a time
        _install_js_clients(npm, stamp)
    return _JS_CLIENTS


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (made if absent) across processes."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _install_js_clients(npm: str, stamp: Path) -> None:
    """``npm ci`` unless this lock file's packages are already in node_modules."""
    if not stamp.is_file():
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=_JS_CLIENTS,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {_JS_CLIENTS}:\n{result.stdout}\n{result.stderr}", pytrace=False)
        stamp.touch()


# --- log hygiene: every log record of the session is kept and searched for patient data ---------

import logging  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

from log_hygiene import (  # noqa: E402
    LOG_HYGIENE_DIR_ENV,
    LOG_HYGIENE_MARK,
    SessionLogCapture,
    read_worker_reports,
    write_worker_report,
)

_HYGIENE_RESULT = pytest.StashKey[tuple[list[str], str]]()


def _xdist_worker(config: pytest.Config) -> str | None:
    """This process's pytest-xdist worker id (``gw0``…), None outside a worker."""
    workerinput = getattr(config, "workerinput", None)
    return None if workerinput is None else str(workerinput["workerid"])


def _xdist_workers(config: pytest.Config) -> int:
    """How many worker processes this (controller) process spreads the tests over; 0 without xdist."""
    if _xdist_worker(config) is not None or not config.pluginmanager.hasplugin("xdist"):
        return 0
    return int(config.getoption("numprocesses", 0) or 0)


def pytest_configure(config: pytest.Config) -> None:
    """Keep every log record (INFO and up; DEBUG for pacsfed's own loggers) for the hygiene check."""
    capture = SessionLogCapture.install()
    config.stash[SessionLogCapture.KEY] = capture
    config.addinivalue_line("markers", f"{LOG_HYGIENE_MARK}: runs last, over the whole session's logs")
    if _xdist_workers(config):  # the workers, started after this, inherit where to report
        os.environ[LOG_HYGIENE_DIR_ENV] = tempfile.mkdtemp(prefix="pacsfed-log-hygiene-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The log hygiene test runs after everything else; in an xdist worker, the controller checks instead."""
    last = [item for item in items if item.get_closest_marker(LOG_HYGIENE_MARK)]
    items[:] = [item for item in items if not item.get_closest_marker(LOG_HYGIENE_MARK)]
    if _xdist_worker(config) is None:
        items.extend(last)
    elif last:
        config.hook.pytest_deselected(items=last)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Workers report their logs' leaks; the controller fails the run on any (or on a missing report)."""
    config = session.config
    folder = os.environ.get(LOG_HYGIENE_DIR_ENV)
    worker = _xdist_worker(config)
    if folder is None:
        return
    if worker is not None:
        write_worker_report(config.stash[SessionLogCapture.KEY], Path(folder), worker)
        return
    workers = _xdist_workers(config)
    if not workers:
        return
    problems, summary = read_worker_reports(Path(folder), workers)
    config.stash[_HYGIENE_RESULT] = (problems, summary)
    shutil.rmtree(folder, ignore_errors=True)
    if problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say what the controller's log hygiene check searched and found."""
    result = config.stash.get(_HYGIENE_RESULT, None)
    if result is None:
        return
    problems, summary = result
    terminalreporter.write_line(summary)
    if problems:
        terminalreporter.write_line("LOG HYGIENE FAILED: patient data in logs:", red=True, bold=True)
        for line in problems:
            terminalreporter.write_line(f"  {line}", red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    capture = config.stash.get(SessionLogCapture.KEY, None)
    if capture is not None:
        logging.getLogger().removeHandler(capture)
