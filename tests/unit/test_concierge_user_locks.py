"""Per-user locks: one user's requests take turns, others' never wait, and the table empties."""

from __future__ import annotations

import asyncio

from pinniped_concierge.user_locks import UserLocks


def test_one_key_takes_turns_and_the_table_empties_afterwards() -> None:
    locks = UserLocks()
    inside: list[int] = []
    most = 0

    async def one(i: int) -> None:
        nonlocal most
        async with locks.hold("alice"):
            inside.append(i)
            most = max(most, len(inside))
            await asyncio.sleep(0)
            inside.remove(i)

    async def many() -> int:
        tasks = [asyncio.create_task(one(i)) for i in range(20)]
        await asyncio.sleep(0)
        waiting = len(locks)
        await asyncio.gather(*tasks)
        return waiting

    assert asyncio.run(many()) == 1  # twenty waiting tasks, one entry
    assert most == 1
    assert len(locks) == 0  # bounded by what is in flight, not by who was ever seen


def test_different_keys_do_not_wait_for_each_other() -> None:
    locks = UserLocks()

    async def both() -> None:
        async with locks.hold("alice"):
            async with asyncio.timeout(1):  # would deadlock if bob shared alice's lock
                async with locks.hold("bob"):
                    assert len(locks) == 2

    asyncio.run(both())
    assert len(locks) == 0


def test_the_task_holding_a_lock_may_take_it_again() -> None:
    locks = UserLocks()
    order: list[str] = []

    async def outer() -> None:
        async with locks.hold("alice"):
            assert locks.held("alice")
            async with asyncio.timeout(1), locks.hold("alice"):
                order.append("inner")
            assert locks.held("alice")  # still held after the inner release
            await asyncio.sleep(0)
            order.append("outer")

    async def other() -> None:
        await asyncio.sleep(0)
        async with locks.hold("alice"):
            order.append("other")

    async def run() -> None:
        await asyncio.gather(outer(), other())

    asyncio.run(run())
    assert order == ["inner", "outer", "other"]
    assert len(locks) == 0


def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    locks = UserLocks()

    async def run() -> None:
        async with locks.hold("alice"):
            waiter = asyncio.create_task(_take(locks))
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        assert len(locks) == 0

    asyncio.run(run())


async def _take(locks: UserLocks) -> None:
    async with locks.hold("alice"):
        pass
