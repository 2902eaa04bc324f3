"""The processes of the load benchmark: Elasticsearch, the simulated hospitals, ``pacsfed serve``, clients.

Each runs apart from the driver, as in the field; their CPU time is read from /proc (the
server's whole process tree: with ``--workers N`` its workers are its children).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

BENCH_ROOT = Path(__file__).resolve().parents[1]
"""The tree this benchmark runs from: its simulator and clients come from here, whatever is measured."""
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_http(
    url: str, what: str, timeout_s: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not start within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def own_env() -> dict[str, str]:
    """The environment for the processes that come from this tree (simulator, clients)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(BENCH_ROOT)
    return env


@contextlib.contextmanager
def elasticsearch(heap: str = "1g") -> Iterator[str]:
    """ELASTICSEARCH_URL, or the test node (tests/peers) started for the run; its URL."""
    url = os.environ.get("ELASTICSEARCH_URL")
    if url:
        yield url
        return
    sys.path.insert(0, str(BENCH_ROOT / "tests"))
    from peers.elasticsearch import ElasticsearchNode  # the test harness's node

    os.environ["PACSFED_ES_JAVA_OPTS"] = f"-Xms{heap} -Xmx{heap}"
    node = ElasticsearchNode(start_timeout=300)
    node.start()
    try:
        yield str(node.url)
    finally:
        node.close()


@contextlib.contextmanager
def hospitals(latency_s: float) -> Iterator[str]:
    """The simulated DICOMweb hospitals (one process, one port); their QIDO base URL."""
    port = free_port()
    command = [sys.executable, "-m", "bench._qido_server", "--port", str(port), "--latency", str(latency_s)]
    # Under load it never idles; between runs it sleeps instead of busy-polling one of two cores.
    command += ["--sleep-when-idle", "--echo-patient-id"]
    process = subprocess.Popen(command, env=own_env())
    try:
        _wait_http(f"http://127.0.0.1:{port}/dicom-web/studies?PatientID=LOAD0", "the simulator", 20, process)
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        _stop(process)


def pacsfed_command() -> list[str]:
    """How ``pacsfed`` is started: the console script beside this interpreter, else on PATH."""
    script = Path(sys.executable).parent / "pacsfed"
    found = str(script) if script.exists() else shutil.which("pacsfed")
    return [found] if found else [sys.executable, "-c", "from pacsfed.cli import main; main()"]


def server_env(code: Path | None) -> dict[str, str]:
    """The environment of ``pacsfed serve``: CODE (another branch's tree) first on the path, if given."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    return env


def served_from(code: Path | None) -> str:
    """The directory ``pacsfed serve`` will import pacsfed from."""
    command = [
        sys.executable,
        "-c",
        "import pacsfed, pathlib; print(pathlib.Path(pacsfed.__file__).parents[1])",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, env=server_env(code), cwd="/", check=True
    ).stdout.strip()


def supports_workers(code: Path | None) -> bool:
    """Whether this pacsfed's ``serve`` has ``--workers``."""
    result = subprocess.run(
        [*pacsfed_command(), "serve", "--help"],
        capture_output=True,
        text=True,
        env=server_env(code),
        check=False,
    )
    return "--workers" in result.stdout


class Server:
    """``pacsfed serve --insecure-dev`` over N sources, with the Elasticsearch cache; stopped on exit."""

    def __init__(
        self, es_url: str, prefix: str, qido_url: str, sources: int, workers: int, code: Path | None
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="pacsfed-bench-load-"))
        config = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "cache": {"backend": "elasticsearch", "url": es_url, "index_prefix": prefix},
            "audit": {"journal_dir": str(self._dir / "audit")},
            "sources": [
                {"id": f"hosp-{i:03d}", "kind": "dicomweb", "url": qido_url, "name": f"Hospital {i}"}
                for i in range(sources)
            ],
        }
        (self._dir / "config.yaml").write_text(json.dumps(config))  # JSON is YAML
        command = [*pacsfed_command(), "serve", "--config", str(self._dir / "config.yaml"), "--insecure-dev"]
        if workers != 1:
            command += ["--workers", str(workers)]
        self.log_path = self._dir / "server.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_env(code)
            )
        _wait_http(f"{self.url}/readyz", "pacsfed serve", 90, self.process)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the server and every process under it so far."""
        return tree_cpu_s(self.process.pid)

    def close(self) -> None:
        """Stop the server and remove its configuration, journal and log."""
        _stop(self.process)
        shutil.rmtree(self._dir, ignore_errors=True)


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, from /proc/PID/stat; None once it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and its descendants (those alive now)."""
    parents: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = stat
    tree, total, grown = {root}, 0.0, True
    while grown:
        grown = False
        for pid, (ppid, _) in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                grown = True
    for pid in tree:
        if pid in parents:
            total += parents[pid][1]
    return total


def java_pid_listening(port: int) -> int | None:
    """The Elasticsearch JVM serving on PORT (its command line names the port), if this machine runs it."""
    needle = f"http.port={port}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes() and b"java" in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


def start_clients(spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """A client process running SPEC (see bench._load_client)."""
    command = [sys.executable, "-m", "bench._load_client", json.dumps(spec)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, env=own_env())


def collect(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """The records a client process printed, once it has finished."""
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a client process exited with {process.returncode}")
    records: list[dict[str, Any]] = json.loads(out)
    return records
