"""Groups never widen from the past, and "last seen" costs at most one write an hour.

The user's ClusterRole records the `iat` of the token that last set its
groups; an older token (replayed, or another laptop's cached one) gets only
the intersection and changes nothing. The role also records when the user
was last seen, written at most once an hour.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import pytest

from localenv.app_env import ALICE_TOKEN, AppEnv
from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import rfc3339, wire
from pinniped_concierge import group_history, naming
from pinniped_concierge.errors import Unavailable
from pinniped_concierge.group_history import RoleRecord
from pinniped_concierge.kubeapi import Conflict, Kind, Obj
from pinniped_concierge.naming import groups_from_rules
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.userobjects import (
    GROUPS_NARROWED_BY_AGE,
    UserObjects,
    UserRef,
)

NS = "pinniped-concierge"
USER = "corp:alice@example.com"
HOUR = group_history.LAST_LOGIN_INTERVAL_SECONDS


def identity(*groups: str) -> wire.Identity:
    return wire.Identity(USER, tuple(f"corp:{g}" for g in groups))


def short(groups: tuple[str, ...] | frozenset[str]) -> list[str]:
    return sorted(g.removeprefix("corp:") for g in groups)


# --- the rule itself --------------------------------------------------------------


def record(*groups: str, issued_at: int | None) -> RoleRecord:
    return RoleRecord(frozenset(groups), issued_at, None)


def test_a_new_role_takes_the_token_groups_and_time() -> None:
    grant = group_history.grant(["a", "b"], 100.7, None)
    assert (grant.groups, grant.withheld, grant.groups_issued_at) == (("a", "b"), (), 100)
    assert grant.role_groups == {"a", "b"}


@pytest.mark.parametrize("iat", [200, 200.9, 300])
def test_a_token_as_new_as_the_record_or_newer_sets_the_groups(iat: float) -> None:
    grant = group_history.grant(["a", "c"], iat, record("a", "b", issued_at=200))
    assert grant.groups == ("a", "c")
    assert grant.withheld == ()
    assert grant.role_groups == {"a", "c"}
    assert grant.groups_issued_at == max(200, int(iat))


@pytest.mark.parametrize("iat", [199.9, 100, None])
def test_an_older_token_gets_the_intersection_and_changes_nothing(iat: float | None) -> None:
    """None: a token without `iat` counts as the oldest of all."""
    recorded = record("a", "b", issued_at=200)
    grant = group_history.grant(["c", "b", "a-removed"], iat, recorded)
    assert grant.groups == ("b",)
    assert grant.withheld == ("c", "a-removed")
    assert grant.role_groups == {"a", "b"}  # not narrowed to the old token's view either
    assert grant.groups_issued_at == 200
    assert not grant.changes(recorded)


def test_without_a_recorded_time_any_token_sets_the_groups() -> None:
    """Roles from before the record existed, and IdPs that never send `iat`."""
    for iat in (None, 5):
        grant = group_history.grant(["x"], iat, record("a", issued_at=None))
        assert grant.groups == ("x",)
        assert grant.role_groups == {"x"}


def test_last_seen_is_due_after_an_hour_or_when_it_is_nonsense() -> None:
    now = 1_700_000_000.0
    assert RoleRecord(frozenset(), None, None).last_login_due(now)
    assert not RoleRecord(frozenset(), None, now - HOUR + 1).last_login_due(now)
    assert RoleRecord(frozenset(), None, now - HOUR).last_login_due(now)
    assert RoleRecord(frozenset(), None, now + 2 * HOUR).last_login_due(now)  # in the future


# --- on the ClusterRole -------------------------------------------------------------


@pytest.fixture
def versions(fake_kube: FakeKube) -> ObjectVersions:
    return fake_kube.watch(ObjectVersions(), NS)


@pytest.fixture
def objects(fake_kube: FakeKube, versions: ObjectVersions, clock: ManualClock) -> UserObjects:
    return UserObjects(fake_kube, NS, 300, versions, monotonic=clock, clock=clock)


def login(objects: UserObjects, groups: tuple[str, ...], iat: float | None) -> UserRef:
    return asyncio.run(objects.ensure(identity(*groups), iat))


def role_of(kube: FakeKube) -> Obj:
    role = kube.get(Kind.CLUSTER_ROLE, naming.user_object_name(USER, NS))
    assert role is not None
    return role


def allowed(kube: FakeKube) -> list[str]:
    return short(groups_from_rules(role_of(kube)["rules"]))


def stamp(kube: FakeKube, key: str) -> float | None:
    parsed = rfc3339.parse_time(naming.annotation(role_of(kube), key))
    return parsed.timestamp() if parsed else None


def test_the_role_records_the_token_time_and_last_seen(fake_kube: FakeKube,
                                                       objects: UserObjects,
                                                       clock: ManualClock) -> None:
    login(objects, ("devs",), clock.now - 30)
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == clock.now - 30
    assert stamp(fake_kube, naming.LAST_LOGIN_ANNOTATION) == clock.now
    assert naming.annotation(role_of(fake_kube), naming.GROUPS_ISSUED_AT_ANNOTATION) == \
        rfc3339.format_time(dt.datetime.fromtimestamp(clock.now - 30, dt.UTC))


@pytest.mark.parametrize("warm", [True, False])
def test_replaying_an_older_token_never_puts_a_removed_group_back(
        fake_kube: FakeKube, versions: ObjectVersions, clock: ManualClock, warm: bool) -> None:
    """The review's finding: a narrowing login, then a still-valid older token replayed."""
    ttl = 300 if warm else 0
    objects = UserObjects(fake_kube, NS, ttl, versions, monotonic=clock, clock=clock)
    t0 = clock.now
    login(objects, ("devs", "admins"), t0)
    narrowed = login(objects, ("devs",), t0 + 60)  # admins removed at the IdP
    assert short(narrowed.groups) == ["devs"]
    assert allowed(fake_kube) == ["devs"]

    fake_kube.calls.clear()
    replayed = login(objects, ("devs", "admins"), t0)
    assert short(replayed.groups) == ["devs"]
    assert short(replayed.withheld_groups) == ["admins"]
    assert replayed.identity == wire.Identity(USER, ("corp:devs",))
    assert json.loads(replayed.audit_fields()[GROUPS_NARROWED_BY_AGE]) == ["corp:admins"]
    assert allowed(fake_kube) == ["devs"]
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == t0 + 60
    assert "replace ClusterRole" not in fake_kube.calls
    if warm:
        assert fake_kube.calls == []  # the warm path decides from memory


