"""Per-user objects: exactly the impersonation the user proved, cached for returning users.

The cache is trusted only while the watch mirror (`ObjectVersions`, fed here
by `FakeKube.watch` without delay) confirms none of the user's objects changed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import wire
from pinniped_concierge import naming, userobjects
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import Conflict, Kind, NotFound, Obj
from pinniped_concierge.naming import groups_from_rules
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.userobjects import UserObjects, impersonation_rules

NS = "pinniped-concierge"
ALICE = wire.Identity("corp:alice@example.com", ("corp:devs", "corp:readers"))



@pytest.fixture
def versions(fake_kube: FakeKube) -> ObjectVersions:
    return fake_kube.watch(ObjectVersions(), NS)


@pytest.fixture
def objects(fake_kube: FakeKube, versions: ObjectVersions, clock: ManualClock) -> UserObjects:
    return UserObjects(fake_kube, NS, cache_ttl_seconds=300, versions=versions, monotonic=clock)


def name_of(username: str, namespace: str = NS) -> str:
    return naming.user_object_name(username, namespace)


def ensure(objects: UserObjects, identity: wire.Identity = ALICE) -> str:
    return asyncio.run(objects.ensure(identity)).service_account


def test_names_are_dns_safe_hashes_of_the_username_and_namespace() -> None:
    name = name_of("corp:Ålice Ünicode@EXAMPLE.com/../x")
    assert name.startswith("pinniped-user-")
    assert len(name) <= 63
    assert all(c.isdigit() or c.islower() or c == "-" for c in name)
    assert name_of("a") != name_of("b")
    # two concierges in different namespaces never share a ClusterRole
    assert name_of("a", "staging") != name_of("a", "production")


def test_first_login_creates_the_three_objects(fake_kube: FakeKube,
                                               objects: UserObjects) -> None:
    name = ensure(objects)
    assert name == name_of(ALICE.username)
    sa = fake_kube.get(Kind.SERVICE_ACCOUNT, name, NS)
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    binding = fake_kube.get(Kind.CLUSTER_ROLE_BINDING, name)
    assert sa is not None
    assert role is not None
    assert binding is not None
    for obj in (sa, role, binding):
        assert obj["metadata"]["labels"][naming.MANAGED_BY_LABEL] == naming.MANAGED_BY
        assert obj["metadata"]["labels"][naming.NAMESPACE_LABEL] == NS
        assert obj["metadata"]["annotations"][naming.USERNAME_ANNOTATION] == ALICE.username
    assert sa["automountServiceAccountToken"] is False
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
         "resourceNames": ["corp:alice@example.com"]},
        {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
         "resourceNames": ["corp:devs", "corp:readers"]},
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": name}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NS}]


def test_a_user_without_groups_gets_no_groups_rule(fake_kube: FakeKube,
                                                   objects: UserObjects) -> None:
    """An empty resourceNames would allow impersonating every group."""
    name = ensure(objects, wire.Identity("corp:carol@example.com"))
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert [r["resources"] for r in role["rules"]] == [["users"]]


def test_a_returning_user_with_the_same_groups_costs_nothing(fake_kube: FakeKube,
                                                             objects: UserObjects) -> None:
    ensure(objects)
    fake_kube.calls.clear()
    ensure(objects, wire.Identity(ALICE.username, ("corp:readers", "corp:devs")))
    assert fake_kube.calls == []


def test_changed_groups_rewrite_the_role_in_one_call(fake_kube: FakeKube,
                                                     objects: UserObjects) -> None:
    name = ensure(objects)
    fake_kube.calls.clear()
    ensure(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    assert fake_kube.calls == ["replace ClusterRole"]
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert groups_from_rules(role["rules"]) == ("corp:devs",)
    # and losing every group drops the groups rule entirely
    ensure(objects, wire.Identity(ALICE.username))
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert [r["resources"] for r in role["rules"]] == [["users"]]


def test_after_a_restart_existing_objects_are_adopted_and_corrected(
        fake_kube: FakeKube, versions: ObjectVersions, clock: ManualClock) -> None:
    first = UserObjects(fake_kube, NS, 300, versions, monotonic=clock)
    name = ensure(first)
    fake_kube.calls.clear()
    restarted = UserObjects(fake_kube, NS, 300, versions, monotonic=clock)
    ensure(restarted, wire.Identity(ALICE.username, ("corp:devs",)))
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert groups_from_rules(role["rules"]) == ("corp:devs",)
    assert "replace ClusterRole" in fake_kube.calls
    assert "replace ClusterRoleBinding" not in fake_kube.calls


def test_the_cache_expires(fake_kube: FakeKube, objects: UserObjects, clock: ManualClock) -> None:
    ensure(objects)
    clock.now += 299
    fake_kube.calls.clear()
    ensure(objects)
    assert fake_kube.calls == []
    clock.now += 2
    ensure(objects)
    assert "create ServiceAccount" in fake_kube.calls


@pytest.mark.parametrize("kind", [Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE,
                                  Kind.CLUSTER_ROLE_BINDING])
def test_a_deleted_object_is_recreated_at_the_next_login(fake_kube: FakeKube,
                                                          objects: UserObjects,
                                                          kind: Kind) -> None:
    name = ensure(objects)
    namespace = NS if kind == Kind.SERVICE_ACCOUNT else None
    asyncio.run(fake_kube.delete(kind, name, namespace))
    ensure(objects)
    assert fake_kube.get(kind, name, namespace) is not None


def test_a_role_changed_by_another_writer_is_corrected_at_the_next_login(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    """Another replica widened the role: the same groups here must not hit a stale cache."""
    name = ensure(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    other = UserObjects(fake_kube, NS, 300)  # a second replica, same namespace
    asyncio.run(other.ensure(ALICE))  # its token still had corp:readers
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert groups_from_rules(role["rules"]) == ("corp:devs", "corp:readers")

    fake_kube.calls.clear()
    ensure(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert groups_from_rules(role["rules"]) == ("corp:devs",)
    assert "replace ClusterRole" in fake_kube.calls


def test_the_cache_is_off_while_the_watch_is_down(fake_kube: FakeKube, objects: UserObjects,
                                                  versions: ObjectVersions) -> None:
    ensure(objects)
    versions.lost(Kind.CLUSTER_ROLE_BINDING)
    for _ in range(2):
        fake_kube.calls.clear()
        ensure(objects)
        assert "create ServiceAccount" in fake_kube.calls
    fake_kube.watch(versions, NS)  # the watch is back: listed afresh
    ensure(objects)
    fake_kube.calls.clear()
    ensure(objects)
    assert fake_kube.calls == []


def test_our_own_role_update_keeps_the_cache_warm(fake_kube: FakeKube,
                                                  objects: UserObjects) -> None:
    ensure(objects)
    ensure(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    fake_kube.calls.clear()
    ensure(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    assert fake_kube.calls == []


def test_without_a_watch_there_is_no_cache(fake_kube: FakeKube, clock: ManualClock) -> None:
    objects = UserObjects(fake_kube, NS, 300, monotonic=clock)
    ensure(objects)
    fake_kube.calls.clear()
    ensure(objects)
    assert "create ServiceAccount" in fake_kube.calls


def test_a_vanished_role_is_recreated_when_groups_change(fake_kube: FakeKube,
                                                         objects: UserObjects) -> None:
    """Even when the watch has not delivered the deletion yet (the update gets NotFound)."""
    name = ensure(objects)
    del fake_kube.objects[(Kind.CLUSTER_ROLE, None, name)]  # behind the watch's back
    fake_kube.calls.clear()
    ensure(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    assert fake_kube.calls[:2] == ["replace ClusterRole", "create ServiceAccount"]
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert groups_from_rules(role["rules"]) == ("corp:devs",)


def test_a_binding_pointing_elsewhere_is_replaced(fake_kube: FakeKube,
                                                  objects: UserObjects) -> None:
    name = ensure(objects)
    binding = fake_kube.get(Kind.CLUSTER_ROLE_BINDING, name)
    assert binding is not None
    binding["roleRef"]["name"] = "cluster-admin"
    binding["subjects"].append({"kind": "User", "name": "mallory"})
    objects.forget(ALICE.username)
    ensure(objects)
    binding = fake_kube.get(Kind.CLUSTER_ROLE_BINDING, name)
    assert binding is not None
    assert binding["roleRef"]["name"] == name
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": NS}]


@pytest.mark.parametrize("kind", [Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE,
                                  Kind.CLUSTER_ROLE_BINDING])
def test_objects_that_are_not_ours_are_never_adopted(fake_kube: FakeKube, objects: UserObjects,
                                                      kind: Kind) -> None:
    name = name_of(ALICE.username)
    namespace = NS if kind == Kind.SERVICE_ACCOUNT else None
    asyncio.run(fake_kube.create(kind, {"metadata": {"name": name}}, namespace))
    with pytest.raises(ServerError) as info:
        ensure(objects)
    assert info.value.reason == Reason.USER_OBJECT_CONFLICT


def test_an_object_annotated_for_another_user_is_not_adopted(fake_kube: FakeKube,
                                                             objects: UserObjects) -> None:
    name = name_of(ALICE.username)
    asyncio.run(fake_kube.create(Kind.SERVICE_ACCOUNT, {"metadata": {
        "name": name, "labels": naming.user_labels("corp:mallory", NS),
        "annotations": {naming.USERNAME_ANNOTATION: "corp:mallory"}}}, NS))
    with pytest.raises(ServerError):
        ensure(objects)


@pytest.mark.parametrize("kind", [Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE,
                                  Kind.CLUSTER_ROLE_BINDING])
def test_an_object_recording_another_namespace_is_not_adopted(fake_kube: FakeKube,
                                                              objects: UserObjects,
                                                              kind: Kind) -> None:
    """Same name (say, crafted, or a hash collision) but another concierge's: hands off."""
    name = name_of(ALICE.username)
    namespace = NS if kind == Kind.SERVICE_ACCOUNT else None
    asyncio.run(fake_kube.create(kind, {"metadata": {
        "name": name, "labels": naming.user_labels(ALICE.username, "other-concierge"),
        "annotations": {naming.USERNAME_ANNOTATION: ALICE.username}}}, namespace))
    with pytest.raises(ServerError) as info:
        ensure(objects)
    assert info.value.reason == Reason.USER_OBJECT_CONFLICT
    assert "not ours" in info.value.detail


