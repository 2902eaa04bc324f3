"""Admission of patient queries, owned by the service: past ``server.max_pending_queries``, refused at once (OVERLOADED).

One :class:`Admission` per service. Every front end asks it, and nothing else: the HTTP server
before it reads a request (``web/http_server.py``), the ASGI gate (``web/overload_gate.py``), a
WebSocket subscribe (``schema/ws.py``); the service's own query methods hold one of its places
while they run. The counts it decides on are the engine's (``/readyz`` shows them).

Refusals are audited without loading the disk exactly when it is saturated: a refused request
was never read, so no patient is known, and one record per refusal would be one fsync each. The
refusals are counted per channel and written as one record per channel and window instead (at
most one a second while refusing; what is left at shutdown by :meth:`Admission.flush`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from federation.access.principals import AccessContext
from federation.errors import Overloaded

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("federation.service")

REFUSALS_AUDIT_INTERVAL_S = 1.0
"""While queries are refused, one audit record per channel at most this often."""

RefusalJournal = Callable[[str, int, float, float], Awaitable[None]]
"""Writes one aggregated record: (channel, refused count, window start, window end; wall clock)."""


class _Engine(Protocol):
    def admitted(self) -> contextlib.AbstractContextManager[None]: ...

    def arriving(self, *, checked: bool = False) -> contextlib.AbstractContextManager[None]: ...

    def refusal(self, in_hand: int = 0) -> Overloaded | None: ...


class Admission:
    """The one admission of patient queries: the front ends' doors and the service's own places."""

    def __init__(
        self, engine: _Engine, journal: RefusalJournal, interval_s: float = REFUSALS_AUDIT_INTERVAL_S
    ) -> None:
        self._engine = engine
        self._journal = journal
        self._interval_s = interval_s
        self._refused: collections.Counter[str] = collections.Counter()
        self._since = 0.0
        self._flushing: asyncio.Task[None] | None = None
        self.in_hand = 0
        """Query requests read whole and not answered yet (counted by the HTTP server)."""

    def refusal(self, channel: str) -> Overloaded | None:
        """The refusal to answer a query request at the door now (counted and audited), or None to let it in.

        For the HTTP server, before it reads anything past the request head: the requests it has
        read whole and not answered yet count as in progress too, so a flood is refused before
        it queues on the event loop. A request still sending its body does not count (clients
        trickling bodies must not lock everyone out).
        """
        refused = self._engine.refusal(self.in_hand)
        if refused is not None:
            self.refused(channel)
        return refused

    def taken_in_hand(self) -> Callable[[], None]:
        """Count one request read whole until the returned function is called (once)."""
        self.in_hand += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_hand -= 1

        return release

    @contextlib.contextmanager
    def door(self, channel: str, *, let_in: bool = False) -> Iterator[None]:
        """A query request at a front end's door, before it is read or parsed: Overloaded at the limit.

        ``let_in``: :meth:`refusal` let it in already (the HTTP server): counted, not asked twice.
        """
        with contextlib.ExitStack() as place:
            try:
                place.enter_context(self._engine.arriving(checked=let_in))
            except Overloaded:
                self.refused(channel)
                raise
            yield

    @contextlib.contextmanager
    def admitted(self, channel: str) -> Iterator[None]:
        """Hold one of ``server.max_pending_queries`` places for the block, or Overloaded at once."""
        with contextlib.ExitStack() as place:
            try:
                place.enter_context(self._engine.admitted())
            except Overloaded:
                self.refused(channel)
                raise
            yield

    def refused(self, channel: str) -> None:
        """Count one refusal for the audit; the window's record is written ``interval_s`` after its first."""
        if not self._refused:
            self._since = time.time()
        self._refused[channel] += 1
        if self._flushing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): written at the next flush
                return
            self._flushing = loop.create_task(self._flush_later(), name="audit-refusals")

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(self._interval_s)
        finally:
            self._flushing = None
        await self.flush()

    async def flush(self) -> int:
        """Write one record per channel for the refusals counted since the last; how many records."""
        refused, since, until = self._refused, self._since, time.time()
        self._refused = collections.Counter()
        for channel, count in sorted(refused.items()):
            await self._journal(channel, count, since, until)
        return len(refused)

    async def aclose(self) -> None:
        """Stop the pending window's timer and write what it counted (at shutdown)."""
        if self._flushing is not None:
            self._flushing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flushing
        await self.flush()


class _HasAdmission(Protocol):
    @property
    def admission(self) -> Admission: ...


S = TypeVar("S", bound=_HasAdmission)


def _channel(args: tuple[object, ...], kwargs: dict[str, object]) -> str:
    """The channel of the call's AccessContext (every guarded method takes one)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, AccessContext):
            return value.channel
    return "unknown"


def admitted(method: Callable[Concatenate[S, P], Awaitable[T]]) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Run the query while it holds a pending-query place; none left: Overloaded before anything else."""

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.admission.admitted(_channel(args, kwargs)):
            return await method(self, *args, **kwargs)

    return wrapper


def admitted_stream(
    method: Callable[Concatenate[S, P], AsyncGenerator[T, None]],
) -> Callable[Concatenate[S, P], AsyncGenerator[T, None]]:
    """The same for a progressive answer: the place is held until the stream is closed."""

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
        with self.admission.admitted(_channel(args, kwargs)):
            async with contextlib.aclosing(method(self, *args, **kwargs)) as updates:
                async for update in updates:
                    yield update

    return wrapper