def test_an_older_token_does_not_take_away_a_group_added_since(
        fake_kube: FakeKube, objects: UserObjects, clock: ManualClock) -> None:
    """Another laptop's cached token predates the group: its login gets less, the role and
    the newer credentials keep it (no flapping between the two laptops)."""
    t0 = clock.now
    login(objects, ("devs", "readers"), t0)  # the new laptop, after readers was added
    old_laptop = login(objects, ("devs",), t0 - 600)
    assert short(old_laptop.groups) == ["devs"]
    assert old_laptop.withheld_groups == ()
    assert old_laptop.audit_fields() == {}
    assert allowed(fake_kube) == ["devs", "readers"]


def test_a_token_without_iat_counts_as_oldest(fake_kube: FakeKube, objects: UserObjects,
                                              clock: ManualClock) -> None:
    login(objects, ("devs",), clock.now)
    undated = login(objects, ("devs", "admins"), None)
    assert short(undated.groups) == ["devs"]
    assert short(undated.withheld_groups) == ["admins"]
    assert allowed(fake_kube) == ["devs"]


def test_a_newer_token_still_widens_and_narrows(fake_kube: FakeKube, objects: UserObjects,
                                                clock: ManualClock) -> None:
    t0 = clock.now
    login(objects, ("devs",), t0)
    assert short(login(objects, ("devs", "ops"), t0 + 1).groups) == ["devs", "ops"]
    assert allowed(fake_kube) == ["devs", "ops"]
    assert short(login(objects, ("ops",), t0 + 2).groups) == ["ops"]
    assert allowed(fake_kube) == ["ops"]
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == t0 + 2


