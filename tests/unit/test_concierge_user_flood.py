"""One identity's flood of requests is refused at its share, and leaves everyone else alone."""

from __future__ import annotations

import asyncio

from localenv.app_env import BOB_TOKEN, AppEnv
from localenv.fixtures_concierge import ManualClock
from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.login import LoginService, per_user_login_rate
from pinniped_concierge.ratelimit import RateLimiter
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


def test_one_users_logins_beyond_their_rate_get_429_and_touch_nothing() -> None:
    """One replayed ID token from many addresses: each login would cost writes and end one
    of the user's older sessions."""
    clock = ManualClock()
    env = AppEnv()
    old = env.services.login
    env.services.login = LoginService(old.authenticator_set, old._user_objects, old._sessions,
                                      user_rate=RateLimiter(1, burst=2, max_tracked=10,
                                                            clock=clock))
    assert [env.login().status_code for _ in range(2)] == [200, 200]
    calls = len(env.kube.calls)
    refused = env.login()
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert env.audit()[-1]["reason"] == "rate_limited"
    assert env.kube.calls[calls:] == []
    assert env.login(BOB_TOKEN).status_code == 200  # another user is not affected
    clock.now += 1
    assert env.login().status_code == 200


def test_the_default_login_rate_lets_a_burst_of_max_sessions_through() -> None:
    clock = ManualClock()
    limiter = per_user_login_rate(50, clock=clock)
    assert all(limiter.check("alice") is None for _ in range(50))
    assert limiter.check("alice") is not None
    clock.now += 1
    assert sum(limiter.check("alice") is None for _ in range(10)) == 5