def test_concierges_in_two_namespaces_keep_separate_objects(fake_kube: FakeKube) -> None:
    staging = UserObjects(fake_kube, "staging", 300)
    production = UserObjects(fake_kube, "production", 300)
    a = asyncio.run(staging.ensure(ALICE))
    b = asyncio.run(production.ensure(wire.Identity(ALICE.username, ("corp:devs",))))
    assert a.service_account != b.service_account
    role = fake_kube.get(Kind.CLUSTER_ROLE, a.service_account)
    binding = fake_kube.get(Kind.CLUSTER_ROLE_BINDING, a.service_account)
    assert role is not None
    assert binding is not None
    assert groups_from_rules(role["rules"]) == ("corp:devs", "corp:readers")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": a.service_account,
                                    "namespace": "staging"}]
    assert role["metadata"]["labels"][naming.NAMESPACE_LABEL] == "staging"


def test_describe_reads_the_user_back(fake_kube: FakeKube, objects: UserObjects) -> None:
    name = ensure(objects)
    assert asyncio.run(objects.describe(name)) == wire.Identity(
        ALICE.username, ("corp:devs", "corp:readers"))


def test_without_a_cache_every_login_reconciles(fake_kube: FakeKube, versions: ObjectVersions,
                                               clock: ManualClock) -> None:
    objects = UserObjects(fake_kube, NS, 0, versions, monotonic=clock)
    ensure(objects)
    fake_kube.calls.clear()
    ensure(objects)
    assert len(fake_kube.calls) >= 3


