"""The kit's checks for connectors that reach a peer over the network: refused, silent, cancelled while waiting."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from connectors.testing._checks import (
    cancelled_soon,
    captured_logs,
    failure_within,
    raises_within,
    run_check,
    settled,
    settled_now,
)
from connectors.testing.probes import ResourceCensus, closed_port, shedding_port, silent_port
from connectors.testing.suite import ConnectorConformance
from federation.errors import SourceTimeout, SourceUnreachable
from federation.models import HOSPITAL_STATUSES, Deadline, StudyQuery, status_of_failure

__all__ = ["NetworkConnectorConformance"]


class NetworkConnectorConformance(ConnectorConformance):
    """Also checks what a connector does when its peer is unreachable or silent (the kit's own ports)."""

    dead_deadline_s: ClassVar[float] = 1.5
    """The deadline given against the silent port: the call must end with SourceTimeout by then."""

    def test_an_unreachable_peer_is_source_unreachable(self, seeded_peer: Any) -> None:
        """A refused connection raises SourceUnreachable (status UNREACHABLE), naming no patient."""

        async def check() -> list[str]:
            messages: list[str] = []
            with closed_port() as endpoint:
                async with self.connected(seeded_peer, endpoint) as connector:
                    query = StudyQuery(patient_id=next(iter(self.patients())))
                    for call in (
                        lambda: connector.find_studies(query, Deadline.after(self.query_deadline_s)),
                        lambda: connector.ping(Deadline.after(self.query_deadline_s)),
                    ):
                        messages.append(await raises_within(SourceUnreachable, call))
            return messages

        with captured_logs() as logs:
            messages = run_check(check())
        self.check_clean(messages, "error messages")
        self.check_clean(logs.messages, "log lines")

    def test_a_silent_peer_is_source_timeout_at_the_deadline(self, seeded_peer: Any) -> None:
        """A peer that accepts and never answers: SourceTimeout (status TIMEOUT) at the deadline, not later."""

        async def check() -> list[str]:
            messages: list[str] = []
            with silent_port() as endpoint:
                async with self.connected(seeded_peer, endpoint) as connector:
                    query = StudyQuery(patient_id=next(iter(self.patients())))
                    for call in (
                        lambda: connector.find_studies(query, Deadline.after(self.dead_deadline_s)),
                        lambda: connector.ping(Deadline.after(self.dead_deadline_s)),
                    ):
                        started = time.monotonic()
                        within_s = self.dead_deadline_s + self.cancel_within_s + 1.0
                        messages.append(await raises_within(SourceTimeout, call, within_s))
                        late = time.monotonic() - started - self.dead_deadline_s
                        assert late <= self.cancel_within_s, (
                            f"SourceTimeout came {late:.3f} s after the deadline"
                        )
            return messages

        with captured_logs() as logs:
            messages = run_check(check())
        self.check_clean(messages, "error messages")
        self.check_clean(logs.messages, "log lines")

    def test_a_peer_shedding_load_is_the_hospitals_failure_never_busy(self, seeded_peer: Any) -> None:
        """A peer at its own limit (it accepts and closes at once) fails the call with one of the hospital's statuses.

        The call ends with a ConnectorError by its deadline, reported as TIMEOUT, UNREACHABLE or
        ERROR (``federation.models.HOSPITAL_STATUSES``): a hospital's load counts against its own
        circuit breaker. ``BUSY`` is pacsfed's own load, decided by the engine before a source is
        asked; a connector can never answer it (nor raise pacsfed's ``Overloaded``).
        """

        async def check() -> list[str]:
            messages: list[str] = []
            async with shedding_port() as endpoint, self.connected(seeded_peer, endpoint) as connector:
                query = StudyQuery(patient_id=next(iter(self.patients())))
                for call in (
                    lambda: connector.find_studies(query, Deadline.after(self.query_deadline_s)),
                    lambda: connector.ping(Deadline.after(self.query_deadline_s)),
                ):
                    failed = await failure_within(call, self.query_deadline_s + self.cancel_within_s + 1.0)
                    status = status_of_failure(failed)
                    assert status in HOSPITAL_STATUSES, f"{type(failed).__name__} is reported as {status}"
                    messages.append(str(failed))
            return messages

        with captured_logs() as logs:
            messages = run_check(check())
        self.check_clean(messages, "error messages")
        self.check_clean(logs.messages, "log lines")

    def test_cancelled_while_the_peer_is_silent_ends_soon_and_leaves_nothing(self, seeded_peer: Any) -> None:
        """Cancelling a call that waits on a silent peer ends it soon; aclose then releases everything."""
        before: list[ResourceCensus] = []

        async def check() -> list[str]:
            with silent_port() as endpoint:
                before.append(ResourceCensus.now())
                async with self.connected(seeded_peer, endpoint) as connector:
                    query = StudyQuery(patient_id=next(iter(self.patients())))
                    await cancelled_soon(
                        connector.find_studies(query, Deadline.after(30.0)), self.cancel_within_s, wait_s=0.3
                    )
                    await cancelled_soon(
                        connector.ping(Deadline.after(30.0)), self.cancel_within_s, wait_s=0.3
                    )
                return await settled(before[0].new_sockets)

        sockets = run_check(check())
        assert not sockets, f"sockets left open after aclose: {sockets}"
        threads = settled_now(before[0].new_threads)
        assert not threads, f"threads left running after aclose: {threads}"
