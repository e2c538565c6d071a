"""Take a newly governed group out of every ClusterRole that holds it without an elevation.

Logins stop granting a group from the ID token as soon as an ElevationPolicy
governs it, but a user who logged in before the policy existed still has the
group in their ClusterRole, and every credential of theirs may impersonate it
until their next login (which may never come while a cached credential
works). So whenever the Lease holder sees a governed group it has not swept
yet (a new policy, or every group when it becomes the holder), it lists our
ClusterRoles and withdraws that group wherever no active elevation of the
user grants it (`UserObjects.withdraw`: conditional, under the user's lock).

It does so on every pass for the group's first `RECHECK_SECONDS`, not once:
another replica may not know the policy yet (its watch a moment behind, or
its list of the policies up to a second old, `elevation_store`), and a login
there writes the group back into a role just after the sweep took it out.
After that window every replica knows the policy, and the sweep stops
looking at the group. The list is paged, and costs one pass over the users
per pass while some group is in its window; policies are few and rarely
change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pinniped_concierge import naming
from pinniped_concierge.cluster_lists import ClusterLister
from pinniped_concierge.elevation_store import ElevationStore
from pinniped_concierge.errors import ServerError, Unavailable
from pinniped_concierge.kubeapi import Kind
from pinniped_concierge.userobjects import UserObjects, groups_from_rules

log = logging.getLogger("concierge.elevation")

PAGE_SIZE = 500
#: A newly governed group is swept on every pass for this long after its first sweep.
RECHECK_SECONDS = 30.0


class GovernedGroupSweep:
    def __init__(self, kube: ClusterLister, namespace: str, store: ElevationStore,
                 user_objects: UserObjects, interval_seconds: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._kube = kube
        self._namespace = namespace
        self._store = store
        self._user_objects = user_objects
        self._interval = interval_seconds
        self._clock = clock
        #: When each governed group was first swept (a whole pass) during this leadership.
        self._first_swept: dict[str, float] = {}

    async def run(self) -> None:
        """Sweep every interval while leading; a new leadership sweeps every group again."""
        self._first_swept = {}
        while True:
            try:
                await self.sweep()
            except (Unavailable, ServerError) as exc:
                log.warning("governed-group sweep failed, will retry: %s", exc)
            await asyncio.sleep(self._interval)

    async def sweep(self) -> int:
        """Withdraw newly governed groups held without an elevation; returns roles changed."""
        governed = await self._store.governed()
        now = self._clock()
        # A policy removed: forget its group, so that it is swept again if it returns.
        self._first_swept = {group: first for group, first in self._first_swept.items()
                             if group in governed}
        new = frozenset(group for group in governed
                        if now - self._first_swept.get(group, now) < RECHECK_SECONDS)
        if not new:
            return 0
        changed = 0
        continue_token: str | None = None
        while True:
            roles, continue_token = await self._kube.list_cluster(
                Kind.CLUSTER_ROLE, naming.owned_selector(self._namespace), PAGE_SIZE,
                continue_token)
            for role in roles:
                username = naming.annotation(role, naming.USERNAME_ANNOTATION)
                held = new.intersection(groups_from_rules(role.get("rules")))
                if username is None or not held or not naming.is_owned(role, self._namespace):
                    continue
                active = {g.group for g in await self._store.active_for(username, self._clock())}
                if held - active and await self._user_objects.withdraw(username, held - active):
                    changed += 1
            if not continue_token:
                break
        if changed:
            log.warning("took newly governed group(s) %s out of %d user(s)' ClusterRoles: "
                        "from now on only an approved elevation grants them",
                        sorted(new), changed)
        for group in new:  # the window starts with the first pass that went through
            self._first_swept.setdefault(group, now)
        return changed
