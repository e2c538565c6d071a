"""deploy/ stays in step with the code: its config loads, its RBAC is exactly what is used."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml

from localenv.fake_cluster_lists import ListingFakeKube
from localenv.fixtures_concierge import FakeKube
from pinniped_apis import wire
from pinniped_apis.elevation import ElevationCreate
from pinniped_concierge import config, naming
from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.authenticator_set import AuthenticatorSet
from pinniped_concierge.cluster_authenticators import (
    Built,
    ClusterAuthenticators,
    ObjectSettings,
)
from pinniped_concierge.credential_issuer_publisher import CredentialIssuerPublisher
from pinniped_concierge.credential_review import CredentialReviewer
from pinniped_concierge.elevation_service import ElevationService
from pinniped_concierge.elevation_store import ElevationStore
from pinniped_concierge.idle_users import IdleUsers
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, JWT_AUTHENTICATORS, Kind
from pinniped_concierge.lease import LeaseElector
from pinniped_concierge.object_watch import ObjectVersions, ObjectWatcher
from pinniped_concierge.revocations import RevocationMirror, sweep_expired
from pinniped_concierge.revoke_user import revoke
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NS = "pinniped-concierge"


def example_config(tmp_path: Path) -> config.Config:
    """The config in concierge.yaml's ConfigMap, its files made up under `tmp_path`."""
    docs = list(yaml.safe_load_all((DEPLOY / "concierge.yaml").read_text()))
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    text = configmap["data"]["config.yaml"].replace("/etc/pinniped", str(tmp_path))
    for name in ("tls/tls.crt", "tls/tls.key", "idp-ca/ca.pem"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    return config.parse(text, tmp_path)


def test_the_example_config_in_the_configmap_is_valid(tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "concierge.yaml").read_text()))
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    cfg = example_config(tmp_path)
    assert cfg.kubernetes.kubeconfig is None  # in-cluster
    assert cfg.namespace == configmap["metadata"]["namespace"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "pinniped-concierge"


def rbac_documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DEPLOY / "rbac.yaml").read_text()) if d]


def roles_bound_to(subject: dict[str, str]) -> list[dict[str, Any]]:
    """The Roles and ClusterRoles that `rbac.yaml` binds to `subject`."""
    docs = rbac_documents()
    bound = {(d["roleRef"]["kind"], d["roleRef"]["name"]) for d in docs
             if "roleRef" in d and any(all(s.get(k) == v for k, v in subject.items())
                                       for s in d["subjects"])}
    return [d for d in docs if (d["kind"], d["metadata"]["name"]) in bound]


CONCIERGE = {"kind": "ServiceAccount", "name": "pinniped-concierge"}
AUTHENTICATED = {"kind": "Group", "name": "system:authenticated"}


def test_the_rbac_has_no_wildcards_and_no_secret_access_outside_the_namespace() -> None:
    docs = rbac_documents()
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                     "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
    for doc in docs:
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[key]
    (cluster_role,) = [d for d in roles_bound_to(CONCIERGE) if d["kind"] == "ClusterRole"]
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {"users", "groups", "clusterroles", "clusterrolebindings",
                                 "tokenreviews", "jwtauthenticators", "jwtauthenticators/status",
                                 "credentialissuers", "credentialissuers/status",
                                 "elevationpolicies"}
    assert not any("escalate" in rule["verbs"] or "bind" in rule["verbs"]
                   for rule in cluster_role["rules"])


def test_the_concierge_may_touch_only_its_own_credential_issuer(tmp_path: Path) -> None:
    (cluster_role,) = [d for d in roles_bound_to(CONCIERGE) if d["kind"] == "ClusterRole"]
    rules = [r for r in cluster_role["rules"]
             if r["resources"][0].startswith("credentialissuers")]
    default_name = example_config(tmp_path).credential_issuer()
    for rule in rules:
        if rule["verbs"] != ["create"]:  # RBAC cannot narrow create by name
            assert rule["resourceNames"] == [default_name], rule
    jwt_rules = [r for r in cluster_role["rules"]
                 if r["resources"][0].startswith("jwtauthenticators")]
    assert {v for r in jwt_rules for v in r["verbs"]} == {"list", "watch", "update"}


def test_every_authenticated_user_may_read_both_kinds_and_nothing_else() -> None:
    (role,) = roles_bound_to(AUTHENTICATED)
    assert role["kind"] == "ClusterRole"
    assert sorted((g, r, tuple(rule["verbs"])) for rule in role["rules"]
                  for g in rule["apiGroups"] for r in rule["resources"]) == [
        ("authentication.concierge.pinniped.dev", "jwtauthenticators", ("get", "list")),
        ("config.concierge.pinniped.dev", "credentialissuers", ("get", "list"))]


_RESOURCES = {"ServiceAccount": "serviceaccounts", "Secret": "secrets",
              "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings",
              "TokenRequest": "serviceaccounts/token", "TokenReview": "tokenreviews",
              "JWTAuthenticator": "jwtauthenticators", "JWTAuthenticators": "jwtauthenticators",
              "JWTAuthenticator status": "jwtauthenticators/status",
              "CredentialIssuer": "credentialissuers",
              "CredentialIssuer status": "credentialissuers/status", "Lease": "leases",
              "revocation marker": "secrets", "ElevationPolicy": "elevationpolicies",
              "ElevationPolicies": "elevationpolicies", "ElevationRequest": "elevationrequests",
              "ElevationRequests": "elevationrequests"}
