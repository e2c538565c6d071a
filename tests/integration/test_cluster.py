"""The local control plane behaves like a real cluster for everything the login path needs."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from localenv.cluster import LocalCluster, write_kubeconfig

pytestmark = pytest.mark.integration


def _impersonator_rbac(name: str, namespace: str, users: list[str], groups: list[str]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name},
         "rules": [
             {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
              "resourceNames": users},
             {"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
              "resourceNames": groups},
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    ]})


@pytest.fixture
def namespace(cluster: LocalCluster) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    return name


def test_apiserver_is_ready_and_serves_rbac(cluster: LocalCluster) -> None:
    assert cluster.server.startswith("https://127.0.0.1:")
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    assert "rbac.authorization.k8s.io/v1" in cluster.kubectl("api-versions").stdout


def test_admin_token_is_required(cluster: LocalCluster, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.kubeconfig"
    write_kubeconfig(bogus, server=cluster.server, ca_file=cluster.ca_file, user="x",
                     token="not-a-token")
    result = cluster.kubectl("get", "namespaces", kubeconfig=bogus, check=False)
    assert result.returncode != 0
    assert "Unauthorized" in result.stderr or "must be logged in" in result.stderr


def test_service_account_token_may_impersonate_alice_but_not_bob(
        cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    cluster.kubectl("apply", "-f", "-",
                    input=_impersonator_rbac("imp", namespace, ["alice"], ["devs"]))
    token = cluster.kubectl("create", "token", "imp", "-n", namespace,
                            "--duration=10m").stdout.strip()
    assert token.count(".") == 2  # a JWT from the TokenRequest API

    sa_config = tmp_path / "sa.kubeconfig"
    write_kubeconfig(sa_config, server=cluster.server, ca_file=cluster.ca_file, user="imp",
                     token=token)

    def can_i(*args: str) -> str:
        result = cluster.kubectl("auth", "can-i", "get", "pods", "-n", namespace, *args,
                                 kubeconfig=sa_config, check=False)
        return (result.stdout + result.stderr).strip()

    # As alice in devs, impersonation itself is allowed (alice has no pod rights: "no").
    assert can_i("--as=alice", "--as-group=devs") == "no"
    forbidden_user = can_i("--as=bob")
    assert "cannot impersonate resource \"users\"" in forbidden_user
    forbidden_group = can_i("--as=alice", "--as-group=admins")
    assert "cannot impersonate resource \"groups\"" in forbidden_group

    # Grant devs read on pods: alice-in-devs now can, which proves the headers were honoured.
    cluster.kubectl("create", "role", "pod-reader", "-n", namespace, "--verb=get",
                    "--resource=pods")
    cluster.kubectl("create", "rolebinding", "devs-read", "-n", namespace,
                    "--role=pod-reader", "--group=devs")
    assert can_i("--as=alice", "--as-group=devs") == "yes"
    assert can_i("--as=alice") == "no"


def test_audit_log_names_the_impersonated_user(cluster: LocalCluster, namespace: str,
                                               tmp_path: Path) -> None:
    cluster.kubectl("apply", "-f", "-",
                    input=_impersonator_rbac("audited", namespace, ["dora"], ["auditors"]))
    token = cluster.kubectl("create", "token", "audited", "-n", namespace).stdout.strip()
    sa_config = tmp_path / "sa.kubeconfig"
    write_kubeconfig(sa_config, server=cluster.server, ca_file=cluster.ca_file,
                     user="audited", token=token)
    marker = f"audit-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("get", "configmap", marker, "-n", namespace, "--as=dora",
                    "--as-group=auditors", kubeconfig=sa_config, check=False)
    events = [json.loads(line) for line in cluster.audit_log.read_text().splitlines()
              if marker in line]
    assert events, "the apiserver wrote no audit event for the request"
    assert all(event["impersonatedUser"]["username"] == "dora" for event in events)
    assert all(event["user"]["username"] == f"system:serviceaccount:{namespace}:audited"
               for event in events)
