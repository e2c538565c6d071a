"""Least privilege, rule by rule: without any one verb of its RBAC, the concierge breaks.

The variants are generated from deploy/rbac.yaml: for every verb on every resource of the
Role and ClusterRole bound to the concierge's ServiceAccount, one test applies that RBAC
with just that verb taken away (through `install_rbac`, as every local concierge gets its
RBAC), starts the real concierge on it and runs the scenarios below until one fails. The
test passes only if one does. The variants leave out the read access every authenticated
user has (it overlaps the concierge's own get/list on its kinds); two baseline tests prove
that the scenarios pass with nothing removed, with and without that access, so a failure is
the missing verb's doing.

The last scenario reads the apiserver's audit log: a refusal the concierge survives (a
watch that falls back to listing again) still shows there as a 403.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import localenv.concierge as local_concierge
from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, jwt_authenticator
from localenv.elevation import REQUEST_RESOURCE, apply_policy, delete_policy
from localenv.idp import LocalIdP
from localenv.procs import wait_for
from pinniped_apis import constants, wire

pytestmark = pytest.mark.integration

RBAC = local_concierge.DEPLOY_RBAC
SA = {"kind": "ServiceAccount", "name": local_concierge.CONCIERGE_SA}
#: A concierge that cannot become ready is a failed scenario; don't wait the full 30 s for it.
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class Permission:
    role_kind: str
    role_name: str
    rule: int
    resource: str
    verb: str

    @property
    def id(self) -> str:
        return f"{self.role_kind.lower()}-{self.resource.replace('/', '-')}-{self.verb}"


def _documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def _concierge_alone(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`docs` without the bindings of anyone but the concierge: the read access that every
    authenticated user gets (pinniped-concierge-discovery) covers some of the concierge's
    own verbs, and would hide their removal."""
    return [d for d in docs if "subjects" not in d or any(
        s["kind"] == SA["kind"] and s["name"] == SA["name"] for s in d["subjects"])]


def concierge_permissions() -> list[Permission]:
    """Every (resource, verb) of the roles rbac.yaml binds to the concierge's ServiceAccount."""
    docs = _documents()
    bound = {(d["roleRef"]["kind"], d["roleRef"]["name"]) for d in docs if "roleRef" in d
             and any(s["kind"] == SA["kind"] and s["name"] == SA["name"]
                     for s in d["subjects"])}
    found = []
    for doc in docs:
        if (doc["kind"], doc["metadata"]["name"]) in bound:
            for index, rule in enumerate(doc["rules"]):
                found += [Permission(doc["kind"], doc["metadata"]["name"], index, resource, verb)
                          for resource in rule["resources"] for verb in rule["verbs"]]
    return found


PERMISSIONS = concierge_permissions()


def without(permission: Permission) -> list[dict[str, Any]]:
    """rbac.yaml's documents with `permission`'s one verb on its one resource taken away."""
    docs = _documents()
    for doc in docs:
        if (doc["kind"], doc["metadata"]["name"]) == (permission.role_kind,
                                                     permission.role_name):
            rule = doc["rules"][permission.rule]
            others = [r for r in rule["resources"] if r != permission.resource]
            verbs = [v for v in rule["verbs"] if v != permission.verb]
            replacement = [rule | {"resources": others}] if others else []
            if verbs:
                replacement.append(rule | {"resources": [permission.resource], "verbs": verbs})
            doc["rules"][permission.rule:permission.rule + 1] = replacement
    return docs