# --- one user logging in twice at once; roles that would escalate; whoami's role check -----


def test_one_user_logging_in_twice_at_once_is_reconciled_once(fake_kube: FakeKube,
                                                              objects: UserObjects) -> None:
    """The per-user lock: the second login waits, then rides the first one's objects."""
    fake_kube.interleave = True  # every call yields, as a request to the apiserver would

    async def both() -> list[str]:
        first, second = await asyncio.gather(objects.ensure(ALICE), objects.ensure(ALICE))
        return [first.service_account, second.service_account]

    assert asyncio.run(both()) == [name_of(ALICE.username)] * 2
    assert fake_kube.calls == ["create ServiceAccount", "create ClusterRole",
                               "create ClusterRoleBinding"]


def test_concurrent_logins_of_different_users_do_not_wait_for_each_other(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    fake_kube.interleave = True
    bob = wire.Identity("corp:bob@example.com")

    async def both() -> None:
        await asyncio.gather(objects.ensure(ALICE), objects.ensure(bob))

    asyncio.run(both())
    # interleaved, one call each in turn: neither held the other up
    assert fake_kube.calls[:2] == ["create ServiceAccount", "create ServiceAccount"]


def test_an_aggregated_role_is_rewritten_without_its_aggregation_rule(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    """Anyone who may label ClusterRoles could widen a role that aggregates others."""
    name = ensure(objects)
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {"widen": "me"}}]}
    objects.forget(ALICE.username)
    fake_kube.calls.clear()
    ensure(objects)
    assert "replace ClusterRole" in fake_kube.calls
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    assert "aggregationRule" not in role
    assert groups_from_rules(role["rules"]) == ("corp:devs", "corp:readers")


