"""A new policy's group leaves the ClusterRoles that got it from logins before the policy."""

from __future__ import annotations

import asyncio
import time
from typing import cast

from localenv.app_env import NS
from localenv.elevation_app_env import PROD, ElevationEnv
from localenv.fixtures_concierge import ManualClock
from pinniped_concierge.cluster_lists import ClusterLister
from pinniped_concierge.governed_sweep import RECHECK_SECONDS, GovernedGroupSweep
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, ELEVATION_REQUESTS, Kind, Obj
from pinniped_concierge.object_watch import ObjectVersions

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


def _mirrored(env: ElevationEnv) -> ObjectVersions:
    """The ClusterRole mirror as the watch would have it now."""
    versions = ObjectVersions()
    versions.reset(Kind.CLUSTER_ROLE, [obj for (kind, _, _), obj in env.kube.objects.items()
                                       if kind == Kind.CLUSTER_ROLE])
    return versions


def _from_memory(env: ElevationEnv, versions: ObjectVersions,
                 clock: ManualClock | None = None) -> GovernedGroupSweep:
    return GovernedGroupSweep(cast(ClusterLister, _Lister(env)), NS, env.store,
                              env.user_objects, 1, versions=versions,
                              clock=clock or ManualClock(time.time()))


def test_an_approved_request_deleted_by_hand_loses_its_group_at_the_next_pass() -> None:
    env = ElevationEnv()
    env.govern(PROD)
    request = env.elevate(PROD)
    env.credential()
    assert PROD in env.role_groups()
    versions, clock = _mirrored(env), ManualClock(time.time())
    sweep = _from_memory(env, versions, clock)
    env.kube.calls.clear()
    assert asyncio.run(sweep.sweep()) == 0  # an active elevation grants it
    assert env.kube.calls == []  # from memory: not one API call
    clock.now += RECHECK_SECONDS + 60  # long after the policy appeared: still looked at
    asyncio.run(env.kube.delete_namespaced_custom(ELEVATION_REQUESTS, NS,
                                                  request["metadata"]["name"]))
    assert asyncio.run(sweep.sweep()) == 1
    assert PROD not in env.role_groups()


def test_a_group_held_with_only_a_pending_request_is_read_fresh_then_withdrawn() -> None:
    env = ElevationEnv()
    env.credential()  # readers from the token, before any policy
    env.elevate(READERS, phase="Pending")
    env.govern(READERS)
    env.kube.calls.clear()
    assert asyncio.run(_from_memory(env, _mirrored(env)).sweep()) == 1
    assert READERS not in env.role_groups()
    assert "read ElevationRequest" in " ".join(env.kube.calls)  # the fresh read
