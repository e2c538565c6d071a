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


def test_held_is_true_only_for_the_task_holding_the_lock() -> None:
    locks = UserLocks()
    seen: list[bool] = []

    async def other() -> None:
        seen.append(locks.held("alice"))  # alice's lock is taken, but not by this task

    async def run() -> None:
        assert not locks.held("alice")  # nobody holds it
        async with locks.hold("alice"):
            seen.append(locks.held("alice"))
            await asyncio.create_task(other())

    asyncio.run(run())
    assert seen == [True, False]


def test_a_task_that_let_go_waits_its_turn_like_any_other() -> None:
    """Once released, the lock is no longer the task's: taking it again (the sweeper, one
    user's sessions after another) queues behind whoever was already waiting."""
    locks = UserLocks()
    order: list[str] = []

    async def other() -> None:
        async with locks.hold("alice"):
            order.append("other in")
            await asyncio.sleep(0)
            order.append("other out")

    async def run() -> None:
        async with locks.hold("alice"):
            waiter = asyncio.create_task(other())
            await asyncio.sleep(0)  # `other` now waits for the lock
        async with locks.hold("alice"):  # released, and `other` has not run yet
            order.append("again")
        await waiter

    asyncio.run(run())
    assert order == ["other in", "other out", "again"]
    assert len(locks) == 0
