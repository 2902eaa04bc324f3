"""``pacsfed serve --workers N``: N worker processes behind one listening socket, kept alive.

The supervisor (the ``pacsfed`` process itself) binds the port once and hands the socket to each
worker, started fresh (``spawn``, no state copied from the parent); the kernel gives each new
connection to one of the workers waiting on it, and a connection a worker had not accepted yet
stays queued for the others when it dies. Each worker is a whole pacsfed: uvicorn with the same
options as a single process (:func:`web.http_server.uvicorn_options`), the same lifespan, its
own engine, Elasticsearch client and audit journal.

Worker ``i`` keeps its audit journal in ``<journal_dir>/worker-<i>`` (worker 0 in
``journal_dir`` itself, where a single process keeps it): stable by index, so a worker started
again after a crash ships what its predecessor journaled but had not shipped (its cursors are in
the same directory), and the journal's own lock keeps two live processes out of one directory.
Elasticsearch stores each record under its own id, so a stretch shipped twice counts once.

Metrics: each run gets one ``PROMETHEUS_MULTIPROC_DIR`` for prometheus-client's multiprocess
mode (the operator's, emptied at start, or a temporary directory removed at exit); a worker that
dies is marked dead there (its gauges leave the scrape, its counters stay in the sums).

A worker that dies is started again with the same index (after a pause growing to
``_MAX_PAUSE_S`` while it keeps dying young); one that fails during start-up stops them all
(exit 1). SIGTERM or SIGINT to the supervisor is passed to every worker, which shuts down as a
single process does (connections drained, lifespan closed, audit flushed); one still running
after ``_STOP_TIMEOUT_S`` is killed.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from federation.errors import ConfigError
from federation.settings import Settings, load_settings
from pacsfed.app import create_app
from pacsfed.metrics import MULTIPROCESS_DIR_ENV
from web.http_server import log_config, uvicorn_options
from web.log_format import configure_logging

__all__ = [
    "STARTUP_FAILURE",
    "WorkerSpec",
    "journal_dir_of",
    "leftover_journals",
    "listen",
    "metrics_dir",
    "serve_workers",
    "uvicorn_config",
]

log = logging.getLogger("pacsfed.workers")

STARTUP_FAILURE = 3
"""uvicorn's exit status when the application's lifespan failed to start."""
_YOUNG_S = 10.0
"""A worker dying sooner than this after its start is paused before it is started again."""
_MAX_PAUSE_S = 30.0
_STOP_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build its own pacsfed (the settings are read again in the worker)."""

    config: str
    host: str
    port: int
    log_level: str
    insecure_dev: bool
    workers: int
    log_format: str = "text"


def journal_dir_of(journal_dir: Path, index: int) -> Path:
    """Worker ``index``'s audit journal: ``journal_dir`` for worker 0, ``journal_dir/worker-<index>`` for the others."""
    return journal_dir if index == 0 else journal_dir / f"worker-{index}"


def leftover_journals(journal_dir: Path, workers: int) -> list[Path]:
    """Journals of worker indices at or beyond ``workers`` that still hold segments (from a larger ``--workers``)."""
    if not journal_dir.is_dir():
        return []
    found = []
    for entry in sorted(journal_dir.glob("worker-*")):
        index = entry.name.removeprefix("worker-")
        if index.isdigit() and int(index) >= workers and any(entry.glob("audit-*.jsonl")):
            found.append(entry)
    return found


def worker_settings(settings: Settings, index: int) -> Settings:
    """``settings`` with worker ``index``'s own audit journal directory."""
    audit = settings.audit.model_copy(
        update={"journal_dir": journal_dir_of(settings.audit.journal_dir, index)}
    )
    return settings.model_copy(update={"audit": audit})


def uvicorn_config(
    app: Any, settings: Settings, host: str, port: int, log_level: str, log_format: str = "text"
) -> uvicorn.Config:
    """uvicorn as ``pacsfed serve`` runs it, with one process or many (its own lines in ``log_format`` too)."""
    options = uvicorn_options(settings.server)
    if log_format == "json":
        options["log_config"] = log_config(json_lines=True)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        proxy_headers=bool(settings.server.forwarded_allow_ips),
        forwarded_allow_ips=settings.server.forwarded_allow_ips or None,
        **options,
    )


