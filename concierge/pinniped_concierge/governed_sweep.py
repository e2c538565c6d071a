"""Keep governed groups out of every ClusterRole that holds one without an elevation.

Logins stop granting a group from the ID token as soon as an ElevationPolicy
governs it, and the controller takes an ended elevation's group back. What
neither covers is a governed group that reached a role some other way: a
login before the policy existed (or on a replica whose view of the policies
was behind), an approved request an administrator deleted instead of
revoking, a request that stopped parsing. Every credential of that user may
impersonate the group until their next login, which may never come while a
cached credential works.

So the Lease holder compares, on every pass (`elevation.syncIntervalSeconds`),
each of our ClusterRoles that allows a governed group with that user's open
requests for it, and withdraws the group where no active one grants it
(`UserObjects.withdraw`: conditional, under the user's lock). It reads both
from memory: the `object_watch` mirror records each ClusterRole's groups, and
the elevation store its requests, so a pass costs no API call unless it
finds something to take back. A request the mirror shows Pending is read
from the API before its group is taken back: it may have been approved a
moment ago, and another replica's login granted it already.

While either mirror is not in step, the pass lists our ClusterRoles from the
API instead, for the groups that became governed in the last
`RECHECK_SECONDS` (a whole list per pass would cost too much at 20,000
users); the mirrors catch up on the rest once they are back.
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
from pinniped_concierge.kubeapi import Kind, pages
from pinniped_concierge.naming import groups_from_rules
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.userobjects import UserObjects

log = logging.getLogger("concierge.elevation")

PAGE_SIZE = 500
#: A newly governed group is swept on every pass for this long after its first sweep.
RECHECK_SECONDS = 30.0


class GovernedGroupSweep:
    def __init__(self, kube: ClusterLister, namespace: str, store: ElevationStore,
                 user_objects: UserObjects, interval_seconds: float, *,
                 versions: ObjectVersions | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._kube = kube
        self._versions = versions
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
        """Withdraw governed groups held without an open request; returns roles changed."""
        governed = await self._store.governed()
        now = self._clock()
        # A policy removed: forget its group, so that it is listed again if it returns.
        self._first_swept = {group: first for group, first in self._first_swept.items()
                             if group in governed}
        new = frozenset(group for group in governed
                        if now - self._first_swept.get(group, now) < RECHECK_SECONDS)
        held = (self._versions.holding(governed)
                if self._versions is not None and self._store.synced() else None)
        if held is None:
            held = await self._listed(new) if new else []
        changed = 0
        for username, groups in held:
            dropped = groups - await self._granted(username, groups)
            if dropped and await self._user_objects.withdraw(username, dropped):
                changed += 1
        if changed:
            log.warning("took governed group(s) out of %d user(s)' ClusterRoles that held them "
                        "without an open elevation request: only an approved elevation "
                        "grants them", changed)
        for group in new:  # the window starts with the first pass that went through
            self._first_swept.setdefault(group, now)
        return changed

    async def _granted(self, username: str, groups: frozenset[str]) -> set[str]:
        """Which of `groups` an active request of the user grants. A request the mirror
        still shows Pending is read from the API first (one GET, only in this case): it may
        have been approved a moment ago, and another replica's login granted it already."""
        granted: set[str] = set()
        for mirrored in await self._store.requests_of(username):
            if mirrored.spec.group not in groups or mirrored.spec.group in granted:
                continue
            request = mirrored
            if mirrored.status.phase == "Pending":
                request = await self._store.read_fresh(mirrored.name) or mirrored
            if request.active(self._clock()):
                granted.add(request.spec.group)
        return granted

    async def _listed(self, groups: frozenset[str]) -> list[tuple[str, frozenset[str]]]:
        """(username, which of `groups`) for our ClusterRoles, read from the API."""
        held: list[tuple[str, frozenset[str]]] = []
        selector = naming.owned_selector(self._namespace)
        async for roles in pages(lambda token: self._kube.list_cluster(
                Kind.CLUSTER_ROLE, selector, PAGE_SIZE, token)):
            for role in roles:
                username = naming.annotation(role, naming.USERNAME_ANNOTATION)
                these = groups.intersection(groups_from_rules(role.get("rules")))
                if username is not None and these and naming.is_owned(role, self._namespace):
                    held.append((username, these))
        return held
