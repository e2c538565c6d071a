"""One identity's flood of requests is refused at its share, and leaves everyone else alone."""

from __future__ import annotations

import asyncio

from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.user_locks import UserLocks


def test_requests_beyond_one_users_share_get_429_and_others_go_on() -> None:
    locks = UserLocks(max_per_key=3)
    release = asyncio.Event()
    outcomes: list[str] = []
    refusals: list[Unavailable] = []

    async def take(key: str) -> None:
        try:
            async with locks.hold(key):
                await release.wait()
                outcomes.append(f"{key} served")
        except Unavailable as exc:
            refusals.append(exc)
            outcomes.append(f"{key} refused")

    async def run() -> None:
        flood = [asyncio.create_task(take("alice")) for _ in range(5)]
        other = asyncio.create_task(take("bob"))
        await asyncio.sleep(0.01)  # everyone has arrived: one holds, two wait, two refused
        assert outcomes == ["alice refused", "alice refused"]
        release.set()
        await asyncio.gather(*flood, other)

    asyncio.run(run())
    assert sorted(outcomes) == sorted(["alice refused"] * 2 + ["alice served"] * 3
                                      + ["bob served"])
    assert [(r.http_status, r.reason) for r in refusals] == [(429, Reason.RATE_LIMITED)] * 2
    assert all(r.retry_after_seconds >= 1 for r in refusals)
    assert len(locks) == 0


def test_the_task_holding_the_lock_may_take_it_again_at_the_limit() -> None:
    locks = UserLocks(max_per_key=1)

    async def run() -> str:
        async with locks.hold("alice"), locks.hold("alice"):
            return "re-entered"

    assert asyncio.run(run()) == "re-entered"


def test_without_a_limit_nobody_is_refused() -> None:
    locks = UserLocks()

    async def run() -> None:
        async def take() -> None:
            async with locks.hold("alice"):
                await asyncio.sleep(0)
        await asyncio.gather(*(take() for _ in range(100)))

    asyncio.run(run())
    assert len(locks) == 0
