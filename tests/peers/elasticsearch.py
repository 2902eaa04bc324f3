"""A single-node Elasticsearch for the cache tests.

If ``ELASTICSEARCH_URL`` is set, that node is used as it is (``owned`` is False,
it is never started or stopped here). Otherwise the Elasticsearch integration-test
distribution (Maven Central ``org.elasticsearch.distribution.integ-test-zip:
elasticsearch``, zip) is run from the directory ``scripts/install-elasticsearch``
unpacks it to:

- zip: ``$PACSFED_ES_ZIP``, else ``$PACSFED_ES_CACHE/elasticsearch-VERSION.zip``
  (``PACSFED_ES_CACHE`` defaults to ``~/.cache/pacsfed/es``);
- distribution: ``$PACSFED_ES_HOME``, else ``/opt/pacsfed/es/elasticsearch-VERSION``
  when running as root (the ES user must be able to reach it, and ``/root`` is
  0700), else ``$PACSFED_ES_CACHE/elasticsearch-VERSION``.

Elasticsearch refuses to run as root, so as root it runs as the system user
``pacsfed-es`` (made if missing) through ``setpriv``. Each node gets a fresh work
directory under the system temp dir (``/tmp`` is world-traversable; pytest's
``/tmp/pytest-of-root`` is not) owned by that user, holding ``data``, ``logs``,
``tmp`` and a private copy of ``config`` (``ES_PATH_CONF``): Elasticsearch writes
its keystore into its config directory at first start, and this keeps the shared
distribution untouched.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import httpx

from .ports import LOOPBACK, free_port, wait_port_closed
from .process import ManagedProcess, PeerError, require_binary

ES_VERSION = "9.5.0"
ES_USER = "pacsfed-es"
MIN_JAVA = 21
JVM_DIRS = (Path("/usr/lib/jvm"),)
HEAP = "-Xms512m -Xmx512m"
INSTALL_HINT = "run scripts/install-elasticsearch (or set ELASTICSEARCH_URL)"


def cache_dir() -> Path:
    return Path(os.environ.get("PACSFED_ES_CACHE") or Path.home() / ".cache/pacsfed/es")


def zip_path() -> Path:
    return Path(os.environ.get("PACSFED_ES_ZIP") or cache_dir() / f"elasticsearch-{ES_VERSION}.zip")


def distribution_dir() -> Path:
    if os.environ.get("PACSFED_ES_HOME"):
        return Path(os.environ["PACSFED_ES_HOME"])
    if os.geteuid() == 0:
        return Path(f"/opt/pacsfed/es/elasticsearch-{ES_VERSION}")
    return cache_dir() / f"elasticsearch-{ES_VERSION}"


# -- Java ------------------------------------------------------------------------------
def java_major(java_home: Path) -> int | None:
    """Feature version of the JDK at *java_home* (from its ``release`` file), or None."""
    if not (java_home / "bin" / "java").is_file():
        return None
    with contextlib.suppress(OSError):
        text = (java_home / "release").read_text(encoding="utf-8", errors="replace")
        match = re.search(r'^JAVA_VERSION="([0-9]+)(?:\.([0-9]+))?', text, re.MULTILINE)
        if match:
            major = int(match.group(1))
            return int(match.group(2) or 0) if major == 1 else major
    return None


def find_java_home() -> Path:
    """``$ES_JAVA_HOME``, else the newest JDK >= 21 under /usr/lib/jvm, else ``$JAVA_HOME``."""
    explicit = os.environ.get("ES_JAVA_HOME")
    if explicit:
        major = java_major(Path(explicit))
        if major is None or major < MIN_JAVA:
            raise PeerError(f"ES_JAVA_HOME={explicit} is not a JDK >= {MIN_JAVA} (found {major})")
        return Path(explicit)
    candidates: list[tuple[int, bool, str, Path]] = []
    for root in JVM_DIRS:
        if not root.is_dir():
            continue
        for home in root.iterdir():
            if home.is_symlink():
                continue
            major = java_major(home)
            if major is not None and major >= MIN_JAVA:
                candidates.append((major, "temurin" in home.name, home.name, home))
    if candidates:
        return max(candidates)[3]
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (java_major(Path(java_home)) or 0) >= MIN_JAVA:
        return Path(java_home)
    raise PeerError(
        f"no JDK >= {MIN_JAVA} found (looked in ES_JAVA_HOME, {', '.join(map(str, JVM_DIRS))}, "
        "JAVA_HOME); Elasticsearch 9 needs one"
    )


# -- distribution and user --------------------------------------------------------------
def ensure_user() -> tuple[int, int]:
    """Uid and gid of ``pacsfed-es``, made as a system user if missing (root only)."""
    try:
        entry = pwd.getpwnam(ES_USER)
    except KeyError:
        useradd = require_binary("useradd", "install the Debian package passwd")
        result = subprocess.run(
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                ES_USER,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode not in (0, 9):  # 9: already exists (raced)
            raise PeerError(f"useradd {ES_USER} failed: {result.stderr.strip()}") from None
        entry = pwd.getpwnam(ES_USER)
    return entry.pw_uid, entry.pw_gid


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _unzip(archive: Path, target_parent: Path) -> None:
    """Unzip keeping the Unix modes (``zipfile`` alone drops the executable bits)."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            extracted = Path(zf.extract(info, target_parent))
            mode = (info.external_attr >> 16) & 0o7777
            if mode and not info.is_dir():
                extracted.chmod(mode)
            elif info.is_dir():
                extracted.chmod(0o755)