def test_another_replicas_narrowing_is_seen_through_the_watch(
        fake_kube: FakeKube, clock: ManualClock) -> None:
    first = UserObjects(fake_kube, NS, 300, fake_kube.watch(ObjectVersions(), NS),
                        monotonic=clock, clock=clock)
    second = UserObjects(fake_kube, NS, 300, fake_kube.watch(ObjectVersions(), NS),
                         monotonic=clock, clock=clock)
    t0 = clock.now
    login(first, ("devs", "admins"), t0)
    login(first, ("devs", "admins"), t0)  # cached at `first` now
    login(second, ("devs",), t0 + 60)  # the narrowing happens at the other replica
    replayed = login(first, ("devs", "admins"), t0)
    assert short(replayed.groups) == ["devs"]
    assert allowed(fake_kube) == ["devs"]


def test_a_write_decided_from_a_stale_view_is_refused_and_decided_again(
        fake_kube: FakeKube, clock: ManualClock) -> None:
    """`first` has not seen `second`'s narrowing yet (the watch lags) and gets a token newer
    than the one it knows of: its update of the role must not overwrite the narrowing."""
    first = UserObjects(fake_kube, NS, 300, fake_kube.watch(ObjectVersions(), NS),
                        monotonic=clock, clock=clock)
    second = UserObjects(fake_kube, NS, 300, monotonic=clock, clock=clock)
    t0 = clock.now
    login(first, ("devs", "admins"), t0)
    fake_kube.hold_watch = True
    login(second, ("devs",), t0 + 60)
    fake_kube.calls.clear()
    racing = login(first, ("devs", "admins", "ops"), t0 + 30)  # newer than t0, older than t0+60
    assert fake_kube.calls[0] == "replace ClusterRole"  # refused: the resourceVersion moved
    assert short(racing.groups) == ["devs"]
    assert short(racing.withheld_groups) == ["admins", "ops"]
    assert allowed(fake_kube) == ["devs"]
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == t0 + 60


def test_role_updates_carry_the_resource_version_they_were_decided_from(
        fake_kube: FakeKube, objects: UserObjects, clock: ManualClock) -> None:
    login(objects, ("devs",), clock.now)
    seen = [role_of(fake_kube)["metadata"]["resourceVersion"]]
    sent: list[Obj] = []
    replace = fake_kube.replace

    async def recording(kind: Kind, name: str, body: Obj, namespace: str | None = None) -> Obj:
        sent.append(body)
        return await replace(kind, name, body, namespace)

    fake_kube.replace = recording  # type: ignore[method-assign]
    login(objects, ("ops",), clock.now + 1)  # warm path
    seen.append(role_of(fake_kube)["metadata"]["resourceVersion"])
    objects.forget(USER)
    login(objects, ("devs",), clock.now + 2)  # cold path
    assert [body["metadata"].get("resourceVersion") for body in sent] == seen
    assert seen[0] != seen[1]


def test_the_cold_path_retries_a_lost_race_a_few_times_then_gives_up(
        fake_kube: FakeKube, objects: UserObjects, clock: ManualClock) -> None:
    login(objects, ("devs",), clock.now)
    objects.forget(USER)

    async def always_conflicting(kind: Kind, name: str, body: Obj,
                                 namespace: str | None = None) -> Obj:
        fake_kube.calls.append(f"replace {kind}")
        raise Conflict("resourceVersion precondition failed")

    fake_kube.replace = always_conflicting  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as info:
        login(objects, ("ops",), clock.now + 1)
    assert info.value.retry_after_seconds >= 1
    assert fake_kube.calls.count("replace ClusterRole") == 3


# --- "last seen", and the recorded time advancing, at most once an hour ------------------


def test_same_groups_cost_no_write_within_the_hour_and_one_after(
        fake_kube: FakeKube, versions: ObjectVersions, clock: ManualClock) -> None:
    objects = UserObjects(fake_kube, NS, 2 * HOUR, versions, monotonic=clock, clock=clock)
    t0 = clock.now
    login(objects, ("devs",), t0)
    for minutes in (10, 30, 59):
        clock.now = t0 + minutes * 60
        fake_kube.calls.clear()
        login(objects, ("devs",), clock.now)  # a newer token each time
        assert fake_kube.calls == []
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == t0  # not advanced yet
    assert stamp(fake_kube, naming.LAST_LOGIN_ANNOTATION) == t0

    clock.now = t0 + HOUR
    fake_kube.calls.clear()
    login(objects, ("devs",), clock.now - 5)
    assert fake_kube.calls == ["replace ClusterRole"]  # the hourly write, folded together
    assert stamp(fake_kube, naming.LAST_LOGIN_ANNOTATION) == t0 + HOUR
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == t0 + HOUR - 5
    fake_kube.calls.clear()
    login(objects, ("devs",), clock.now)
    assert fake_kube.calls == []


