"""What the kit's checks share: running a check, capturing logs, expecting errors, cancelling, waiting for release."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import pytest

from connectors.testing.studies import KitStudy
from federation.errors import ConnectorError

T = TypeVar("T")

RELEASE_GRACE_S = 2.0
"""How long threads and sockets may take to go away after ``aclose`` (a thread finishing its last poll)."""

CHECK_LIMIT_S = 90.0
"""The longest one check may run: a connector that ignores its deadlines fails instead of hanging the suite."""


def run_check(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one check's coroutine in a fresh event loop, failing it after ``CHECK_LIMIT_S``."""

    async def bounded() -> T:
        try:
            return await asyncio.wait_for(coroutine, CHECK_LIMIT_S)
        except TimeoutError:
            pytest.fail(f"the check did not end in {CHECK_LIMIT_S:.0f} s: a call ignores its deadline")

    return asyncio.run(bounded())


async def awaited(value: Awaitable[T]) -> T:
    """``value`` awaited (an awaitable that is not a coroutine, for ``asyncio.run``)."""
    return await value


def patient_data(studies: Sequence[KitStudy]) -> set[str]:
    """The strings that identify a kit patient: ids, family names of every group, birth dates."""
    found: set[str] = set()
    for study in studies:
        found.add(study.patient_id)
        found.add(study.patient_birth_date.strftime("%Y%m%d"))
        found.add(study.patient_birth_date.isoformat())
        for group in study.patient_name.split("="):
            family = group.split("^", 1)[0]
            if len(family) >= 2:
                found.add(family)
    return found


class LogCapture(logging.Handler):
    """Every log record of INFO and up, from any logger, while a kit test runs."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.messages.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def captured_logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    handler, level = LogCapture(), root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def raises_within(
    expected: type[ConnectorError], call: Callable[[], Awaitable[object]], within_s: float = CHECK_LIMIT_S
) -> str:
    """The message of the ``expected`` error the call raises within ``within_s``; fail on anything else."""
    task = asyncio.ensure_future(call())
    done, _ = await asyncio.wait({task}, timeout=within_s)
    if not done:
        task.cancel()
        pytest.fail(f"still running {within_s:.1f} s later instead of raising {expected.__name__}")
    try:
        task.result()
    except expected as exc:
        return str(exc)
    except ConnectorError as exc:
        pytest.fail(f"raised {type(exc).__name__} ({exc}), not {expected.__name__}")
    except Exception as exc:  # a foreign exception escaped the connector
        pytest.fail(f"raised {type(exc).__name__}, not a ConnectorError ({expected.__name__})")
    pytest.fail(f"answered instead of raising {expected.__name__}")


async def failure_within(call: Callable[[], Awaitable[object]], within_s: float) -> ConnectorError:
    """The ConnectorError the call raises within ``within_s``; fail on an answer, a hang or anything else."""
    task = asyncio.ensure_future(call())
    done, _ = await asyncio.wait({task}, timeout=within_s)
    if not done:
        task.cancel()
        pytest.fail(f"still running {within_s:.1f} s later instead of raising a ConnectorError")
    try:
        task.result()
    except ConnectorError as exc:
        return exc
    except (
        Exception
    ) as exc:  # a foreign exception, or one of pacsfed's own (Overloaded), escaped the connector
        pytest.fail(f"raised {type(exc).__name__}, not a ConnectorError")
    pytest.fail("answered instead of raising a ConnectorError")


async def cancelled_soon(call: Awaitable[object], within_s: float, wait_s: float = 0.0) -> None:
    """Start the call, cancel it after ``wait_s``, and fail unless it ends within ``within_s``."""
    task = asyncio.ensure_future(call)
    await asyncio.sleep(wait_s)
    task.cancel()
    cancelled_at = time.monotonic()
    done, _ = await asyncio.wait({task}, timeout=within_s + 5.0)
    late = time.monotonic() - cancelled_at
    assert done, f"the call was still running {late:.1f} s after it was cancelled"
    assert late <= within_s, f"the call ended {late:.3f} s after it was cancelled"
    if not task.cancelled():
        exc = task.exception()
        assert exc is None or isinstance(exc, ConnectorError), f"cancelling it raised {type(exc).__name__}"


async def settled(leftovers: Callable[[], list[str]]) -> list[str]:
    """What ``leftovers`` still reports after a short grace (a socket closing, a thread ending)."""
    until = time.monotonic() + RELEASE_GRACE_S
    while (found := leftovers()) and time.monotonic() < until:  # noqa: ASYNC110 - polling the OS, no event to wait on
        await asyncio.sleep(0.05)
    return found


def settled_now(leftovers: Callable[[], list[str]]) -> list[str]:
    """``settled`` outside an event loop."""
    until = time.monotonic() + RELEASE_GRACE_S
    while (found := leftovers()) and time.monotonic() < until:
        time.sleep(0.05)
    return found