@pytest.mark.parametrize("labels", [
    {},  # not managed by any concierge
    naming.user_labels(ALICE.username, "other-concierge"),  # another concierge's
])
def test_describe_refuses_a_role_that_is_not_ours(fake_kube: FakeKube, objects: UserObjects,
                                                  labels: dict[str, str]) -> None:
    """whoami must not report groups from a ClusterRole someone else made under that name."""
    name = ensure(objects)
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    role["metadata"]["labels"] = labels
    with pytest.raises(NotFound):
        asyncio.run(objects.describe(name))


def test_describe_refuses_a_role_annotated_for_another_user(fake_kube: FakeKube,
                                                            objects: UserObjects) -> None:
    name = ensure(objects)
    role = fake_kube.get(Kind.CLUSTER_ROLE, name)
    assert role is not None
    role["metadata"]["annotations"][naming.USERNAME_ANNOTATION] = "corp:mallory"
    with pytest.raises(NotFound):
        asyncio.run(objects.describe(name))


@pytest.mark.parametrize("kind", [Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE,
                                  Kind.CLUSTER_ROLE_BINDING])
def test_an_object_deleted_while_the_user_is_cached_is_recreated(
        fake_kube: FakeKube, objects: UserObjects, kind: Kind) -> None:
    name = ensure(objects)
    ensure(objects)
    fake_kube.calls.clear()
    ensure(objects)
    assert fake_kube.calls == []  # warm
    namespace = NS if kind == Kind.SERVICE_ACCOUNT else None
    asyncio.run(fake_kube.delete(kind, name, namespace))  # an administrator, with kubectl
    fake_kube.calls.clear()
    ensure(objects)
    assert f"create {kind}" in fake_kube.calls
    assert fake_kube.get(kind, name, namespace) is not None


# --- every field of the grant, the cache's memory, races on the role -----------------------
#
# Anyone who can edit these objects (an administrator by mistake, or an attacker with RBAC
# write access) must not be able to widen a user's rights in a way the next login leaves
# standing; the cache must hold the users that come back; a race costs a bounded number of
# calls.


def login(objects: UserObjects, identity: wire.Identity = ALICE) -> userobjects.UserRef:
    return asyncio.run(objects.ensure(identity))


