"""The idle-user clean-up: who is idle, what goes, what stays, and at what cost."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from localenv import decoys
from localenv.fake_cluster_lists import ListingFakeKube
from localenv.fixtures_concierge import ManualClock
from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.idle_users import IdleUsers, SweepResult, cleanup_interval
from pinniped_concierge.kubeapi import Kind, Obj
from pinniped_concierge.login import LoginService
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

NS = "pinniped-concierge"
TIMEOUT = 3600
TTL = 600


def identity(name: str) -> wire.Identity:
    return wire.Identity(f"corp:{name}@example.com", ("corp:devs",))


class World:
    """A fake cluster with a watch mirror, a manual clock, and logins on it."""

    def __init__(self, *, watched: bool = True,
                 kube: type[ListingFakeKube] = ListingFakeKube, **idle: Any) -> None:
        self.clock = ManualClock()
        self.kube = kube(self.clock)
        self.versions = self.kube.watch(ObjectVersions(), NS) if watched else None
        self.objects = UserObjects(self.kube, NS, 300, self.versions,
                                   monotonic=self.clock, clock=self.clock)
        self.sessions = Sessions(self.kube, NS, TTL, 30, self.clock, versions=self.versions)
        self.idle = IdleUsers(self.kube, NS, TIMEOUT, versions=self.versions, clock=self.clock,
                              **idle)

    def login(self, name: str) -> None:
        async def go() -> None:
            user = await self.objects.ensure(identity(name))
            await self.sessions.start(user)

        asyncio.run(go())

    def sweep(self) -> SweepResult:
        return asyncio.run(self.idle.sweep())

    def has_objects(self, name: str) -> dict[Kind, bool]:
        object_name = naming.user_object_name(identity(name).username, NS)
        return {Kind.SERVICE_ACCOUNT: object_name in self.kube.names(Kind.SERVICE_ACCOUNT),
                Kind.CLUSTER_ROLE: object_name in self.kube.names(Kind.CLUSTER_ROLE),
                Kind.CLUSTER_ROLE_BINDING: object_name in self.kube.names(
                    Kind.CLUSTER_ROLE_BINDING)}

    def sessions_of(self, name: str) -> list[str]:
        key = naming.user_key(identity(name).username, NS)
        return [n for (kind, _, n), obj in self.kube.objects.items() if kind == Kind.SECRET
                and naming.label(obj, naming.USER_LABEL) == key]


ALL = {Kind.SERVICE_ACCOUNT: True, Kind.CLUSTER_ROLE: True, Kind.CLUSTER_ROLE_BINDING: True}
NONE = dict.fromkeys(ALL, False)


def test_users_without_a_live_session_for_the_timeout_lose_everything() -> None:
    world = World()
    world.login("alice")
    world.clock.now += 3000
    world.login("bob")
    # alice's session ended at +600; 3600 s later she is idle, bob (+3000 + 600) is not
    world.clock.now += TTL + TIMEOUT - 3000
    world.kube.calls.clear()
    assert world.sweep() == SweepResult(removed=1, spared=0, deferred=0, deletions=4)
    assert world.has_objects("alice") == NONE
    assert world.sessions_of("alice") == []
    assert world.has_objects("bob") == ALL
    assert len(world.sessions_of("bob")) == 1
    # the ServiceAccount first: that ends all of its tokens at once
    assert [c for c in world.kube.calls if c.startswith("delete")] == [
        "delete ServiceAccount", "delete ClusterRoleBinding", "delete ClusterRole",
        "delete Secret"]


def test_a_user_one_second_short_of_the_timeout_stays() -> None:
    world = World()
    world.login("alice")
    world.clock.now += TTL + TIMEOUT - 1
    assert world.sweep().removed == 0
    world.clock.now += 1
    assert world.sweep().removed == 1


def test_a_live_session_keeps_a_user_however_old_their_objects() -> None:
    world = World()
    world.login("alice")
    world.clock.now += 10 * TIMEOUT
    world.login("alice")  # warm: only a new session, the objects stay as old as they were
    world.clock.now += TTL - 1
    assert world.sweep().removed == 0
    assert world.has_objects("alice") == ALL


@pytest.mark.parametrize("annotation", [naming.LAST_LOGIN_ANNOTATION,
                                        naming.GROUPS_ISSUED_AT_ANNOTATION])
def test_the_roles_last_login_counts_as_seen(annotation: str) -> None:
    world = World()
    world.login("alice")
    world.clock.now += 10 * TIMEOUT
    role = world.kube.get(Kind.CLUSTER_ROLE, naming.user_object_name(
        identity("alice").username, NS))
    assert role is not None
    role["metadata"].setdefault("annotations", {})[annotation] = wire.format_time(
        dt.datetime.fromtimestamp(world.clock.now - TIMEOUT + 5, dt.UTC))
    assert world.sweep().removed == 0
    world.clock.now += 5
    assert world.sweep().removed == 1


def test_objects_left_without_a_service_account_are_removed_too() -> None:
    world = World()
    world.login("alice")
    name = naming.user_object_name(identity("alice").username, NS)
    asyncio.run(world.kube.delete(Kind.SERVICE_ACCOUNT, name, NS))  # e.g. by hand
    world.clock.now += TTL + TIMEOUT
    assert world.sweep().removed == 1
    assert world.has_objects("alice") == NONE
    assert world.sessions_of("alice") == []


def _decoys(world: World) -> list[tuple[Kind, str | None, str]]:
    """Objects that look like ours in one way or another, and are not: for each change, one
    user's objects, made by a real login and then changed in that one way only."""
    made = []
    for number, change in enumerate(DECOY_CHANGES):
        name = f"decoy{number}"
        world.login(name)
        key = naming.user_key(identity(name).username, NS)
        for (kind, namespace, object_name), obj in list(world.kube.objects.items()):
            if naming.label(obj, naming.USER_LABEL) != key:
                continue
            decoy = change(obj)
            del world.kube.objects[(kind, namespace, object_name)]
            world.kube.objects[(kind, namespace, decoy["metadata"]["name"])] = decoy
            made.append((kind, namespace, decoy["metadata"]["name"]))
    return made


