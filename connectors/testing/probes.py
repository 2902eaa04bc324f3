"""What the conformance kit measures with: dead endpoints, an event-loop watch, a census of threads and sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Endpoint", "LoopWatch", "ResourceCensus", "closed_port", "shedding_port", "silent_port"]

_LOOPBACK = "127.0.0.1"
_TICK_S = 0.005


@dataclass(frozen=True)
class Endpoint:
    """A host and port the kit asks a connector to talk to instead of its peer."""

    host: str
    port: int


@contextlib.contextmanager
def closed_port() -> Iterator[Endpoint]:
    """A loopback port that refuses connections: bound (so nobody else takes it), never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((_LOOPBACK, 0))
        yield Endpoint(_LOOPBACK, holder.getsockname()[1])


@contextlib.contextmanager
def silent_port() -> Iterator[Endpoint]:
    """A loopback port that accepts connections and never answers.

    The kernel completes each TCP handshake into the listening backlog; nobody ever reads or
    writes, so a client waits for its first byte forever (no thread is needed for that).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((_LOOPBACK, 0))
        listener.listen(128)
        yield Endpoint(_LOOPBACK, listener.getsockname()[1])


@contextlib.asynccontextmanager
async def shedding_port() -> AsyncIterator[Endpoint]:
    """A loopback port whose server is at its own limit: it accepts each connection and closes it at once, unread.

    What a hospital's server shedding load does: its failure, never pacsfed's BUSY.
    """

    def shed(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(shed, _LOOPBACK, 0)
    try:
        yield Endpoint(_LOOPBACK, server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def _runqueue_wait_s() -> float:
    """Seconds the calling thread has spent runnable but not running (Linux schedstat; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").read_text().split()
    except OSError:
        return 0.0
    return int(fields[1]) / 1e9


class LoopWatch:
    """A ticker task on the running loop recording the longest stretch the loop could not run it.

    Time the loop's thread spent waiting for a CPU (the machine was busy, Linux only) is taken
    off each gap: it is not the code under test blocking the loop.
    """

    def __init__(self) -> None:
        self.longest_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._last = (time.perf_counter(), _runqueue_wait_s())

    async def __aenter__(self) -> LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="kit-loop-watch")
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._measure()  # the stretch since the last tick: code that never yielded ends here
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _measure(self) -> None:
        now, waited_now = time.perf_counter(), _runqueue_wait_s()
        last, waited = self._last
        self.longest_s = max(self.longest_s, (now - last) - (waited_now - waited) - _TICK_S)
        self._last = (now, waited_now)

    async def _tick(self) -> None:
        self._last = (time.perf_counter(), _runqueue_wait_s())
        while True:
            await asyncio.sleep(_TICK_S)
            self._measure()


def _socket_inodes() -> frozenset[str] | None:
    """The sockets this process holds open (``socket:[inode]``), or None where they cannot be listed."""
    fd_dir = Path("/proc/self/fd")
    if fd_dir.is_dir():
        found: set[str] = set()
        for entry in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(entry)
                if target.startswith("socket:"):
                    found.add(target)
        return frozenset(found)
    try:
        import psutil  # type: ignore[import-untyped]  # optional: only where /proc is missing
    except ImportError:
        return None
    return frozenset(
        f"{c.laddr}>{c.raddr}" for c in psutil.Process().net_connections(kind="all") if c.status != "NONE"
    )


@dataclass(frozen=True)
class ResourceCensus:
    """The threads and sockets of this process at one moment."""

    threads: frozenset[threading.Thread]
    sockets: frozenset[str] | None

    @classmethod
    def now(cls) -> ResourceCensus:
        """Count them now."""
        return cls(frozenset(t for t in threading.enumerate() if t.is_alive()), _socket_inodes())

    def new_threads(self) -> list[str]:
        """Names of threads alive now that were not in this census."""
        return sorted(t.name for t in threading.enumerate() if t.is_alive() and t not in self.threads)

    def new_sockets(self) -> list[str]:
        """Sockets open now that were not in this census (empty where sockets cannot be listed)."""
        now = _socket_inodes()
        if now is None or self.sockets is None:
            return []
        return sorted(now - self.sockets)