def stored(fake_kube: FakeKube, kind: Kind, name: str) -> Obj:
    obj = fake_kube.get(kind, name, NS if kind == Kind.SERVICE_ACCOUNT else None)
    assert obj is not None
    return obj


# --- the role's rules and the binding's subjects, field by field -------------------------


@pytest.mark.parametrize(("field", "widened"), [
    ("apiGroups", ["*"]),
    ("resources", ["*"]),
    ("verbs", ["impersonate", "*"]),
    ("nonResourceURLs", ["/*"]),
])
def test_a_role_widened_in_any_rule_field_is_put_back_at_the_next_login(
        fake_kube: FakeKube, objects: UserObjects, field: str, widened: list[str]) -> None:
    name = login(objects).service_account
    role = stored(fake_kube, Kind.CLUSTER_ROLE, name)
    role["rules"][0][field] = widened  # behind the watch's back, so only a reconcile sees it
    objects.forget(ALICE.username)
    login(objects)
    assert stored(fake_kube, Kind.CLUSTER_ROLE, name)["rules"] == impersonation_rules(
        wire.Identity(ALICE.username, tuple(sorted(ALICE.groups))))


@pytest.mark.parametrize("subject", [
    {"kind": "User", "name": "SAME", "namespace": NS},  # same name, another kind
    {"kind": "ServiceAccount", "name": "default", "namespace": NS},
    {"kind": "ServiceAccount", "name": "SAME", "namespace": "kube-system"},
])
def test_a_binding_naming_another_subject_is_put_back(fake_kube: FakeKube,
                                                      objects: UserObjects,
                                                      subject: dict[str, str]) -> None:
    """roleRef untouched: only the subjects say who gets the user's impersonation rights."""
    name = login(objects).service_account
    binding = stored(fake_kube, Kind.CLUSTER_ROLE_BINDING, name)
    ours = {"kind": "ServiceAccount", "name": name, "namespace": NS}
    binding["subjects"] = [{k: v.replace("SAME", name) for k, v in subject.items()}]
    objects.forget(ALICE.username)
    login(objects)
    assert stored(fake_kube, Kind.CLUSTER_ROLE_BINDING, name)["subjects"] == [ours]


def test_a_binding_with_an_extra_subject_is_put_back(fake_kube: FakeKube,
                                                     objects: UserObjects) -> None:
    name = login(objects).service_account
    binding = stored(fake_kube, Kind.CLUSTER_ROLE_BINDING, name)
    binding["subjects"].append({"kind": "User", "name": "mallory"})
    objects.forget(ALICE.username)
    fake_kube.calls.clear()
    login(objects)
    assert "replace ClusterRoleBinding" in fake_kube.calls
    assert stored(fake_kube, Kind.CLUSTER_ROLE_BINDING, name)["subjects"] == [
        {"kind": "ServiceAccount", "name": name, "namespace": NS}]


