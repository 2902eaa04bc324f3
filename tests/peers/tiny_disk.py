"""A real, tiny filesystem for tests of a full disk: a tmpfs mounted for one test (the tests run as root)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


class TinyDisk:
    """A tmpfs of ``size`` bytes at ``path``; :meth:`fill` takes every free block, :meth:`free` gives them back."""

    def __init__(self, path: Path, size: int = 1024 * 1024) -> None:
        self.path = path
        self.size = size
        self._filler = path / "filler"

    def mount(self) -> None:
        """Mount it (root only: CI and this machine run the tests as root)."""
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0700", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
        )

    def unmount(self) -> None:
        """Unmount it (lazily: a process under test may still hold a file open)."""
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)

    def fill(self) -> None:
        """Write until the filesystem says ENOSPC: every later write there fails like on a full disk."""
        chunk = bytes(4096)
        with self._filler.open("ab", buffering=0) as file:
            while True:
                try:
                    file.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    return

    def free(self) -> None:
        """Delete what :meth:`fill` wrote."""
        with contextlib.suppress(FileNotFoundError):
            self._filler.unlink()

    def files(self, pattern: str) -> list[str]:
        """Names under the mount matching ``pattern`` (sorted)."""
        return sorted(p.name for p in self.path.rglob(pattern))


@contextlib.contextmanager
def tiny_disk(path: Path, size: int = 1024 * 1024) -> Iterator[TinyDisk]:
    """A mounted :class:`TinyDisk`, unmounted afterwards."""
    if os.geteuid() != 0:
        raise RuntimeError("a tiny tmpfs needs root (the tests run as root here and in CI)")
    disk = TinyDisk(path, size)
    disk.mount()
    try:
        yield disk
    finally:
        disk.unmount()
