"""The watch behind the per-user cache, against the real apiserver: it follows every
change to our objects, ignores other objects, and comes back after a cut connection."""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from localenv.cluster import LocalCluster, write_kubeconfig
from localenv.concierge import TcpProxy
from pinniped_concierge import naming
from pinniped_concierge.kubeapi import Kind, KubernetesClientAPI
from pinniped_concierge.object_watch import ObjectVersions, ObjectWatcher

pytestmark = pytest.mark.integration


def eventually(condition: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


class World:
    def __init__(self, cluster: LocalCluster, tmp_path: Path) -> None:
        self.cluster = cluster
        self.namespace = f"watch-{secrets.token_hex(3)}"
        self.proxy = TcpProxy(cluster.server)
        kubeconfig = tmp_path / "watch.kubeconfig"
        write_kubeconfig(kubeconfig, server=self.proxy.url, ca_file=cluster.ca_file,
                         user="admin", token=cluster.admin_token)
        self.api = KubernetesClientAPI.from_kubeconfig(kubeconfig, 10)
        self.versions = ObjectVersions()
        self.watcher = ObjectWatcher(self.api.new_api_client(), self.namespace, self.versions)
        self.roles: list[str] = []

    def synced(self) -> bool:
        return all(self.versions.synced(kind) for kind in Kind)

    def apply_role(self, name: str, namespace_label: str, note: str = "") -> str:
        """Create or change a ClusterRole labelled like ours; returns its resourceVersion."""
        role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": name, "annotations": {"note": note},
                             "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY,
                                        naming.NAMESPACE_LABEL: namespace_label}},
                "rules": []}
        self.roles.append(name)
        self.cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(role))
        out = self.cluster.kubectl("get", "clusterrole", name, "-o", "json").stdout
        return str(json.loads(out)["metadata"]["resourceVersion"])

    def current(self, name: str, version: str) -> bool:
        return self.versions.matches([(Kind.CLUSTER_ROLE, name, version)])

    def close(self) -> None:
        self.watcher.stop()
        self.proxy.close()
        self.api.close()
        for name in self.roles:
            self.cluster.kubectl("delete", "clusterrole", name, "--ignore-not-found", check=False)


@pytest.fixture
def world(cluster: LocalCluster, tmp_path: Path) -> Iterator[World]:
    w = World(cluster, tmp_path)
    cluster.kubectl("create", "namespace", w.namespace)
    w.watcher.start()
    try:
        eventually(w.synced, "all four kinds listed and watched")
        yield w
    finally:
        w.close()


def test_the_watch_sees_every_change_to_our_objects_and_only_ours(world: World) -> None:
    name = f"pinniped-user-watch-{secrets.token_hex(3)}"
    first = world.apply_role(name, world.namespace)
    eventually(lambda: world.current(name, first), "the new role")
    second = world.apply_role(name, world.namespace, note="someone else was here")
    assert second != first
    eventually(lambda: world.current(name, second), "the changed role")
    assert not world.current(name, first)

    world.cluster.kubectl("delete", "clusterrole", name)
    eventually(lambda: not world.current(name, second), "the deleted role")

    other = f"pinniped-user-other-{secrets.token_hex(3)}"
    version = world.apply_role(other, "another-concierge")  # another namespace's object
    time.sleep(1)
    assert not world.current(other, version)


def test_the_watch_comes_back_after_a_cut_connection(world: World,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "concierge.watch")
    name = f"pinniped-user-cut-{secrets.token_hex(3)}"
    version = world.apply_role(name, world.namespace)
    eventually(lambda: world.current(name, version), "the role")
    for attempt in range(2):
        caplog.clear()
        world.proxy.cut()
        eventually(lambda: "watch of ClusterRoles lost" in caplog.text, "the cut noticed")
        changed = world.apply_role(name, world.namespace, note=f"changed while cut {attempt}")
        eventually(functools.partial(world.current, name, changed),
                   "the change after reconnecting", 30)
    eventually(world.synced, "every kind watched again")