def ensure_distribution(owner: tuple[int, int] | None) -> Path:
    """The unpacked distribution (unpacking the cached zip once if needed)."""
    home = distribution_dir()
    if not (home / "bin" / "elasticsearch").is_file():
        archive = zip_path()
        if not archive.is_file():
            raise PeerError(f"Elasticsearch {ES_VERSION} not found at {home} nor {archive}: {INSTALL_HINT}")
        home.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=home.parent))
        try:
            _unzip(archive, staging)
            unpacked = staging / f"elasticsearch-{ES_VERSION}"
            if not unpacked.is_dir():
                raise PeerError(f"{archive} has no elasticsearch-{ES_VERSION}/ folder")
            if owner is not None:
                chown_tree(unpacked, *owner)
            unpacked.rename(home)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if owner is not None and home.stat().st_uid != owner[0]:
        chown_tree(home, *owner)
    return home


def _check_reachable(path: Path, uid: int) -> None:
    """Fail clearly when a parent folder stops user *uid* from reaching *path*."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_uid == uid:
            continue
        if not st.st_mode & stat.S_IXOTH:
            raise PeerError(
                f"{ES_USER} cannot reach {path}: {folder} is mode {stat.filemode(st.st_mode)}; "
                "set PACSFED_ES_HOME to a folder it can traverse"
            )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return f"--- {path}:\n" + "\n".join(text.splitlines()[-lines:])


class ElasticsearchNode:
    """A single-node Elasticsearch: ours (``owned``) or the one at ``ELASTICSEARCH_URL``.

    ``stop()`` then ``start()`` brings an owned node back on the same port with the
    same data.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        workdir: Path | None = None,
        start_timeout: float = 120.0,
        from_environment: bool = True,
    ) -> None:
        """``from_environment=False`` ignores ``ELASTICSEARCH_URL``: a node of its own, started here."""
        external = url or (os.environ.get("ELASTICSEARCH_URL") if from_environment else None)
        self.owned = not external
        self.start_timeout = start_timeout
        self.startup_seconds: float | None = None
        """How long the last ``start()`` took until the cluster was yellow."""
        self._process: ManagedProcess | None = None
        self._owns_workdir = workdir is None
        self._workdir = workdir
        if external:
            self.url = external.rstrip("/")
            self.http_port = httpx.URL(self.url).port or 9200
            return
        self.http_port = free_port()
        self.transport_port = free_port()
        self.url = f"http://{LOOPBACK}:{self.http_port}"
        self.cluster_name = f"pacsfed-test-{os.getpid()}-{self.http_port}"

    @property
    def running(self) -> bool:
        if not self.owned:
            return self._healthy()
        return self._process is not None and self._process.running

    @property
    def workdir(self) -> Path | None:
        return self._workdir

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / "elasticsearch.out"

    def _prepare(self) -> tuple[list[str], dict[str, str], Path]:
        owner = ensure_user() if os.geteuid() == 0 else None
        home = ensure_distribution(owner)
        java_home = find_java_home()
        if owner is not None:
            _check_reachable(home, owner[0])
            _check_reachable(java_home, owner[0])
        if self._workdir is None:
            base = Path(os.environ.get("PACSFED_ES_TMP") or tempfile.gettempdir())
            self._workdir = Path(tempfile.mkdtemp(prefix="pacsfed-es-", dir=base))
        work = self._workdir
        for sub in ("data", "logs", "tmp"):
            (work / sub).mkdir(parents=True, exist_ok=True)
        if not (work / "config").is_dir():
            shutil.copytree(home / "config", work / "config")
        if owner is not None:
            chown_tree(work, *owner)
            _check_reachable(work, owner[0])
        settings = {
            "cluster.name": self.cluster_name,
            "node.name": "pacsfed-test",
            "discovery.type": "single-node",
            "network.host": LOOPBACK,
            "http.port": str(self.http_port),
            "transport.port": str(self.transport_port),
            "xpack.security.enabled": "false",
            "path.data": str(work / "data"),
            "path.logs": str(work / "logs"),
            "cluster.routing.allocation.disk.threshold_enabled": "false",
        }
        argv = [str(home / "bin" / "elasticsearch"), *(f"-E{k}={v}" for k, v in settings.items())]
        if owner is not None:
            setpriv = require_binary("setpriv", "install the Debian package util-linux")
            argv = [
                setpriv,
                f"--reuid={owner[0]}",
                f"--regid={owner[1]}",
                "--init-groups",
                "--pdeathsig=TERM",
                "--",
                *argv,
            ]
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("JAVA_HOME", "ES_HOME", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS")
        }
        env.update(
            ES_JAVA_HOME=str(java_home),
            ES_JAVA_OPTS=os.environ.get("PACSFED_ES_JAVA_OPTS", HEAP),
            ES_PATH_CONF=str(work / "config"),
            ES_TMPDIR=str(work / "tmp"),
            HOME=str(work),
            LC_ALL="C.UTF-8",
        )
        if owner is not None:
            env.update(USER=ES_USER, LOGNAME=ES_USER)
        return argv, env, work

    def start(self) -> float:
        """Start the node (if owned) and wait for a yellow cluster; return the seconds taken."""
        if not self.owned:
            self.startup_seconds = self._wait_external()
            return self.startup_seconds
        if self._process is not None and self._process.running:
            return 0.0
        argv, env, work = self._prepare()
        self._process = ManagedProcess(
            "elasticsearch", argv, log_path=work / "elasticsearch.out", cwd=work, env=env
        )
        self._process.start()
        self.startup_seconds = self._process.wait_until(
            self._healthy,
            timeout=self.start_timeout,
            what="yellow",
            interval=0.5,
            extra_log=lambda: _tail(work / "logs" / f"{self.cluster_name}.log"),
        )
        return self.startup_seconds

    def _healthy(self) -> bool:
        try:
            response = httpx.get(
                f"{self.url}/_cluster/health",
                params={"wait_for_status": "yellow", "timeout": "1s"},
                timeout=5.0,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.json()["status"] in ("yellow", "green")

    def _takes_an_index(self) -> bool:
        """Whether a new index gets its shard started now (what a first write needs), the probe index dropped after."""
        index = f"pacsfed-probe-{uuid.uuid4().hex[:10]}"
        settings = {"settings": {"number_of_shards": 1, "number_of_replicas": 0}}
        try:
            made = httpx.put(
                f"{self.url}/{index}",
                params={"wait_for_active_shards": "1", "timeout": "5s"},
                json=settings,
                timeout=10.0,
            )
            return made.status_code == 200 and made.json().get("shards_acknowledged") is True
        except httpx.HTTPError:
            return False
        finally:
            with contextlib.suppress(httpx.HTTPError):
                httpx.delete(f"{self.url}/{index}", params={"ignore_unavailable": "true"}, timeout=10.0)

    def _wait_external(self) -> float:
        started = time.monotonic()
        while not self._healthy():
            if time.monotonic() - started > self.start_timeout:
                raise PeerError(f"ELASTICSEARCH_URL={self.url} is not yellow or green")
            time.sleep(0.5)
        return time.monotonic() - started

    def stop(self, *, graceful: bool = True) -> None:
        """SIGTERM the node's process group and wait; an external node cannot be stopped."""
        if not self.owned:
            raise PeerError(f"cannot stop the external Elasticsearch at {self.url}")
        if self._process is not None:
            self._process.stop(timeout=60.0, graceful=graceful)
            self._process = None
            wait_port_closed(self.http_port)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP the node for the block (it accepts nothing, answers nothing), then SIGCONT.

        An unresponsive node at once and back at once: unlike ``stop()`` / ``start()``, no JVM
        start that a loaded machine can stretch past ``start_timeout``.
        """
        pid = self._process.pid if self.owned and self._process is not None else None
        if pid is None:
            raise PeerError(f"cannot freeze the Elasticsearch at {self.url}: not a node started here")
        os.killpg(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(pid, signal.SIGCONT)

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None:
            return ""
        return ManagedProcess.read_tail(self.log_path, lines)

    def ensure_running(self) -> None:
        if self.owned and not self.running:
            self.start()

    def ensure_answering(self, within_s: float = 30.0) -> None:
        """Running, and making and dropping an index within ``within_s``; an owned node that cannot is restarted."""
        self.ensure_running()
        deadline = time.monotonic() + within_s
        while not (self._healthy() and self._takes_an_index()):
            if time.monotonic() > deadline:
                if not self.owned:
                    raise PeerError(f"ELASTICSEARCH_URL={self.url} is not yellow or green")
                self.stop(graceful=False)
                self.start()
                return
            time.sleep(0.5)

    def close(self) -> None:
        """Stop an owned node and remove its work directory (if made here)."""
        if not self.owned:
            return
        self.stop()
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> ElasticsearchNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ElasticsearchNode(url={self.url!r}, owned={self.owned})"
