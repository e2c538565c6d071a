"""A new policy's group leaves the ClusterRoles that got it from logins before the policy."""

from __future__ import annotations

import asyncio
from typing import cast

from localenv.app_env import NS
from localenv.elevation_app_env import ElevationEnv
from pinniped_concierge.cluster_lists import ClusterLister
from pinniped_concierge.governed_sweep import GovernedGroupSweep
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, Kind, Obj

READERS = "corp:readers"


class _Lister:
    """The fake, listing cluster-scoped objects as `ClusterLister` does (namespace None)."""

    def __init__(self, env: ElevationEnv) -> None:
        self.env = env

    async def list_cluster(self, kind: Kind, label_selector: str, limit: int,
                           continue_token: str | None = None) -> tuple[list[Obj], str | None]:
        return await self.env.kube.list(kind, cast(str, None), label_selector, limit,
                                        continue_token)


def _sweep(env: ElevationEnv) -> GovernedGroupSweep:
    return GovernedGroupSweep(cast(ClusterLister, _Lister(env)), NS, env.store,
                              env.user_objects, 1)


def test_a_group_granted_before_its_policy_is_withdrawn_once() -> None:
    env = ElevationEnv()
    env.credential()  # before any policy: the token's readers group is in the role
    assert READERS in env.role_groups()
    sweep = _sweep(env)
    assert asyncio.run(sweep.sweep()) == 0  # nothing governed yet
    env.govern(READERS)
    assert asyncio.run(sweep.sweep()) == 1
    assert env.role_groups() == ("corp:devs",)
    assert asyncio.run(sweep.sweep()) == 0  # swept already: no second list


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
