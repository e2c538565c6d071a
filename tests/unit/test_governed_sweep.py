"""A new policy's group leaves the ClusterRoles that got it from logins before the policy."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from localenv.app_env import NS
from localenv.elevation_app_env import ElevationEnv
from localenv.fixtures_concierge import ManualClock
from pinniped_concierge.cluster_lists import ClusterLister
from pinniped_concierge.governed_sweep import RECHECK_SECONDS, GovernedGroupSweep
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, Kind, Obj

READERS = "corp:readers"


class _Lister:
    """The fake, listing cluster-scoped objects as `ClusterLister` does (namespace None)."""

    def __init__(self, env: ElevationEnv) -> None:
        self.env = env
        self.lists = 0

    async def list_cluster(self, kind: Kind, label_selector: str, limit: int,
                           continue_token: str | None = None) -> tuple[list[Obj], str | None]:
        self.lists += 1
        return await self.env.kube.list(kind, cast(str, None), label_selector, limit,
                                        continue_token)


def _sweep(env: ElevationEnv, clock: ManualClock | None = None,
           lister: _Lister | None = None) -> GovernedGroupSweep:
    return GovernedGroupSweep(cast(ClusterLister, lister or _Lister(env)), NS, env.store,
                              env.user_objects, 1, clock=clock or ManualClock(time.time()))


def test_a_group_granted_before_its_policy_is_withdrawn_and_looked_at_for_30_s() -> None:
    env = ElevationEnv()
    env.credential()  # before any policy: the token's readers group is in the role
    assert READERS in env.role_groups()
    clock, lister = ManualClock(time.time()), _Lister(env)
    sweep = _sweep(env, clock, lister)
    assert asyncio.run(sweep.sweep()) == 0  # nothing governed yet
    assert lister.lists == 0
    env.govern(READERS)
    assert asyncio.run(sweep.sweep()) == 1
    assert env.role_groups() == ("corp:devs",)
    clock.now += RECHECK_SECONDS - 1
    assert asyncio.run(sweep.sweep()) == 0  # looked again: nothing wrote it back
    assert lister.lists == 2
    clock.now += 1
    assert asyncio.run(sweep.sweep()) == 0  # its window is over: no list any more
    assert lister.lists == 2


def test_an_active_elevation_keeps_the_group_through_the_sweep() -> None:
    env = ElevationEnv()
    env.credential()
    env.elevate(READERS)
    env.govern(READERS)
    assert asyncio.run(_sweep(env).sweep()) == 0
    assert READERS in env.role_groups()


def test_a_policy_removed_and_applied_again_is_swept_again() -> None:
    env = ElevationEnv()
    env.credential()
    sweep = _sweep(env)
    env.govern(READERS)
    assert asyncio.run(sweep.sweep()) == 1
    env.kube.delete_custom(ELEVATION_POLICIES, "prod")
    assert asyncio.run(sweep.sweep()) == 0
    env.credential()  # ungoverned again: the token grants it
    assert READERS in env.role_groups()
    env.govern(READERS)
    assert asyncio.run(sweep.sweep()) == 1
    assert READERS not in env.role_groups()
