"""What every simulated PACS of the benchmarks shares: one loopback listener, kept polling or not."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def _stay_awake() -> None:
    """Keep the loop polling, so a request is read when it arrives, not when the CPU wakes up."""
    while True:  # noqa: ASYNC110 - polling is the point: there is no event to wait for
        await asyncio.sleep(0)


async def serve_forever(protocol: Callable[[], asyncio.Protocol], port: int, sleep_when_idle: bool) -> None:
    """Serve ``protocol`` on 127.0.0.1:PORT until cancelled; the loop polls unless ``sleep_when_idle``."""
    loop = asyncio.get_running_loop()
    awake = None if sleep_when_idle else loop.create_task(_stay_awake())
    server = await loop.create_server(protocol, "127.0.0.1", port, backlog=4096)
    try:
        async with server:
            await server.serve_forever()
    finally:
        if awake is not None:
            awake.cancel()