def test_a_binding_someone_else_put_under_the_name_meanwhile_is_not_deleted(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    """The binding's roleRef is wrong, so it is deleted and made again; if, between our read
    and the delete, the name came to hold another object, the uid precondition spares it."""
    target = login(objects).service_account
    stored(fake_kube, Kind.CLUSTER_ROLE_BINDING, target)["roleRef"]["name"] = "cluster-admin"
    objects.forget(ALICE.username)
    foreign = {"metadata": {"name": target, "uid": "someone-elses", "resourceVersion": "1"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "view"}, "subjects": []}
    delete = fake_kube.delete

    async def swapped_first(kind: Kind, name: str, namespace: str | None = None,
                            uid: str | None = None) -> None:
        if kind == Kind.CLUSTER_ROLE_BINDING:
            fake_kube.objects[(kind, None, name)] = foreign
        await delete(kind, name, namespace, uid)

    fake_kube.delete = swapped_first  # type: ignore[method-assign]
    outcome = asyncio.run(_outcome(objects.ensure(ALICE)))
    assert isinstance(outcome, Conflict)
    assert fake_kube.get(Kind.CLUSTER_ROLE_BINDING, target) is foreign


async def _outcome(call: Any) -> object:
    try:
        return await call
    except Exception as exc:
        return exc


# --- what the login gets ----------------------------------------------------------------


def test_the_login_gets_its_service_accounts_uid(fake_kube: FakeKube,
                                                 objects: UserObjects) -> None:
    """Session Secrets are owned by that uid, so the garbage collector removes them with it."""
    user = login(objects)
    assert user.uid == stored(fake_kube, Kind.SERVICE_ACCOUNT, user.service_account)[
        "metadata"]["uid"]


def test_a_service_account_without_uid_is_a_server_error(fake_kube: FakeKube,
                                                         objects: UserObjects) -> None:
    create = fake_kube.create

    async def no_uid(kind: Kind, body: Obj, namespace: str | None = None) -> Obj:
        created = await create(kind, body, namespace)
        if kind == Kind.SERVICE_ACCOUNT:
            del created["metadata"]["uid"]
        return created

    fake_kube.create = no_uid  # type: ignore[method-assign]
    with pytest.raises(ServerError) as info:
        login(objects)
    assert info.value.reason == Reason.KUBERNETES_ERROR
    assert name_of(ALICE.username) in info.value.detail


# --- the cache of returning users ---------------------------------------------------------


def test_the_cache_keeps_the_users_seen_most_recently(fake_kube: FakeKube,
                                                      objects: UserObjects,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userobjects, "MAX_CACHED_USERS", 2)
    alice, bob, carol = (wire.Identity(f"corp:{n}@example.com") for n in ("a", "b", "c"))
    for identity in (alice, bob, alice, carol):  # alice came back after bob: bob goes
        login(objects, identity)
    fake_kube.calls.clear()
    login(objects, alice)
    login(objects, carol)
    assert fake_kube.calls == []
    login(objects, bob)
    assert "create ServiceAccount" in fake_kube.calls


def test_a_one_second_cache_still_serves_a_login_within_the_second(
        fake_kube: FakeKube, versions: ObjectVersions, clock: ManualClock) -> None:
    objects = UserObjects(fake_kube, NS, 1, versions, monotonic=clock, clock=clock)
    login(objects)
    fake_kube.calls.clear()
    clock.now += 0.5
    login(objects)
    assert fake_kube.calls == []


def test_forgetting_a_user_who_is_not_cached_is_harmless(objects: UserObjects) -> None:
    """The login forgets a user whose ServiceAccount vanished, cached or not."""
    objects.forget("corp:nobody@example.com")
    objects.forget("corp:nobody@example.com")


# --- races on the role ------------------------------------------------------------------------


def test_a_lost_race_on_the_role_costs_one_read_and_one_write_more(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    login(objects)
    objects.forget(ALICE.username)
    replace = fake_kube.replace
    lost: list[str] = []

    async def first_loses(kind: Kind, name: str, body: Obj, namespace: str | None = None) -> Obj:
        if kind == Kind.CLUSTER_ROLE and not lost:
            lost.append(name)
            fake_kube.calls.append(f"replace {kind}")
            raise Conflict("resourceVersion precondition failed")
        return await replace(kind, name, body, namespace)

    fake_kube.replace = first_loses  # type: ignore[method-assign]
    fake_kube.calls.clear()
    login(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    role_calls = [c for c in fake_kube.calls if c.endswith("ClusterRole")]
    assert role_calls == ["create ClusterRole", "read ClusterRole", "replace ClusterRole",
                          "read ClusterRole", "replace ClusterRole"]
    assert groups_from_rules(
        stored(fake_kube, Kind.CLUSTER_ROLE, lost[0])["rules"]) == ("corp:devs",)


def test_a_role_deleted_between_the_read_and_the_write_is_made_again(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    target = login(objects).service_account
    objects.forget(ALICE.username)
    replace = fake_kube.replace

    async def deleted_first(kind: Kind, name: str, body: Obj,
                            namespace: str | None = None) -> Obj:
        if kind == Kind.CLUSTER_ROLE:
            fake_kube.objects.pop((kind, None, name), None)  # an admin, just now
        return await replace(kind, name, body, namespace)

    fake_kube.replace = deleted_first  # type: ignore[method-assign]
    login(objects, wire.Identity(ALICE.username, ("corp:devs",)))
    assert groups_from_rules(
        stored(fake_kube, Kind.CLUSTER_ROLE, target)["rules"]) == ("corp:devs",)


def test_giving_up_on_a_role_that_keeps_changing_tells_the_client_to_retry_soon(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    login(objects)
    objects.forget(ALICE.username)

    async def always_conflicting(kind: Kind, name: str, body: Obj,
                                 namespace: str | None = None) -> Obj:
        raise Conflict("resourceVersion precondition failed")

    fake_kube.replace = always_conflicting  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as info:
        login(objects, wire.Identity(ALICE.username, ("corp:ops",)))
    assert info.value.reason == Reason.USER_OBJECT_CONFLICT
    assert "try again" in info.value.message
    assert info.value.retry_after_seconds <= 1  # a lost race clears at once


# --- whoami: the ServiceAccount must be ours and that user's --------------------------------


def test_describe_refuses_an_account_relabelled_for_another_user(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    """Both annotations say mallory, but the objects are named for alice: not mallory's."""
    name = login(objects).service_account
    for kind in (Kind.SERVICE_ACCOUNT, Kind.CLUSTER_ROLE):
        stored(fake_kube, kind, name)["metadata"]["annotations"][
            naming.USERNAME_ANNOTATION] = "corp:mallory@example.com"
    with pytest.raises(NotFound):
        asyncio.run(objects.describe(name))


def test_describe_refuses_an_account_that_is_not_managed_by_us(
        fake_kube: FakeKube, objects: UserObjects) -> None:
    name = login(objects).service_account
    del stored(fake_kube, Kind.SERVICE_ACCOUNT, name)["metadata"]["labels"][
        naming.MANAGED_BY_LABEL]
    with pytest.raises(NotFound):
        asyncio.run(objects.describe(name))


# --- bounds that came with the hardening: one identity's storm, the number of users --------


def test_one_identitys_logins_beyond_the_bound_are_refused_at_once(
        fake_kube: FakeKube, versions: ObjectVersions) -> None:
    """A leaked token replayed in parallel must not queue up every request slot."""
    objects = UserObjects(fake_kube, NS, 300, versions, max_requests_per_user=1)
    fake_kube.interleave = True

    async def both() -> list[object]:
        return list(await asyncio.gather(objects.ensure(ALICE), objects.ensure(ALICE),
                                         return_exceptions=True))

    first, second = asyncio.run(both())
    assert isinstance(first, userobjects.UserRef)
    assert isinstance(second, Unavailable)
    assert second.reason == Reason.RATE_LIMITED
    assert second.http_status == 429


def test_a_new_user_beyond_max_users_is_told_to_come_back_later(
        fake_kube: FakeKube, versions: ObjectVersions) -> None:
    """Room comes only when the idle-user clean-up runs: later, not in a few seconds."""
    objects = UserObjects(fake_kube, NS, 0, versions, max_users=1)
    login(objects)
    with pytest.raises(Unavailable) as info:
        login(objects, wire.Identity("corp:bob@example.com"))
    assert "try again later" in info.value.message
    assert info.value.retry_after_seconds > Unavailable(Reason.OK, "").retry_after_seconds


def test_deleting_a_user_spares_an_object_that_is_not_ours(fake_kube: FakeKube,
                                                           objects: UserObjects) -> None:
    name = login(objects).service_account
    stored(fake_kube, Kind.CLUSTER_ROLE, name)["metadata"]["labels"] = {}  # someone else's
    asyncio.run(objects.delete(ALICE.username))
    assert fake_kube.get(Kind.SERVICE_ACCOUNT, name, NS) is None
    assert fake_kube.get(Kind.CLUSTER_ROLE_BINDING, name) is None
    assert fake_kube.get(Kind.CLUSTER_ROLE, name) is not None
