"""The idle-user clean-up against the real apiserver, with the concierge's own credentials.

The identity idle timeout cannot be set below 600 s in the config, so the
clean-up is run here directly (`IdleUsers`, the task the Lease holder runs)
with a timeout of seconds, on a concierge's namespace and through its
least-privilege kubeconfig; a last test checks the running concierges wire
it on the Lease holder, and only there.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.idp import LocalIdP
from localenv.logins import Kubectl, login
from localenv.procs import wait_for
from pinniped_apis import wire
from pinniped_concierge import config, naming
from pinniped_concierge.cluster_lists import ConciergeKubeAPI
from pinniped_concierge.idle_users import IdleUsers, SweepResult
from pinniped_concierge.kubeapi import Kind, counting_calls
from pinniped_concierge.object_watch import ListWatch, ObjectVersions, ObjectWatcher
from pinniped_concierge.userobjects import UserObjects

pytestmark = pytest.mark.integration

IDLE_SECONDS = 2


@pytest.fixture
def own_concierge(idp: LocalIdP,
                  concierge_factory: Callable[..., LocalConcierge]) -> LocalConcierge:
    return concierge_factory(idp)


@pytest.fixture
def kube(own_concierge: LocalConcierge) -> Iterator[ConciergeKubeAPI]:
    """The concierge's own credentials (deploy/rbac.yaml), from its config file."""
    cfg = config.load(own_concierge.config_path)
    api = ConciergeKubeAPI.from_kubeconfig(cfg.kubernetes.kubeconfig, 10)
    try:
        yield api
    finally:
        api.close()


def exists(cluster: LocalCluster, kind: str, name: str, namespace: str | None = None) -> bool:
    where = ["-n", namespace] if namespace else []
    result = cluster.kubectl("get", kind, name, *where, check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
    return result.returncode == 0


def user_objects_exist(cluster: LocalCluster, username: str, namespace: str) -> list[bool]:
    name = naming.user_object_name(username, namespace)
    return [exists(cluster, "serviceaccount", name, namespace),
            exists(cluster, "clusterrole", name), exists(cluster, "clusterrolebinding", name)]


def decoys(namespace: str) -> list[dict[str, Any]]:
    """Objects with our prefix, labels or annotations, each failing one of the marks."""
    def meta(username: str, name: str | None = None, **labels: str | None) -> dict[str, Any]:
        base = naming.user_labels(username, namespace)
        for key, value in labels.items():
            base.pop(key, None) if value is None else base.update({key: value})
        return {"name": name or naming.user_object_name(username, namespace), "labels": base,
                "annotations": {naming.USERNAME_ANNOTATION: username}}

    rbac = "rbac.authorization.k8s.io/v1"
    other = {naming.NAMESPACE_LABEL: "another-concierge"}
    foreign = meta("corp:frank@example.com", naming.USER_OBJECT_PREFIX + "f" * 32)
    mismatched = meta("corp:eve@example.com")
    mismatched["annotations"][naming.USERNAME_ANNOTATION] = "corp:mallory@example.com"
    binding = {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                           "name": "nothing"},
               "subjects": [{"kind": "User", "name": "nobody",
                             "apiGroup": "rbac.authorization.k8s.io"}]}
    return [
        {"apiVersion": rbac, "kind": "ClusterRole", "rules": [],
         "metadata": meta("corp:dave@example.com", **other)},
        {"apiVersion": rbac, "kind": "ClusterRole", "rules": [],
         "metadata": meta("corp:carl@example.com", **{naming.MANAGED_BY_LABEL: None})},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": mismatched | {"namespace": namespace}},
        {"apiVersion": rbac, "kind": "ClusterRoleBinding", "metadata": foreign} | binding,
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": meta("corp:gina@example.com", f"{naming.SESSION_PREFIX}decoy{namespace}",
                          **other, **{naming.SESSION_LABEL: "true"}) | {"namespace": namespace}},
    ]


