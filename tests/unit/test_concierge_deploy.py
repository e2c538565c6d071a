"""deploy/ stays in step with the code: its config loads, its RBAC is exactly what is used."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from localenv.fixtures_concierge import FakeKube
from pinniped_apis import wire
from pinniped_concierge import config, naming
from pinniped_concierge.credential_review import CredentialReviewer
from pinniped_concierge.kubeapi import Kind
from pinniped_concierge.object_watch import ObjectVersions, ObjectWatcher
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NS = "pinniped-concierge"


def test_the_example_config_in_the_configmap_is_valid(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "concierge.yaml").read_text()))
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    text = configmap["data"]["config.yaml"].replace("/etc/pinniped", str(tmp_path))
    for name in ("tls/tls.crt", "tls/tls.key", "idp-ca/ca.pem"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    cfg = config.parse(text, tmp_path)
    assert cfg.kubernetes.kubeconfig is None  # in-cluster
    assert cfg.namespace == configmap["metadata"]["namespace"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "pinniped-concierge"


def test_the_rbac_has_no_wildcards_and_no_secret_access_outside_the_namespace() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "Role", "RoleBinding"]
    for doc in docs:
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key]
    (cluster_role,) = [d for d in docs if d["kind"] == "ClusterRole"]
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {"users", "groups", "clusterroles", "clusterrolebindings",
                                 "tokenreviews"}
    assert not any("escalate" in rule["verbs"] or "bind" in rule["verbs"]
                   for rule in cluster_role["rules"])


_RESOURCES = {"ServiceAccount": "serviceaccounts", "Secret": "secrets",
              "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
              "TokenRequest": "serviceaccounts/token", "TokenReview": "tokenreviews"}
_VERBS = {"create": "create", "read": "get", "replace": "update", "delete": "delete",
          "list": "list"}


def _calls_of_every_code_path() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes call the concierge makes, by running each path."""
    kube = FakeKube()
    versions = kube.watch(ObjectVersions(), NS)
    alice = wire.Identity("corp:alice@example.com", ("corp:devs",))

    async def go() -> None:
        objects = UserObjects(kube, NS, 300, versions)
        user = await objects.ensure(alice)  # creates
        await UserObjects(kube, NS, 300).ensure(
            wire.Identity(alice.username, ("corp:ops",)))  # reads, updates the role
        binding = kube.get(Kind.CLUSTER_ROLE_BINDING, user.service_account)
        assert binding is not None
        binding["roleRef"]["name"] = "elsewhere"  # immutable field: delete and create
        await UserObjects(kube, NS, 300).ensure(alice)
        binding = kube.get(Kind.CLUSTER_ROLE_BINDING, user.service_account)
        assert binding is not None
        binding["subjects"].append({"kind": "User", "name": "mallory"})  # updated back
        await UserObjects(kube, NS, 300).ensure(alice)
        sessions = Sessions(kube, NS, 600, 30, versions=versions)
        session = await sessions.start(user)
        versions.lost(Kind.SECRET)
        await sessions.start(user)  # the watch is down: the user's sessions are listed
        await CredentialReviewer(kube, NS, objects).review(session.token)
        secret = naming.session_secret_name(session.id)
        await sessions.end(secret, None)
        await sessions.sweep()
        await kube.ping(NS)

    asyncio.run(go())
    used = set()
    for call in kube.calls:
        if call == "ping":  # KubernetesClientAPI.ping lists Secrets
            used.add(("secrets", "list"))
            continue
        verb, kind = call.split(" ", 1)
        used.add((_RESOURCES[kind], _VERBS[verb]))
    watcher = ObjectWatcher(type("Client", (), {"user_agent": ""})(), NS, versions)
    for kind in watcher._sources:
        used |= {(_RESOURCES[kind], "list"), (_RESOURCES[kind], "watch")}
    return used


def test_the_rbac_grants_exactly_the_verbs_the_code_uses() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()))
    granted = {(resource, verb) for doc in docs for rule in doc.get("rules", [])
               for resource in rule["resources"] for verb in rule["verbs"]}
    # impersonate is never called: escalation prevention requires holding it to grant it
    assert granted - _calls_of_every_code_path() == {("users", "impersonate"),
                                                     ("groups", "impersonate")}
    assert _calls_of_every_code_path() <= granted
    assert ("clusterroles", "delete") not in granted


def test_a_resource_quota_bounds_the_secrets_in_the_namespace() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "concierge.yaml").read_text()))
    (quota,) = [d for d in docs if d["kind"] == "ResourceQuota"]
    assert quota["metadata"]["namespace"] == "pinniped-concierge"
    assert int(quota["spec"]["hard"]["count/secrets"]) > 0