_VERBS = {"create": "create", "read": "get", "replace": "update", "delete": "delete",
          "list": "list", "update": "update"}


def _calls_of_every_code_path() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes call the concierge makes, by running each path."""
    kube = ListingFakeKube()
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
        await _custom_object_paths(kube)
        await _lease_paths(kube)
        await _elevation_paths(kube)
        await revoke(kube, NS, alice.username)  # creates a marker, deletes everything of hers
        await sweep_expired(kube, NS, 0, clock=lambda: 2e9)  # lists and deletes markers
        await UserObjects(kube, NS, 300).ensure(alice)
        await IdleUsers(kube, NS, 0, clock=lambda: 2e9).sweep()  # lists, deletes all kinds

    asyncio.run(go())
    used = set()
    for call in kube.calls:
        if call == "ping":  # KubernetesClientAPI.ping lists Secrets
            used.add(("secrets", "list"))
            continue
        verb, kind = call.split(" ", 1)
        used.add((_RESOURCES[kind], _VERBS[verb]))
    client = type("Client", (), {"user_agent": ""})()
    watcher = ObjectWatcher(client, NS, versions)
    authenticators = ClusterAuthenticators(kube, AuthenticatorSet({}), {}, _no_verifier,
                                           max_objects=1, refresh_interval_seconds=300)
    store = ElevationStore(kube, NS, config.ElevationConfig())
    for source in (*watcher.sources, authenticators.watch_source(client, ""),
                   RevocationMirror(NS).watch_source(client), *store.watch_sources(client)):
        resource = _RESOURCES.get(source.what) or _RESOURCES[source.what.removesuffix("s")]
        used |= {(resource, "list"), (resource, "watch")}
    return used


def _no_verifier(settings: ObjectSettings) -> Built:
    raise AssertionError("no object is admitted here")


async def _custom_object_paths(kube: FakeKube) -> None:
    """The JWTAuthenticator status writes and every CredentialIssuer call."""
    authenticators = AuthenticatorSet({})
    controller = ClusterAuthenticators(kube, authenticators, {}, _no_verifier,
                                       max_objects=1, refresh_interval_seconds=300)
    kube.watch_custom(JWT_AUTHENTICATORS, controller.mirror)
    kube.apply_custom(JWT_AUTHENTICATORS, "refused", {"issuer": "http://x"})
    await controller.reconcile()  # writes the refused object's status
    publisher = CredentialIssuerPublisher(kube, authenticators, name=NS, endpoint="https://c",
                                          ca_bundle=b"ca", namespace=NS)
    await publisher.publish()  # read (not found), create, update status


async def _elevation_paths(kube: FakeKube) -> None:
    """An elevation asked for, approved, revoked (its access removed) and deleted, with the
    store listing (no watch)."""
    kube.apply_custom(ELEVATION_POLICIES, "prod", {
        "group": "corp:prod", "requesters": {"users": ["corp:alice"]},
        "approvers": {"users": ["corp:carol"]}})
    store = ElevationStore(kube, NS, config.ElevationConfig())
    objects = UserObjects(kube, NS, 0)
    service = ElevationService(kube, NS, store, objects, config.ElevationConfig(),
                               sessions=Sessions(kube, NS, 600, 30))
    alice, carol = wire.Identity("corp:alice", ()), wire.Identity("corp:carol", ())
    await objects.ensure(alice)
    view = await service.create(alice, ElevationCreate.model_validate(
        {"group": "corp:prod", "reason": "incident 42"}), AuditEvent("create", "test"))
    await service.decide(carol, view.id, "approve", None, AuditEvent("approve", "test"))
    await service.decide(alice, view.id, "revoke", None, AuditEvent("revoke", "test"))
    (ended,) = await store.requests()
    assert await service.delete_ended(ended)


async def _lease_paths(kube: FakeKube) -> None:
    """Create the Lease, renew it, and read it as another replica."""
    first, second = (LeaseElector(kube, NS, "pinniped-concierge", identity=name,
                                  duration_seconds=15, renew_seconds=5) for name in "ab")
    await first.step()  # read (not found), create
    await first.step()  # update
    await second.step()  # read
    assert first.leading
    assert not second.leading


def test_the_rbac_grants_exactly_the_verbs_the_code_uses() -> None:
    granted = {(resource, verb) for doc in roles_bound_to(CONCIERGE)
               for rule in doc.get("rules", [])
               for resource in rule["resources"] for verb in rule["verbs"]}
    # impersonate is never called: escalation prevention requires holding it to grant it
    assert granted - _calls_of_every_code_path() == {("users", "impersonate"),
                                                     ("groups", "impersonate")}
    assert _calls_of_every_code_path() <= granted


def test_a_resource_quota_bounds_the_secrets_in_the_namespace() -> None:
    docs = list(yaml.safe_load_all((DEPLOY / "concierge.yaml").read_text()))
    (quota,) = [d for d in docs if d["kind"] == "ResourceQuota"]
    assert quota["metadata"]["namespace"] == "pinniped-concierge"
    assert int(quota["spec"]["hard"]["count/secrets"]) > 0