def listen(host: str, port: int) -> socket.socket:
    """The one listening socket every worker accepts from; ConfigError when the port cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and an accepted connection says what its listener said (0: Nagle and delayed ACKs, ~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from exc
    sock.set_inheritable(True)
    return sock


def run_worker(spec: WorkerSpec, index: int, sock: socket.socket) -> None:
    """A worker process: its settings, its app and its uvicorn, serving on the inherited socket."""
    configure_logging(spec.log_level, spec.log_format)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    threading.Thread(target=_exit_with, args=(os.getppid(),), name="supervisor-watch", daemon=True).start()
    settings = worker_settings(load_settings(spec.config), index)
    app = create_app(settings, insecure_dev=spec.insecure_dev, owns_process=True, worker=index)
    server = uvicorn.Server(
        uvicorn_config(app, settings, spec.host, spec.port, spec.log_level, spec.log_format)
    )
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def _exit_with(supervisor: int) -> None:
    """Stop this worker (gracefully) once its supervisor has gone, killed without a word."""
    while os.getppid() == supervisor:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


@dataclasses.dataclass
class _Worker:
    index: int
    process: BaseProcess
    started: float
    failures: int = 0


class _Supervisor:
    """Starts the workers, starts a dead one again with its index, stops them all on a signal."""

    def __init__(self, spec: WorkerSpec, sock: socket.socket) -> None:
        self._spec = spec
        self._sock = sock
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._stopping = False

    def _start(self, index: int, failures: int = 0) -> None:
        process = self._context.Process(
            target=run_worker, args=(self._spec, index, self._sock), name=f"pacsfed-worker-{index}"
        )
        process.start()
        self._workers[index] = _Worker(index, process, time.monotonic(), failures)
        log.info("worker %d started (pid %s)", index, process.pid)

    @property
    def stopping(self) -> bool:
        """Whether a signal asked every worker to stop (set by the handler at any time)."""
        return self._stopping

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        for index in range(self._spec.workers):
            self._start(index)
        status = 0
        while not self._stopping:
            sentinels = {worker.process.sentinel: worker for worker in self._workers.values()}
            ready = multiprocessing.connection.wait(list(sentinels), timeout=0.5)
            for sentinel in ready:
                worker = sentinels[sentinel]  # type: ignore[index]
                worker.process.join()
                code = worker.process.exitcode
                if self.stopping:
                    break
                if code == STARTUP_FAILURE:
                    log.error(
                        "worker %d could not start (exit %s): stopping every worker", worker.index, code
                    )
                    self._stopping, status = True, 1
                    break
                if worker.process.pid is not None:
                    mark_process_dead(worker.process.pid)  # type: ignore[no-untyped-call]
                young = time.monotonic() - worker.started < _YOUNG_S
                failures = worker.failures + 1 if young else 0
                pause = min(_MAX_PAUSE_S, 2.0 ** (failures - 1)) if failures else 0.0
                log.error("worker %d died (exit %s); starting it again in %.0f s", worker.index, code, pause)
                self._sleep(pause)
                if not self.stopping:
                    self._start(worker.index, failures)
        self._stop_all()
        return status

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            time.sleep(0.1)

    def _stop_all(self) -> None:
        alive = [worker.process for worker in self._workers.values() if worker.process.is_alive()]
        for process in alive:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.error("a worker did not stop in %.0f s: killed", _STOP_TIMEOUT_S)
                process.kill()
                process.join()


def metrics_dir() -> Path | None:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` for this run's workers: the operator's, emptied, or a new one (returned)."""
    given = os.environ.get(MULTIPROCESS_DIR_ENV)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for left in path.glob("*.db"):  # a previous run's values would add to this one's
            left.unlink()
        return None
    made = Path(tempfile.mkdtemp(prefix="pacsfed-metrics-"))
    os.environ[MULTIPROCESS_DIR_ENV] = str(made)
    return made


def serve_workers(spec: WorkerSpec) -> int:
    """Serve with ``spec.workers`` processes on one port until SIGTERM or SIGINT; the exit status."""
    sock = listen(spec.host, spec.port)
    made = metrics_dir()
    try:
        log.info("pacsfed: %d workers on %s:%d", spec.workers, spec.host, spec.port)
        return _Supervisor(spec, sock).run()
    finally:
        sock.close()
        if made is not None:
            os.environ.pop(MULTIPROCESS_DIR_ENV, None)
            shutil.rmtree(made, ignore_errors=True)
