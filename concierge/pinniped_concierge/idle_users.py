"""Remove the objects of users who stopped coming: the leader's idle-user clean-up.

Why: every managed user's ClusterRoleBinding makes every request in the
cluster slower, since the RBAC authorizer walks all ClusterRoleBindings on
each check, and impersonation adds a check per user and per group (on the
local apiserver, p50 of an unrelated request: 1.5 ms with 1 user, 4.6 ms with
10,000, 8.4 ms with 20,000; about +0.35 ms per 1,000 users). A returning user
costs only 3 writes to make again, so users idle for
`identityIdleTimeoutSeconds` lose their ServiceAccount, ClusterRoleBinding,
ClusterRole and session Secrets.

"Last seen" is derived from what exists, so logins write nothing for it: the
newest of the user's session Secrets' `expires-at` (a live session is in the
future, so its user is never idle), the ClusterRole's last-login annotation
(written at most once an hour by logins) and groups-issued-at, and the
objects' creationTimestamps.

Bounded: lists are paged, at most `max_deletions_per_run` deletions per run
(the oldest users first; the rest wait for the next run), and only the
replica holding the Lease runs it.

Only ours: an object is deleted only if `user_ownership` says whose it is,
and with a uid precondition, so one made again meanwhile is not.

Racing a login of the same user on another replica: just before deleting,
the user's session Secrets and ServiceAccount are looked at again (in the
watch's mirror; one list or read while it is down), and a user with a new
session or a new ServiceAccount is left alone. The ServiceAccount goes
first, which ends all its tokens at once; a login whose TokenRequest then
finds it gone rebuilds the user's objects and retries (`login`), and every
replica's per-user cache learns of the deletions from its watch. The binding
and role go next, unless a new ServiceAccount has appeared by then (a login
is rebuilding the user: it needs them). What remains is a window of a few
milliseconds between that look and the deletes, in which a login could end
up with a credential whose role is gone; its next login puts the role back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from pinniped_apis import rfc3339
from pinniped_concierge import naming
from pinniped_concierge.cluster_lists import ClusterLister
from pinniped_concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj, Page, pages
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.user_ownership import session_owner, user_object_owner

log = logging.getLogger("concierge.idle_users")

PAGE_SIZE = 500
#: About 4 deletions per user: a few hundred users per run, a few seconds of API calls.
DEFAULT_MAX_DELETIONS_PER_RUN = 1000
#: The clean-up runs every tenth of the idle timeout, but at least once a minute apart and
#: at least every five minutes: a user is removed at most that late, and each run costs
#: about four list calls per 500 managed users.
MIN_INTERVAL_SECONDS = 60.0
MAX_INTERVAL_SECONDS = 300.0


def cleanup_interval(idle_timeout_seconds: float) -> float:
    return min(MAX_INTERVAL_SECONDS, max(MIN_INTERVAL_SECONDS, idle_timeout_seconds / 10))


class IdleUsersAPI(KubeAPI, ClusterLister, Protocol):
    """What the clean-up calls: namespaced reads, lists and deletes, and cluster lists."""


@dataclass
class _User:
    username: str
    last_seen: float = float("-inf")
    #: (name, uid) of each object found, by kind.
    objects: dict[Kind, tuple[str, str | None]] = field(default_factory=dict)
    sessions: dict[str, str | None] = field(default_factory=dict)

    def seen(self, when: float | None) -> None:
        if when is not None:
            self.last_seen = max(self.last_seen, when)


@dataclass(frozen=True)
class SweepResult:
    #: Users whose objects were deleted.
    removed: int
    #: Users idle, but left alone because they logged in meanwhile.
    spared: int
    #: Idle users left for the next run (the deletion cap was reached).
    deferred: int
    deletions: int


class IdleUsers:
    def __init__(self, kube: IdleUsersAPI, namespace: str, idle_timeout_seconds: float, *,
                 versions: ObjectVersions | None = None,
                 clock: Callable[[], float] = time.time,
                 max_deletions_per_run: int = DEFAULT_MAX_DELETIONS_PER_RUN,
                 page_size: int = PAGE_SIZE) -> None:
        self._kube = kube
        self._namespace = namespace
        self._timeout = idle_timeout_seconds
        self._versions = versions
        self._clock = clock
        self._max_deletions = max_deletions_per_run
        self._page_size = page_size

    async def sweep(self) -> SweepResult:
        now = self._clock()
        users = await self._survey()
        idle = sorted((u for u in users.values() if now - u.last_seen >= self._timeout),
                      key=lambda u: u.last_seen)
        removed = spared = deletions = 0
        for index, user in enumerate(idle):
            budget = len(user.objects) + len(user.sessions)
            if deletions and deletions + budget > self._max_deletions:
                result = SweepResult(removed, spared, len(idle) - index, deletions)
                break
            done = await self._remove(user)
            if done is None:
                spared += 1
            else:
                removed, deletions = removed + 1, deletions + done
        else:
            result = SweepResult(removed, spared, 0, deletions)
        if result.removed or result.spared or result.deferred:
            log.info("idle users (no live session for %d s): removed %d, spared %d (they "
                     "came back), left %d for the next run; %d deletions", self._timeout,
                     result.removed, result.spared, result.deferred, result.deletions)
        return result

    # --- what exists -----------------------------------------------------------------

    async def _survey(self) -> dict[str, _User]:
        """Every user any of our objects stands for, with their last-seen evidence."""
        users: dict[str, _User] = {}

        def user(username: str) -> _User:
            return users.setdefault(naming.user_key(username, self._namespace), _User(username))

        owned = naming.owned_selector(self._namespace)
        for kind in (Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE, Kind.CLUSTER_ROLE_BINDING):
            for obj in await self._list(kind, owned):
                username = user_object_owner(obj, self._namespace)
                if username is None:
                    continue
                found = user(username)
                found.objects[kind] = (naming.metadata_field(obj, "name") or "",
                                       naming.metadata_field(obj, "uid"))
                found.seen(_time(obj, None))
                if kind == Kind.CLUSTER_ROLE:
                    found.seen(_time(obj, naming.LAST_LOGIN_ANNOTATION))
                    found.seen(_time(obj, naming.GROUPS_ISSUED_AT_ANNOTATION))
        for secret in await self._list(Kind.SECRET, naming.session_selector()):
            username = session_owner(secret, self._namespace)
            if username is None:
                continue
            found = user(username)
            found.sessions[naming.metadata_field(secret, "name") or ""] = (
                naming.metadata_field(secret, "uid"))
            found.seen(_time(secret, None))
            found.seen(_time(secret, naming.EXPIRES_ANNOTATION))
        return users

    async def _list(self, kind: Kind, selector: str) -> list[Obj]:
        def fetch(token: str | None) -> Awaitable[Page]:
            if kind in (Kind.CLUSTER_ROLE, Kind.CLUSTER_ROLE_BINDING):
                return self._kube.list_cluster(kind, selector, self._page_size, token)
            return self._kube.list(kind, self._namespace, selector, self._page_size, token)

        return [item async for page in pages(fetch) for item in page]

    # --- removing one user ---------------------------------------------------------------

    async def _remove(self, user: _User) -> int | None:
        """Delete the user's objects; the number of deletions, or None if they came back."""
        if await self._came_back(user):
            return None
        deletions = 0
        account = user.objects.get(Kind.SERVICE_ACCOUNT)
        if account is not None:
            deletions += 1
            try:
                await self._kube.delete(Kind.SERVICE_ACCOUNT, account[0], self._namespace,
                                        uid=account[1])
            except Conflict:  # made again since the list: a login is using it
                return None
            except NotFound:
                pass
        if not await self._rebuilding(user):
            for kind in (Kind.CLUSTER_ROLE_BINDING, Kind.CLUSTER_ROLE):
                if kind in user.objects:
                    deletions += 1
                    name, uid = user.objects[kind]
                    with contextlib.suppress(NotFound, Conflict):
                        await self._kube.delete(kind, name, uid=uid)
        for name, uid in user.sessions.items():  # all expired: the user was idle
            deletions += 1
            with contextlib.suppress(NotFound, Conflict):
                await self._kube.delete(Kind.SECRET, name, self._namespace, uid=uid)
        return deletions

    async def _came_back(self, user: _User) -> bool:
        """Has the user logged in since the survey (a session or ServiceAccount we did not see)?"""
        key = naming.user_key(user.username, self._namespace)
        mirrored = self._versions.of_user(Kind.SECRET, key) if self._versions else None
        if mirrored is not None:
            sessions = set(mirrored)
        else:
            items, _ = await self._kube.list(
                Kind.SECRET, self._namespace,
                naming.user_session_selector(user.username, self._namespace), self._page_size)
            sessions = {naming.metadata_field(i, "name") or "" for i in items}
        if sessions - set(user.sessions):
            return True
        accounts = (self._versions.of_user(Kind.SERVICE_ACCOUNT, key)
                    if self._versions else None)
        listed = user.objects.get(Kind.SERVICE_ACCOUNT)
        if accounts is None:
            return False  # the delete's uid precondition covers a ServiceAccount made again
        return any(listed is None or seen.uid != listed[1] for seen in accounts.values())

    async def _rebuilding(self, user: _User) -> bool:
        """After deleting the ServiceAccount: has a login already made a new one?

        The mirror may still show the deleted one for a few milliseconds;
        only another uid means a new one.
        """
        key = naming.user_key(user.username, self._namespace)
        listed = user.objects.get(Kind.SERVICE_ACCOUNT)
        gone = listed[1] if listed is not None else None
        accounts = (self._versions.of_user(Kind.SERVICE_ACCOUNT, key)
                    if self._versions else None)
        if accounts is not None:
            return any(seen.uid != gone for seen in accounts.values())
        try:
            account = await self._kube.read(
                Kind.SERVICE_ACCOUNT, naming.user_object_name(user.username, self._namespace),
                self._namespace)
        except NotFound:
            return False
        return naming.metadata_field(account, "uid") != gone


def _time(obj: Obj, annotation: str | None) -> float | None:
    """An RFC 3339 annotation of `obj` (or its creationTimestamp) as a timestamp."""
    raw = (naming.annotation(obj, annotation) if annotation is not None
           else naming.metadata_field(obj, "creationTimestamp"))
    parsed = rfc3339.parse_time(raw)
    return parsed.timestamp() if parsed is not None else None
