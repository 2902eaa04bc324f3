"""The DIMSE association pool under a race real peers cannot force: a hook on the give-back.

An association handed back to the pool by a query that ended cleanly must never be C-CANCELled
and aborted by that query's cancellation landing late, once another query has taken it.
"""

from __future__ import annotations

import asyncio
import contextlib

from connectors.base import ConnectorContext
from connectors.dimse import DimseConnector
from connectors.dimse_settings import DimseSourceSettings
from federation.models import Deadline, StudyQuery
from pacsfed.demo import SimulatedDimsePacs, demo_studies


async def test_a_late_cancel_leaves_an_association_given_back_to_the_pool_alone() -> None:
    with SimulatedDimsePacs("POOLPACS", demo_studies("demo-chu-nord")) as pacs:
        settings = DimseSourceSettings(
            id="pacs", kind="dimse", host="127.0.0.1", port=pacs.port, called_ae="POOLPACS"
        )
        connector = DimseConnector(settings, ConnectorContext())
        query = StudyQuery(patient_id="DEMO-001")
        tasks: dict[str, asyncio.Task[object]] = {}
        real_give_back = connector._pool.give_back

        def give_back(link):  # type: ignore[no-untyped-def]
            real_give_back(link)  # query A ended cleanly: the association is idle again
            if "b" in tasks:
                return
            # Query B (another patient view) starts at once and will take the association...
            tasks["b"] = asyncio.ensure_future(connector.find_studies(query, Deadline.after(5)))
            # ...while query A's task is cancelled (its last waiter gave up / a purge / the deadline)
            # before the loop picks up A's result.
            tasks["a"].cancel()

        connector._pool.give_back = give_back  # type: ignore[method-assign]
        tasks["a"] = asyncio.ensure_future(connector.find_studies(query, Deadline.after(5)))
        with contextlib.suppress(asyncio.CancelledError):
            await tasks["a"]
        answer_b = await tasks["b"]
        await asyncio.sleep(0.3)
        kept = len(connector._pool)
        await connector.aclose()
    assert not answer_b.truncated and answer_b.records, (answer_b.records, answer_b.warnings)
    assert pacs.associations_accepted == 1  # B ran on the association A gave back...
    assert kept == 1  # ...which is still pooled, neither cancelled nor aborted
