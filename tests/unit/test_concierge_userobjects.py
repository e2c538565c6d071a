"""Per-user objects: exactly the impersonation the user proved, cached for returning users.

The cache is trusted only while the watch mirror (`ObjectVersions`, fed here
by `FakeKube.watch` without delay) confirms none of the user's objects changed.
"""

from __future__ import annotations

import asyncio

import pytest

from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, ServerError
from pinniped_concierge.kubeapi import Kind, NotFound
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.userobjects import UserObjects, groups_from_rules

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