def _set(path: tuple[str, ...], value: str | None) -> Callable[[Obj], Obj]:
    return lambda obj: decoys.changed(obj, path, value)


DECOY_CHANGES = [
    # same labels, but another concierge's namespace
    _set(("labels", naming.NAMESPACE_LABEL), "another-concierge"),
    # no managed-by label
    _set(("labels", naming.MANAGED_BY_LABEL), None),
    # a username annotation that does not match the name
    _set(("annotations", naming.USERNAME_ANNOTATION), "corp:mallory@example.com"),
    # a foreign name with our prefix, and our labels and annotation (sessions keep theirs)
    lambda obj: _set(("name",), naming.USER_OBJECT_PREFIX + "f" * 32)(obj)
    if obj["metadata"]["name"].startswith(naming.USER_OBJECT_PREFIX)
    else _set(("labels", naming.SESSION_LABEL), None)(obj),
    # the user label of someone else
    _set(("labels", naming.USER_LABEL), naming.user_key("corp:bob@example.com", NS)),
]


@pytest.mark.parametrize("watched", [True, False])
def test_objects_that_are_not_ours_are_never_touched(watched: bool) -> None:
    world = World(watched=watched)
    decoys = _decoys(world)
    assert len(decoys) == 4 * len(DECOY_CHANGES)
    world.clock.now += 100 * TIMEOUT
    world.kube.calls.clear()
    assert world.sweep().removed == 0
    assert [c for c in world.kube.calls if not c.startswith("list")] == []
    assert all(key in world.kube.objects for key in decoys)


def test_deletions_per_run_are_capped_oldest_users_first() -> None:
    world = World(max_deletions_per_run=8)  # two users' worth: 3 objects and 1 session each
    for name in ("u1", "u2", "u3", "u4", "u5"):
        world.login(name)
        world.clock.now += 10
    world.clock.now += TTL + TIMEOUT
    assert world.sweep() == SweepResult(removed=2, spared=0, deferred=3, deletions=8)
    assert world.has_objects("u1") == world.has_objects("u2") == NONE
    assert world.has_objects("u3") == ALL
    assert world.sweep() == SweepResult(removed=2, spared=0, deferred=1, deletions=8)
    assert world.sweep() == SweepResult(removed=1, spared=0, deferred=0, deletions=4)