def granted(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {(d["kind"], d["metadata"]["name"], r, v) for d in docs
            for rule in d.get("rules", []) for r in rule["resources"] for v in rule["verbs"]}


def test_the_variants_cover_every_verb_and_each_removes_exactly_one() -> None:
    assert len(PERMISSIONS) >= 25
    assert ("jwtauthenticators", "list") in _also_granted_to_everyone()
    assert len({p.id for p in PERMISSIONS}) == len(PERMISSIONS)
    full = granted(_documents())
    for permission in PERMISSIONS:
        removed = full - granted(without(permission))
        assert removed == {(permission.role_kind, permission.role_name, permission.resource,
                            permission.verb)}
        assert granted(without(permission)) <= full


# --- the scenarios ------------------------------------------------------------------


@dataclass
class World:
    concierge: LocalConcierge
    cluster: LocalCluster
    idp: LocalIdP

    def post(self, path: str, body: dict[str, Any], bearer: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        context = ssl.create_default_context(cafile=str(self.concierge.ca_file))
        with httpx.Client(verify=context, timeout=30) as http:
            return http.post(self.concierge.url + path, json=body, headers=headers)

    def login(self, username: str) -> wire.ClusterCredential:
        request = wire.TokenCredentialRequest.create(
            token=self.idp.password_grant(username)["id_token"],
            authenticator_name=self.concierge.authenticator_name)
        response = self.post(wire.TOKEN_CREDENTIAL_REQUEST_PATH, request.to_wire())
        assert response.status_code == 200, response.text
        return wire.parse_credential_response(response.json())

    def json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.cluster.kubectl(*args, "-o", "json").stdout))


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def _user_object(credential: wire.ClusterCredential) -> str:
    return str(_claims(credential.token)["kubernetes.io"]["serviceaccount"]["name"])


def _poll(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.3)


def new_user_logs_in_and_acts_as_themselves(world: World) -> None:
    credential = world.login("alice")
    identity = credential.identity
    assert identity.groups, "alice needs groups for the groups rule to be exercised"
    result = world.cluster.kubectl(
        "--token", credential.token, f"--as={identity.username}",
        *[f"--as-group={g}" for g in identity.groups], "auth", "can-i", "--list", check=False)
    assert result.returncode == 0, result.stderr


def returning_user_costs_two_calls(world: World) -> None:
    time.sleep(1.0)  # the watch has seen alice's objects
    world.login("alice")
    assert world.concierge.audit_lines()[-1]["kubeApiCalls"] <= 2


