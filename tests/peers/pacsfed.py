"""pacsfed as an outsider runs it: a clean install in its own virtualenv, and ``pacsfed serve`` as a process.

- :func:`clean_install` copies the project's source (no tests, no virtualenv) and installs it with
  pip: no extras, so nothing the test extra brings (hypercorn's wsproto, say) can hide a
  dependency the product forgot to declare. ``pip wheel <copy>`` makes a wheelhouse once per
  source (pacsfed's wheel, built in isolation, and the wheels of what it declares), and the
  virtualenv is installed from it offline (``--no-index``). A virtualenv with plugin packages is
  a copy of that plain one (hard links) with the plugins pip-installed into it: seconds, where
  resolving, building and installing every dependency again cost most of a minute. Virtualenvs and
  wheelhouses are cached under ``$PACSFED_OUTSIDE_CACHE`` (default ``~/.cache/pacsfed/outside``),
  keyed by a hash of the copied source: the same source is installed once, a changed one gets a
  fresh virtualenv. Concurrent test sessions take a file lock per key.
- :class:`PacsfedServer` runs ``pacsfed serve --config <yaml>`` (or ``pacsfed demo``) from that
  virtualenv on a free loopback port, in its own process group, and waits for ``/healthz``.

Like the other peers, nothing here imports the application packages.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .ports import LOOPBACK, free_port
from .process import ManagedProcess, PeerError

REPO = Path(__file__).resolve().parents[2]

_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "node_modules",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "pacsfed-audit",
    "tests",
    "bench",
    "docs",
    "scripts",
    "deploy",
    ".ci",
)
_KEEP_VENVS = 4
_IN_USE_S = 3 * 3600
"""A virtualenv made or reused this recently may serve a test session still running (CI, other worktrees)."""
"""Cached virtualenvs kept besides the one in use (older ones are removed)."""


def cache_root() -> Path:
    """Where clean installs are cached."""
    return Path(os.environ.get("PACSFED_OUTSIDE_CACHE", Path.home() / ".cache" / "pacsfed" / "outside"))


def _source_hash(source: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(source)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _copy_source(target: Path) -> Path:
    """The project as a user downloads it: package sources, pyproject, README, licence; no tests."""
    source = target / "pacsfed-src"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    return source


def _run(argv: Sequence[str], what: str, timeout: float = 900) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PIP_USER"}}
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=env, check=False, stdin=subprocess.DEVNULL
    )
    if result.returncode != 0:
        raise PeerError(
            f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def _prune(root: Path, keep: Path, pattern: str = "venv-*") -> None:
    """Remove old virtualenvs (or wheelhouses) beyond the newest few, but none used lately: another run may use it."""
    venvs = sorted(
        (p for p in root.glob(pattern) if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    idle_since = time.time() - _IN_USE_S
    for old in venvs[_KEEP_VENVS:]:
        if old.stat().st_mtime < idle_since:
            shutil.rmtree(old, ignore_errors=True)


def clean_install(
    python: str | None = None, extra_packages: Sequence[Path] = (), lock_file: Path | None = None
) -> Path:
    """The ``bin`` folder of a virtualenv holding pacsfed installed from source, without extras.

    ``extra_packages`` (project folders, a plugin say) are pip-installed after pacsfed, as a user
    would, into a copy of the plain install (their dependencies from pacsfed's wheelhouse: one
    neither declares fails the install); the virtualenv is then cached under the hash of pacsfed
    and of them. With ``lock_file``
    (deploy/requirements.lock) the dependencies come from it as the image installs them: hashes
    required, wheels only, then pacsfed with ``--no-deps`` and ``pip check``.
    """
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=root))
    try:
        source = _copy_source(staging)
        extras = [
            Path(shutil.copytree(package, staging / f"extra-{index}", ignore=_NOT_SOURCE))
            for index, package in enumerate(extra_packages)
        ]
        key = source_key = _source_hash(source)
        if extras:
            key = hashlib.sha256(
                " ".join([key, *(_source_hash(extra) for extra in extras)]).encode()
            ).hexdigest()[:16]
        if lock_file is not None:
            locked = hashlib.sha256(lock_file.read_bytes()).hexdigest()
            key = hashlib.sha256(f"{key} locked {locked}".encode()).hexdigest()[:16]
        venv = root / f"venv-{key}"
        # With plugins, the plain clean install (made once, cached) is copied and the plugins pip-installed into the copy.
        plain = clean_install(python).parent if extras and lock_file is None else None
        with _locked(root / f"venv-{key}.lock"):
            stamp = venv / ".pacsfed-installed"
            if not stamp.is_file():
                shutil.rmtree(venv, ignore_errors=True)
                interpreter = python or _base_python()
                if lock_file is None:
                    wheels = _wheelhouse(source, source_key, root)
                    # This session's pip, run by the venv's Python: the venv itself needs no pip.
                    pip = [*_PIP, "--python", str(venv / "bin" / "python")]
                    offline = ["--no-index", "--find-links", str(wheels)]
                    if plain is None:
                        _run([interpreter, "-m", "venv", "--without-pip", str(venv)], "python -m venv")
                        _run([*pip, "install", *offline, "pacsfed"], "pip install pacsfed (no extras)")
                    else:
                        _copy_venv(plain, venv)
                    if extras:
                        built = _extra_wheels(extras, staging / "extra-wheels")
                        _run([*pip, "install", *offline, *built], "pip install the extra packages")
                else:
                    _run([interpreter, "-m", "venv", str(venv)], "python -m venv")
                    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
                    _run([*pip, "install", "--upgrade", "pip"], "pip upgrade")
                    locked_deps = [
                        "--require-hashes",
                        "--only-binary=:all:",
                        "--no-deps",
                        "-r",
                        str(lock_file),
                    ]
                    _run([*pip, "install", *locked_deps], "pip install -r <lock file>")
                    _run([*pip, "install", "--no-deps", str(source)], "pip install --no-deps pacsfed")
                    _run([*pip, "check"], "pip check")
                    for extra in extras:
                        _run([*pip, "install", str(extra)], f"pip install {extra.name}")
                stamp.write_text(key)
            os.utime(venv)
        _prune(root, venv)
        return venv / "bin"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


_PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
"""The test session's own pip, used as a tool only (``--python`` points it at the venv it installs into)."""


