"""Start, wait for and stop one peer subprocess.

Every peer runs in its own process group (``start_new_session``) so that
``stop()`` reaches the children it forks too (dcmqrscp forks one per association,
Elasticsearch's launcher starts a second JVM). On Linux the child also gets
``PR_SET_PDEATHSIG`` so that it dies with the test session if pytest is killed
before its fixtures are finalised; an ``atexit`` hook covers a normal exit that
skipped the finalisers.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class PeerError(RuntimeError):
    """A peer is missing, failed to start, or failed to stop."""


_live: set[ManagedProcess] = set()


def _path_without_virtualenv() -> str:
    """PATH without any virtualenv's bin: pynetdicom installs its own echoscu/findscu/storescu there."""
    venv_bin = str(Path(sys.prefix, "bin"))
    return os.pathsep.join(
        p
        for p in os.environ.get("PATH", "").split(os.pathsep)
        if p and p != venv_bin and not Path(p).parent.joinpath("pyvenv.cfg").is_file()
    )


def require_binary(name: str, hint: str) -> str:
    """Absolute path of executable *name* (never the virtualenv's), or PeerError naming how to install it."""
    path = shutil.which(name, path=_path_without_virtualenv())
    if path is None:
        # Debian puts Orthanc in /usr/sbin, which is not on every PATH.
        for folder in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
            candidate = Path(folder, name)
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
        raise PeerError(f"{name!r} not found on PATH: {hint}")
    return path


def _group_alive(pgid: int) -> bool:
    """True while a process of group *pgid* runs (zombies do not count)."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 == PR_SET_PDEATHSIG


class ManagedProcess:
    """One long-running subprocess whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._starts += 1
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== pacsfed test harness: start #{self._starts}: {self.argv}\n".encode())
            log.flush()
            try:
                self._proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.cwd,
                    env=self.env,
                    start_new_session=True,
                    preexec_fn=_set_pdeathsig,
                )
            except OSError as exc:
                raise PeerError(f"{self.name}: cannot run {self.argv[0]!r}: {exc}") from exc
        _live.add(self)

    def stop(self, timeout: float = 30.0, *, graceful: bool = True) -> None:
        """SIGTERM the whole process group and wait for all of it; SIGKILL what lingers.

        ``graceful=False`` sends SIGKILL at once (a crash rather than a shutdown).
        """
        proc = self._proc
        if proc is None:
            return
        deadline = time.monotonic() + timeout
        if proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM if graceful else signal.SIGKILL)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=10)
        # The rest of the group (Elasticsearch's server JVM, forked dcmqrscp children)
        # may still be shutting down after the leader has gone: let it finish.
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        self._signal_group(proc, signal.SIGKILL)
        self._proc = None
        _live.discard(self)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def log_tail(self, lines: int = 40) -> str:
        return self.read_tail(self.log_path, lines)

    @staticmethod
    def read_tail(log_path: Path, lines: int = 40) -> str:
        """The last *lines* lines of *log_path* (reads at most its last 64 KiB)."""
        try:
            with log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                text = log.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(no log at {log_path}: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(
        self,
        ready: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        interval: float = 0.1,
        extra_log: Callable[[], str] | None = None,
    ) -> float:
        """Poll *ready* until it is true; return the seconds it took.

        Raises PeerError (with the log tail) if the process exits first or the
        timeout runs out; the process is stopped in both cases.
        """
        started = time.monotonic()
        deadline = started + timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                self.stop()
                raise PeerError(self._failure(f"exited with code {code} before {what}", extra_log))
            with contextlib.suppress(Exception):
                if ready():
                    return time.monotonic() - started
            if time.monotonic() > deadline:
                self.stop()
                raise PeerError(self._failure(f"not {what} after {timeout:.0f} s", extra_log))
            time.sleep(interval)

    def _failure(self, message: str, extra_log: Callable[[], str] | None) -> str:
        text = f"{self.name} {message}; log {self.log_path}:\n{self.log_tail()}"
        if extra_log is not None:
            with contextlib.suppress(Exception):
                text += "\n" + extra_log()
        return text


@atexit.register
def _stop_all() -> None:
    for proc in list(_live):
        with contextlib.suppress(Exception):
            proc.stop(timeout=10)