def changed_user_objects_are_put_right(world: World) -> None:
    name = _user_object(world.login("bob"))
    role = world.json("get", "clusterrole", name)
    good_rules = role["rules"]
    role["rules"] = [*good_rules, {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
    binding = world.json("get", "clusterrolebinding", name)
    good_subjects = binding["subjects"]
    binding["subjects"] = [*good_subjects, {"kind": "User", "name": "mallory",
                                            "apiGroup": "rbac.authorization.k8s.io"}]
    for changed in (role, binding):
        world.cluster.kubectl("replace", "-f", "-", input=json.dumps(changed))
    time.sleep(0.5)
    world.login("bob")
    assert world.json("get", "clusterrole", name)["rules"] == good_rules
    assert world.json("get", "clusterrolebinding", name)["subjects"] == good_subjects
    # roleRef is immutable: a binding to another role must be deleted and created again
    moved = copy.deepcopy(binding) | {"roleRef": binding["roleRef"] | {"name": "elsewhere"}}
    moved["metadata"] = {k: v for k, v in binding["metadata"].items()
                         if k in ("name", "labels", "annotations")}
    world.cluster.kubectl("delete", "clusterrolebinding", name)
    world.cluster.kubectl("create", "-f", "-", input=json.dumps(moved))
    time.sleep(0.5)
    world.login("bob")
    assert world.json("get", "clusterrolebinding", name)["roleRef"]["name"] == name


def whoami_and_logout_end_the_session(world: World) -> None:
    credential = world.login("carol")
    response = world.post(wire.WHOAMI_REQUEST_PATH, wire.whoami_request(), credential.token)
    assert response.status_code == 200, response.text
    response = world.post(wire.LOGOUT_REQUEST_PATH, wire.logout_request(), credential.token)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == {"sessionEnded": True}
    secret = _claims(credential.token)["kubernetes.io"]["secret"]["name"]
    gone = world.cluster.kubectl("-n", world.concierge.namespace, "get", "secret", secret,
                                 check=False)
    assert gone.returncode != 0
    assert "NotFound" in gone.stderr


def revoking_a_user_removes_their_objects(world: World) -> None:
    """`revoke-user` acts with the concierge's own credentials (its config's kubeconfig):
    it records the revocation and deletes the user's ServiceAccount, binding, role and
    sessions. The idle-user clean-up deletes the same kinds with the same verbs."""
    credential = world.login("bob")
    name = _user_object(credential)
    result = subprocess.run(
        [str(local_concierge.CONCIERGE_BIN), "revoke-user", "--config",
         str(world.concierge.config_path), credential.identity.username],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
    for what in (["-n", world.concierge.namespace, "serviceaccount", name],
                 ["clusterrole", name], ["clusterrolebinding", name]):
        gone = world.cluster.kubectl("get", *what, check=False)
        assert "NotFound" in gone.stderr, f"{what} is still there"
    refused = world.post(wire.TOKEN_CREDENTIAL_REQUEST_PATH, wire.TokenCredentialRequest.create(
        token=world.idp.password_grant("bob")["id_token"],
        authenticator_name=world.concierge.authenticator_name).to_wire())
    assert refused.json()["status"] == {"message": wire.AUTHENTICATION_FAILED}


def credential_issuer_is_published(world: World) -> None:
    def published() -> bool:
        result = world.cluster.kubectl("get", "credentialissuer",
                                       world.concierge.credential_issuer, "-o", "json",
                                       check=False)
        return result.returncode == 0 and bool(
            json.loads(result.stdout).get("status", {}).get("strategies"))

    _poll(published, "the CredentialIssuer is published")


def jwt_authenticator_status_is_written(world: World) -> None:
    name = f"lp-{world.concierge.namespace}"[:63]
    manifest = jwt_authenticator(name, world.idp.issuer, world.idp.client_id,
                                 world.idp.ca_file, world.concierge.instance_labels,
                                 usernamePrefix="lp:", groupsPrefix="lp:")
    world.cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        def ready() -> bool:
            status = world.json("get", "jwtauthenticator", name).get("status", {})
            return bool(status.get("phase") == "Ready")

        _poll(ready, "the JWTAuthenticator is Ready")
    finally:
        world.cluster.kubectl("delete", "jwtauthenticator", name, check=False)


def an_elevation_is_asked_for_approved_revoked_and_deleted(world: World) -> None:
    """The concierge alone writes ElevationRequests: it creates one, reads and updates it
    at each decision, and (retention 0) its controller deletes it once it has ended."""
    alice, carol = world.login("alice"), world.login("carol")
    name = f"lp-{world.concierge.namespace}"[:63]
    group = f"corp:{name}"  # governed by this concierge's test only
    apply_policy(world.cluster, {
        "apiVersion": constants.ELEVATION_API_VERSION, "kind": constants.ELEVATION_POLICY_KIND,
        "metadata": {"name": name},
        "spec": {"group": group, "requesters": {"users": [alice.identity.username]},
                 "approvers": {"users": [carol.identity.username]}}})
    try:
        answers: list[httpx.Response] = []

        def asked() -> bool:  # 400 until the concierge's watch has seen the policy
            answers.append(world.post(constants.ELEVATION_REQUESTS_PATH,
                                      {"group": group, "reason": "least privilege"},
                                      alice.token))
            return answers[-1].status_code != 400

        _poll(asked, "the policy is seen")
        assert answers[-1].status_code in (200, 201), answers[-1].text
        request_id = answers[-1].json()["id"]
        for who, action in ((carol, "approve"), (alice, "revoke")):
            response = world.post(f"{constants.ELEVATION_REQUESTS_PATH}/{request_id}/{action}",
                                  {}, who.token)
            assert response.status_code == 200, response.text

        def deleted() -> bool:
            gone = world.cluster.kubectl("get", REQUEST_RESOURCE, "-n",
                                         world.concierge.namespace, request_id, check=False)
            return "NotFound" in gone.stderr

        _poll(deleted, "the ended request is deleted (retentionSeconds 0)", timeout=40)
    finally:
        delete_policy(world.cluster, name)


def the_apiserver_refused_the_concierge_nothing(world: World) -> None:
    """Some refusals the concierge survives (a watch that falls back to listing again, a
    read it treats as "not there"); the apiserver's audit log still shows each of them."""
    account = f"system:serviceaccount:{world.concierge.namespace}:{SA['name']}"
    refused = set()
    for line in world.cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        if (event.get("user", {}).get("username") == account
                and event.get("responseStatus", {}).get("code") == 403):
            ref = event.get("objectRef", {})
            refused.add(f"{event['verb']} {ref.get('resource')}/{ref.get('subresource', '')}")
    assert not refused, f"the apiserver refused the concierge: {sorted(refused)}"


#: Quick ones first: a variant stops at its first failure.
SCENARIOS: list[Callable[[World], None]] = [
    new_user_logs_in_and_acts_as_themselves, returning_user_costs_two_calls,
    whoami_and_logout_end_the_session, changed_user_objects_are_put_right,
    revoking_a_user_removes_their_objects, credential_issuer_is_published,
    jwt_authenticator_status_is_written, an_elevation_is_asked_for_approved_revoked_and_deleted,
    the_apiserver_refused_the_concierge_nothing]


Starter = Callable[..., World]


@pytest.fixture
def start_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, idp: LocalIdP,
               local_ca: pki.CA, cluster: LocalCluster) -> Iterator[Starter]:
    """Start a concierge whose RBAC is `documents` (rbac.yaml or a variant of it); with
    `fresh`, on a cluster of its own, where no other test's grants linger."""
    def capped(condition: Callable[[], bool], timeout: float, what: str, *rest: Any) -> None:
        wait_for(condition, min(timeout, START_TIMEOUT), what, *rest)

    started: list[LocalConcierge | LocalCluster] = []

    def start(documents: list[dict[str, Any]], *, fresh: bool = False) -> World:
        variant = tmp_path / "rbac.yaml"
        variant.write_text(yaml.safe_dump_all(documents))
        monkeypatch.setattr(local_concierge, "DEPLOY_RBAC", variant)
        monkeypatch.setattr(local_concierge, "wait_for", capped)
        on = cluster
        if fresh:
            on = LocalCluster.start(tmp_path / "cluster", local_ca)
            started.append(on)
        concierge = LocalConcierge.start(
            tmp_path / "concierge", local_ca, on, idp,
            authenticators=[local_concierge.authenticator_config(
                "corp", idp.issuer, idp.client_id, idp.ca_file)],
            lease={"renewIntervalSeconds": 1, "durationSeconds": 3},  # renewed within the run
            elevation={"syncIntervalSeconds": 1, "retentionSeconds": 0})
        started.append(concierge)
        return World(concierge, on, idp)

    try:
        yield start
    finally:
        for running in reversed(started):
            running.stop()


def first_failure(start: Callable[[], World]) -> str | None:
    """The name of the first scenario that fails (starting counts as one), or None."""
    try:
        world = start()
    except (RuntimeError, TimeoutError, AssertionError) as error:
        return f"start: {str(error).splitlines()[0]}"
    for scenario in SCENARIOS:
        try:
            scenario(world)
        except (AssertionError, RuntimeError, httpx.HTTPError) as error:
            return f"{scenario.__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return None


def test_with_the_full_rbac_every_scenario_works(
        start_with: Starter) -> None:
    assert first_failure(lambda: start_with(_documents())) is None


def test_the_concierges_own_roles_are_enough_without_the_discovery_grant(
        start_with: Starter) -> None:
    alone = _concierge_alone(_documents())
    assert len(alone) < len(_documents())
    assert first_failure(lambda: start_with(alone, fresh=True)) is None


def _also_granted_to_everyone() -> set[tuple[str, str]]:
    """(resource, verb) pairs that rbac.yaml grants to others too (the discovery role): their
    variants need a cluster where no other test's such grant lingers."""
    docs = _documents()
    alone = _concierge_alone(docs)
    others = {(d["roleRef"]["kind"], d["roleRef"]["name"]) for d in docs
              if "roleRef" in d and d not in alone}
    return {(r, v) for d in docs if (d["kind"], d["metadata"]["name"]) in others
            for rule in d["rules"] for r in rule["resources"] for v in rule["verbs"]}


@pytest.mark.parametrize("permission", PERMISSIONS, ids=[p.id for p in PERMISSIONS])
def test_without_this_one_permission_the_concierge_fails(
        permission: Permission, start_with: Starter) -> None:
    fresh = (permission.resource, permission.verb) in _also_granted_to_everyone()
    failure = first_failure(lambda: start_with(_concierge_alone(without(permission)),
                                               fresh=fresh))
    assert failure is not None, f"everything worked without {permission.id}: drop it from RBAC"
    print(f"{permission.id}: {failure}")
