"""Run a clean-up job every so often, for as long as this replica leads.

A job that fails because the apiserver is down or refuses it is logged and
tried again at the next interval: the clean-ups are idempotent, and a dead
loop would silently stop them until a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pinniped_concierge.errors import ServerError, Unavailable

log = logging.getLogger("concierge.periodic")


async def run_every(interval_seconds: float, what: str,
                    job: Callable[[], Awaitable[object]]) -> None:
    """Wait `interval_seconds`, run `job`, repeat (until cancelled)."""
    log.info("%s: every %.0f s while this replica holds the Lease", what, interval_seconds)
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            await job()
        except (Unavailable, ServerError) as exc:
            log.warning("%s failed, will retry in %.0f s: %s", what, interval_seconds, exc)