def test_the_hourly_write_keeps_the_record_when_the_token_is_older(
        fake_kube: FakeKube, objects: UserObjects, clock: ManualClock) -> None:
    t0 = clock.now
    login(objects, ("devs",), t0)
    clock.now = t0 + HOUR
    login(objects, ("devs", "admins"), t0 - 10)
    assert stamp(fake_kube, naming.LAST_LOGIN_ANNOTATION) == t0 + HOUR
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == t0
    assert allowed(fake_kube) == ["devs"]


def test_last_seen_is_written_by_the_cold_path_too_and_rides_along_other_writes(
        fake_kube: FakeKube, versions: ObjectVersions, clock: ManualClock) -> None:
    uncached = UserObjects(fake_kube, NS, 0, versions, monotonic=clock, clock=clock)
    t0 = clock.now
    login(uncached, ("devs",), t0)
    clock.now = t0 + 600
    fake_kube.calls.clear()
    login(uncached, ("devs",), clock.now)
    assert "replace ClusterRole" not in fake_kube.calls  # read, not due, nothing written
    login(uncached, ("ops",), clock.now)  # a write anyway: last seen comes with it
    assert stamp(fake_kube, naming.LAST_LOGIN_ANNOTATION) == t0 + 600
    clock.now = t0 + 600 + HOUR
    fake_kube.calls.clear()
    login(uncached, ("ops",), clock.now)
    assert fake_kube.calls.count("replace ClusterRole") == 1
    assert stamp(fake_kube, naming.LAST_LOGIN_ANNOTATION) == t0 + 600 + HOUR


def test_a_role_from_before_the_record_is_given_one_at_the_next_login(
        fake_kube: FakeKube, objects: UserObjects, clock: ManualClock) -> None:
    login(objects, ("devs",), clock.now)
    role = role_of(fake_kube)
    for key in (naming.GROUPS_ISSUED_AT_ANNOTATION, naming.LAST_LOGIN_ANNOTATION):
        del role["metadata"]["annotations"][key]
    objects.forget(USER)
    login(objects, ("devs",), clock.now - 5)
    assert stamp(fake_kube, naming.GROUPS_ISSUED_AT_ANNOTATION) == clock.now - 5
    assert stamp(fake_kube, naming.LAST_LOGIN_ANNOTATION) == clock.now


# --- through the HTTP API: the credential and the audit line carry what was granted ------


def test_the_credential_and_audit_line_carry_only_the_granted_groups() -> None:
    env = AppEnv()
    now = int(time.time())
    old = "eyJhbGciOiJSUzI1NiJ9.alice-older-token.signature"
    claims: Any = {  # FakeVerifier's own claims have no `iat`
        ALICE_TOKEN: {"email": "alice@example.com", "iat": now, "groups": ["devs"]},
        old: {"email": "alice@example.com", "iat": now - 120, "groups": ["devs", "admins"]}}
    env.verifier.claims = claims
    assert env.login().status_code == 200
    response = env.login(old)
    assert response.status_code == 200
    credential = wire.parse_credential_response(response.json())
    assert credential.identity == wire.Identity("corp:alice@example.com", ("corp:devs",))
    assert credential.impersonation_headers["Impersonate-Group"] == ["corp:devs"]
    line = env.audit()[-1]
    assert line["outcome"] == "success"
    assert line["groups"] == ["corp:devs"]
    assert json.loads(line[GROUPS_NARROWED_BY_AGE]) == ["corp:admins"]
    assert line["kubeApiCalls"] == 2
    assert GROUPS_NARROWED_BY_AGE not in env.audit()[0]