def test_api_calls_are_paged_lists_and_one_delete_per_object() -> None:
    world = World(page_size=100)
    for number in range(250):
        world.login(f"user{number}")
    world.clock.now += 1
    world.kube.calls.clear()
    assert world.sweep().removed == 0
    # 3 pages of each: ServiceAccounts, ClusterRoles, ClusterRoleBindings, session Secrets
    assert sorted(world.kube.calls) == sorted(
        [f"list {kind}" for kind in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                     "Secret") for _ in range(3)])
    world.clock.now += TTL + TIMEOUT
    world.kube.calls.clear()
    assert world.sweep().deletions == 1000
    assert len(world.kube.calls) == 12 + 1000  # with the watch up, no look per user


class ComesBack(ListingFakeKube):
    """Logs a user in right after the survey listed the sessions (another replica)."""

    returning: World | None = None

    async def list(self, kind: Kind, namespace: str, label_selector: str, limit: int,
                   continue_token: str | None = None) -> tuple[list[Obj], str | None]:
        page = await super().list(kind, namespace, label_selector, limit, continue_token)
        if self.returning is not None and label_selector == naming.session_selector():
            world, self.returning = self.returning, None
            user = await world.objects.ensure(identity("alice"))
            await world.sessions.start(user)
        return page


@pytest.mark.parametrize("watched", [True, False])
def test_a_user_who_logs_in_during_the_clean_up_is_spared(watched: bool) -> None:
    world = World(watched=watched, kube=ComesBack)
    kube = world.kube
    assert isinstance(kube, ComesBack)
    world.login("alice")
    world.clock.now += TTL + TIMEOUT
    kube.returning = world
    assert world.sweep() == SweepResult(removed=0, spared=1, deferred=0, deletions=0)
    assert world.has_objects("alice") == ALL
    assert len(world.sessions_of("alice")) == 2


class RebuiltMeanwhile(ListingFakeKube):
    """A login (another replica) makes the user's ServiceAccount again right after the
    clean-up deleted it, and reads the role and binding that are still there."""

    world: World | None = None

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     uid: str | None = None) -> None:
        await super().delete(kind, name, namespace, uid)
        if kind == Kind.SERVICE_ACCOUNT and self.world is not None:
            world, self.world = self.world, None
            await world.objects.ensure(identity("alice"))


def test_a_user_rebuilt_right_after_their_service_account_went_keeps_role_and_binding(
        ) -> None:
    world = World(kube=RebuiltMeanwhile)
    kube = world.kube
    assert isinstance(kube, RebuiltMeanwhile)
    world.login("alice")
    world.clock.now += TTL + TIMEOUT
    kube.world = world
    world.sweep()
    assert world.has_objects("alice") == ALL  # the login's new account still has its role
    assert [c for c in kube.calls if c.startswith("delete")] == [
        "delete ServiceAccount", "delete Secret"]


def test_a_returning_user_is_rebuilt_because_the_watch_invalidates_the_cache() -> None:
    world = World()
    login = LoginService({}, world.objects, world.sessions)
    world.login("alice")  # alice is in every replica's warm cache now
    world.clock.now += TTL + TIMEOUT
    assert world.sweep().removed == 1
    world.kube.calls.clear()
    session = asyncio.run(login._start_session(identity("alice"), {},
                                               AuditEvent(request="login", client="")))
    assert session.token
    assert world.has_objects("alice") == ALL
    assert world.kube.calls == ["create ServiceAccount", "create ClusterRole",
                                "create ClusterRoleBinding", "create Secret",
                                "create TokenRequest"]


@pytest.mark.parametrize(("timeout", "interval"), [
    (600, 60.0), (1800, 180.0), (3600, 300.0), (30 * 86400, 300.0)])
def test_the_interval_is_a_tenth_of_the_timeout_within_one_to_five_minutes(
        timeout: int, interval: float) -> None:
    assert cleanup_interval(timeout) == interval
