"""Admission of patient queries: past ``server.max_pending_queries``, refused at once (OVERLOADED)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class _Gate(Protocol):
    def admitted(self) -> contextlib.AbstractContextManager[None]: ...


class _HasEngine(Protocol):
    @property
    def engine(self) -> _Gate: ...


S = TypeVar("S", bound=_HasEngine)


def admitted(method: Callable[Concatenate[S, P], Awaitable[T]]) -> Callable[Concatenate[S, P], Awaitable[T]]:
    """Run the query while it holds a pending-query place; none left: Overloaded before anything else."""

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        with self.engine.admitted():
            return await method(self, *args, **kwargs)

    return wrapper


def admitted_stream(
    method: Callable[Concatenate[S, P], AsyncGenerator[T, None]],
) -> Callable[Concatenate[S, P], AsyncGenerator[T, None]]:
    """The same for a progressive answer: the place is held until the stream is closed."""

    @functools.wraps(method)
    async def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[T, None]:
        with self.engine.admitted():
            async with contextlib.aclosing(method(self, *args, **kwargs)) as updates:
                async for update in updates:
                    yield update

    return wrapper
