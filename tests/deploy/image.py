"""The image's command run without Docker: deploy/docker/Dockerfile's ENTRYPOINT, CMD, ENV and WORKDIR on this machine.

:func:`image_run` takes the final stage's instructions and maps only what cannot be the same outside
a container: the image's directories (``/etc/pacsfed``, ``/var/lib/pacsfed``) become folders under a
test's root, ``/opt/pacsfed/bin`` (the virtualenv the build stage installs from the lock file) becomes
the ``bin`` folder of a virtualenv installed from the same lock file the same way, and ``--host`` and
``--port`` become loopback and a free port (a shared machine; loopback traffic only).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from deploy.dockerfile import Stage, parse, words

__all__ = ["DOCKERFILE", "IMAGE_DIRS", "REPO", "VENV", "ImageRun", "final_stage", "image_run"]

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
VENV = "/opt/pacsfed"
IMAGE_DIRS = ("/etc/pacsfed", "/var/lib/pacsfed")
"""The image's own directories: the configuration (mounted) and the working directory (a volume)."""


@dataclasses.dataclass(frozen=True)
class ImageRun:
    """A command line as the image runs it, mapped onto this machine."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path


def final_stage() -> Stage:
    """The Dockerfile's last stage: what the image is."""
    return parse(DOCKERFILE)[1][-1]


def _mapped(value: str, root: Path, bin_dir: Path) -> str:
    if value.startswith(f"{VENV}/bin"):
        return str(bin_dir) + value[len(f"{VENV}/bin") :]
    for directory in IMAGE_DIRS:
        if value == directory or value.startswith(f"{directory}/"):
            return str(root) + value
    return value


def _env(stage: Stage, root: Path, bin_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    for value in stage.all("ENV"):
        for pair in shlex.split(value):
            key, _, raw = pair.partition("=")
            expanded = os.path.expandvars(raw.replace(f"${key}", env.get(key, "")))
            env[key] = ":".join(_mapped(part, root, bin_dir) for part in expanded.split(":"))
    return env


def image_run(root: Path, bin_dir: Path, port: int, command: Sequence[str] | None = None) -> ImageRun:
    """ENTRYPOINT + CMD (or ``command`` in CMD's place, as compose's ``command:`` does), mapped onto ``root``."""
    stage = final_stage()
    entrypoint, cmd = stage.last("ENTRYPOINT"), stage.last("CMD")
    assert entrypoint is not None and cmd is not None
    argv = words(entrypoint) + (list(command) if command is not None else words(cmd))
    env = _env(stage, root, bin_dir)
    mapped = [_mapped(arg, root, bin_dir) for arg in argv]
    for index, arg in enumerate(mapped[:-1]):
        if arg == "--port":
            mapped[index + 1] = str(port)
        elif arg == "--host":
            mapped[index + 1] = "127.0.0.1"
    executable = next(
        (Path(d) / mapped[0] for d in env["PATH"].split(":") if (Path(d) / mapped[0]).is_file()), None
    )
    assert executable is not None, f"{mapped[0]} is not on the image's PATH {env['PATH']}"
    workdir = stage.last("WORKDIR")
    assert workdir is not None
    cwd = Path(_mapped(workdir, root, bin_dir))
    for directory in IMAGE_DIRS:
        (root / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return ImageRun([str(executable), *mapped[1:]], env, cwd)