def test_idle_users_lose_their_objects_and_nothing_else_is_touched(
        idp: LocalIdP, cluster: LocalCluster, own_concierge: LocalConcierge,
        kube: ConciergeKubeAPI, tmp_path: Path) -> None:
    concierge, namespace = own_concierge, own_concierge.namespace
    alice = login(concierge, idp.password_grant("alice")["id_token"])
    bob = login(concierge, idp.password_grant("bob")["id_token"])
    planted = decoys(namespace)
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": planted}))
    # alice's session ends (as the sweeper deletes an expired one); bob's is live
    cluster.kubectl("delete", "secret", "-n", namespace, "-l",
                    naming.user_session_selector(alice.identity.username, namespace))
    time.sleep(IDLE_SECONDS + 1)

    idle = IdleUsers(kube, namespace, IDLE_SECONDS, page_size=2)  # pages of 2: paging for real
    with counting_calls() as calls:
        result = asyncio.run(idle.sweep())
    assert result == SweepResult(removed=1, spared=0, deferred=0, deletions=3)
    print(f"idle clean-up of 2 users (+{len(planted)} decoys), pages of 2, no watch: "
          f"{calls.value} API calls")

    assert user_objects_exist(cluster, alice.identity.username, namespace) == [False] * 3
    assert user_objects_exist(cluster, bob.identity.username, namespace) == [True] * 3
    for decoy in planted:
        meta = decoy["metadata"]
        assert exists(cluster, decoy["kind"].lower(), meta["name"], meta.get("namespace"))

    # alice comes back: the running concierge's watch saw her objects go, so it makes them
    # again (3 writes, plus the session's 2) instead of trusting its warm cache
    again = login(concierge, idp.password_grant("alice")["id_token"])
    assert concierge.audit_lines()[-1]["kubeApiCalls"] >= 5
    code, output = Kubectl(cluster, tmp_path).run(again, "auth", "can-i", "--list")
    assert code == 0, output
    assert user_objects_exist(cluster, alice.identity.username, namespace) == [True] * 3
    for decoy in planted:
        cluster.kubectl("delete", decoy["kind"].lower(), decoy["metadata"]["name"],
                        *(["-n", namespace] if decoy["metadata"].get("namespace") else []))


USERS = 100


def test_the_cost_of_a_run_for_many_users_with_the_watch_up(
        own_concierge: LocalConcierge, kube: ConciergeKubeAPI) -> None:
    namespace = own_concierge.namespace
    objects = UserObjects(kube, namespace, 0)
    tag = secrets.token_hex(2)

    async def make() -> None:
        for number in range(USERS):
            await objects.ensure(wire.Identity(f"corp:n{tag}-{number}@example.com",
                                               ("corp:devs",)))

    asyncio.run(make())
    versions = ObjectVersions()
    watch = ListWatch(ObjectWatcher(kube.new_api_client(), namespace, versions).sources)
    watch.start()
    try:
        wait_for(lambda: all(versions.synced(kind) for kind in Kind), 30, "the watch's lists")
        time.sleep(1.5)  # the last user made is idle for longer than the timeout, too
        idle = IdleUsers(kube, namespace, 1, versions=versions)
        started = time.monotonic()
        with counting_calls() as calls:
            result = asyncio.run(idle.sweep())
        took = time.monotonic() - started
    finally:
        watch.stop()
    assert (result.removed, result.deferred) == (USERS, 0), result
    # one page of each kind (500 a page), then three deletions per user: nothing per user else
    assert calls.value == 4 + 3 * USERS
    print(f"idle clean-up of {USERS} users with the watch up: {calls.value} API calls, "
          f"{took:.1f} s")


def test_the_running_concierges_run_it_on_the_lease_holder_only(
        idp: LocalIdP, cluster: LocalCluster,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    namespace = f"pinniped-concierge-{secrets.token_hex(3)}"
    replicas = [concierge_factory(idp, namespace=namespace, identityIdleTimeoutSeconds=600,
                                  lease={"durationSeconds": 3, "renewIntervalSeconds": 1})
                for _ in range(2)]
    line = ("idle-user clean-up (users without a live session for 600 s): every 60 s while "
            "this replica holds the Lease")

    def leaders() -> list[LocalConcierge]:
        return [r for r in replicas if line in r.all_logs()]

    wait_for(lambda: len(leaders()) == 1, 15, "the Lease holder's idle-user clean-up")
    time.sleep(3)  # renewed several times: the other replica never took over
    assert len(leaders()) == 1
    (leader,) = leaders()
    assert "revocation marker expiry: every 60 s while this replica holds the Lease" in (
        leader.all_logs())