def _wheelhouse(source: Path, key: str, root: Path) -> Path:
    """Wheels of pacsfed (built from ``source`` in an isolated build) and of every dependency it declares; made once per key."""
    wheels = root / f"wheels-{key}"
    with _locked(root / f"wheels-{key}.lock"):
        stamp = wheels / ".complete"
        if not stamp.is_file():
            shutil.rmtree(wheels, ignore_errors=True)
            _run([*_PIP, "wheel", "--wheel-dir", str(wheels), str(source)], "pip wheel pacsfed (no extras)")
            stamp.write_text(key)
        os.utime(wheels)
    _prune(root, wheels, "wheels-*")
    return wheels


def _extra_wheels(extras: Sequence[Path], target: Path) -> list[str]:
    """Wheels of the extra packages alone (their dependencies come from pacsfed's wheelhouse when installed)."""
    # Built with this session's setuptools (scripts/install-project puts a recent one in), not a fresh build env.
    argv = [
        *_PIP,
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(target),
        *map(str, extras),
    ]
    _run(argv, "pip wheel <extra packages>")
    return sorted(str(wheel) for wheel in target.glob("*.whl"))


def _copy_venv(base: Path, venv: Path) -> None:
    """``venv`` as a copy of the virtualenv ``base``: files hard-linked, the few naming ``base`` written anew."""
    ignore = shutil.ignore_patterns(".pacsfed-installed")
    shutil.copytree(base, venv, symlinks=True, copy_function=_link_or_copy, ignore=ignore)
    old, new = bytes(base), bytes(venv)
    for path in [venv / "pyvenv.cfg", *(venv / "bin").iterdir()]:  # scripts' #! lines, activate, pyvenv.cfg
        if path.is_symlink() or not path.is_file():
            continue
        content = path.read_bytes()
        if old in content:
            mode = path.stat().st_mode
            path.unlink()  # a hard link to base's file: never written in place
            path.write_bytes(content.replace(old, new))
            path.chmod(mode)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the file system allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _base_python() -> str:
    """The interpreter the test venv was made from (not the test venv: its packages must not leak)."""
    base = Path(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    return str(base) if base.is_file() else sys.executable


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _to_yaml(config: Mapping[str, Any]) -> str:
    """YAML is a superset of JSON: the config file is written as JSON (no YAML library needed here)."""
    return json.dumps(config, indent=2)


class PacsfedServer:
    """One ``pacsfed serve`` (or ``pacsfed demo``) process of a clean install, on a loopback port."""

    def __init__(
        self,
        bin_dir: Path,
        workdir: Path,
        config: Mapping[str, Any] | None = None,
        *,
        demo: bool = False,
        insecure_dev: bool = False,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.bin_dir = Path(bin_dir)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()  # given: the config already names it (server.public_url)
        self.host = LOOPBACK
        self.demo = demo
        argv = [str(self.bin_dir / "pacsfed")]
        if demo:
            argv += ["demo", "--host", self.host, "--port", str(self.port)]
        else:
            config = dict(config or {})
            config.setdefault("audit", {}).setdefault("journal_dir", str(self.workdir / "audit"))
            self.config_path = self.workdir / "pacsfed.yaml"
            self.config_path.write_text(_to_yaml(config))
            argv += [
                "serve",
                "--config",
                str(self.config_path),
                "--host",
                self.host,
                "--port",
                str(self.port),
            ]
            if insecure_dev:
                argv.append("--insecure-dev")
        argv += list(extra_args)
        base_env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
        base_env["PATH"] = os.pathsep.join([str(self.bin_dir), base_env.get("PATH", "")])
        base_env["PYTHONUNBUFFERED"] = "1"
        base_env.update(env or {})
        self.process = ManagedProcess(
            "pacsfed demo" if demo else "pacsfed serve",
            argv,
            log_path=self.workdir / "pacsfed.log",
            cwd=self.workdir,
            env=base_env,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/graphql"

    @property
    def running(self) -> bool:
        return self.process.running

    def start(self, timeout: float = 90.0) -> float:
        """Start the process and wait until ``/healthz`` answers (and, for the demo, its banner is out)."""
        self.process.start()
        return self.process.wait_until(self._ready, timeout=timeout, what="serving /healthz")

    def _ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
            if response.status != 200:
                return False
        return not self.demo or "Ctrl-C stops the demo" in self.log_text()

    def log_text(self) -> str:
        """Everything the process printed so far."""
        try:
            return self.process.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def demo_token(self) -> str:
        """The bearer token ``pacsfed demo`` printed in its banner."""
        match = re.search(r"A token for a demo physician[^\n]*\n\n\s*(\S+)", self.log_text())
        if match is None:
            raise PeerError(f"no token in the demo's banner:\n{self.process.log_tail()}")
        return match.group(1)

    def stop(self, *, graceful: bool = True) -> None:
        self.process.stop(timeout=20, graceful=graceful)

    def close(self) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PacsfedServer({self.url}, demo={self.demo})"
