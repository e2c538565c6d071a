"""The whole story of temporary elevated access, against the real pieces.

An administrator binds `corp:prod-admins` (the prefix is the one the local
concierge's `corp` authenticator puts on every group) to a Role that may delete
pods, and applies an ElevationPolicy for it: alice and bob (group `sre`) may
ask, carol (`sre-leads`) may approve, one approval is enough. Then, with the
real `pinniped` CLI, the real kubectl running the plugin through kubeconfigs
made by `pinniped get kubeconfig`, the real IdP, concierge and apiserver:

- the group in alice's ID token alone grants nothing (her IdP lists
  `prod-admins`, and she still cannot delete pods, nor impersonate the group);
- she cannot write ElevationRequests herself with kubectl;
- she asks; she cannot approve her own request, bob (no approver) cannot either;
  carol approves;
- alice's kubectl can then delete a pod, with no browser, no password and no
  edit of her kubeconfig: the plugin notices, logs in again with the refresh
  token and updates `as-groups` (the call that notices may be refused, and
  says so; the next one works);
- when the duration ends (one test) or carol revokes (the other), alice's
  kubectl is Forbidden within 20 s, and within 30 s more works again as her
  ordinary self, with no manual step;
- the concierge's audit log has one line per step, and the apiserver's shows
  the ElevationRequest writes (who asked, who approved) and alice's pod delete
  as impersonated with the group.

The times (approval -> working, end -> Forbidden, Forbidden -> back to normal)
are printed (run with -s) and recorded as test properties. Each test runs its
own IdP and concierge, for users no other test logs in as; the policy is
cluster-scoped, so each test applies its own before its concierge starts (a
login must never see the group ungoverned) and deletes it afterwards.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.elevation import (
    REQUEST_RESOURCE,
    PodNamespace,
    Polled,
    apply_policy,
    delete_policy,
    elevation_audit,
    elevation_requests,
    impersonated_calls,
    pod_namespace,
    policy_manifest,
    poll,
    request_writes,
)
from localenv.fixtures_cli import CLIWorld, idp_password_grants, new_world
from localenv.idp import LocalIdP, TestUser
from pinniped_apis import constants
from pinniped_apis.rfc3339 import parse_time

pytestmark = pytest.mark.integration

#: The IdP's group names; the concierge's `corp` authenticator prefixes them.
PREFIX = "corp:"
GOVERNED = f"{PREFIX}prod-admins"
REQUESTERS = f"{PREFIX}sre"
APPROVERS = f"{PREFIX}sre-leads"
MAX_DURATION = 120
#: The issue's bounds: an ended elevation is Forbidden within this, and then back to normal
#: within that.
END_TO_FORBIDDEN = 20
FORBIDDEN_TO_NORMAL = 30
REFUSED_HINT = "If this command was refused, run it again"
REASON = "INC-4242: stuck pods in prod"


@dataclass(frozen=True)
class Person:
    """One user with a laptop of their own, logged in once with the password."""

    name: str
    laptop: CLIWorld

    @property
    def username(self) -> str:
        """As the cluster knows them: the prefixed email."""
        return f"{PREFIX}{self.name}@example.com"

    def elevate(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`pinniped elevate ARGS --kubeconfig KUBECONFIG`; no password in the environment."""
        return self.laptop.pinniped("elevate", *args, "--kubeconfig",
                                    str(self.laptop.kubeconfig))

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.laptop.kubectl(*args)

    def as_groups(self) -> list[str]:
        return list(self.laptop.kubeconfig_user().get("as-groups") or [])


@dataclass
class Story:
    cluster: LocalCluster
    idp: LocalIdP
    concierge: LocalConcierge
    pods: PodNamespace
    alice: Person
    bob: Person
    carol: Person
    policy: str
    #: Measured seconds, printed and recorded at the end.
    times: dict[str, float] = field(default_factory=dict)
    #: alice's kubectl calls after the approval until one could delete a pod.
    calls_to_working: int = 0
    #: What refused alice's first call after the end: her stale as-groups, or RBAC.
    refused_by: str = ""

    def delete_pod(self, pod: str, *, dry_run: bool = False) -> subprocess.CompletedProcess[str]:
        args = ["delete", "pod", pod, "-n", self.pods.name, "--wait=false"]
        return self.alice.kubectl(*args, *(["--dry-run=server"] if dry_run else []))

    def request_object(self, request_id: str) -> dict[str, Any]:
        (found,) = [item for item in elevation_requests(self.cluster, self.concierge.namespace)
                    if item["metadata"]["name"] == request_id]
        return found


def _person(tmp_path: Path, story_parts: tuple[LocalCluster, LocalIdP, LocalConcierge],
            name: str) -> Person:
    cluster, idp, concierge = story_parts
    home = tmp_path / name
    home.mkdir()
    laptop = new_world(home, cluster, idp, concierge)
    laptop.as_ci_job(name)
    laptop.get_kubeconfig(env=laptop.password_env(name))
    return Person(name, laptop)


@pytest.fixture
def story(tmp_path: Path, cluster: LocalCluster, idp_factory: Callable[..., LocalIdP],
          concierge_factory: Callable[..., LocalConcierge]) -> Iterator[Story]:
    suffix = secrets.token_hex(3)
    names = {who: f"{who}-{suffix}" for who in ("alice", "bob", "carol")}
    groups = {"alice": ["sre", "prod-admins"],  # the governed group, straight from the IdP
              "bob": ["sre"], "carol": ["sre-leads"]}
    idp = idp_factory(users=[TestUser(names[who], secrets.token_urlsafe(12),
                                      f"{names[who]}@example.com", groups[who])
                             for who in names])
    pods = pod_namespace(cluster, deleters=GOVERNED, readers=REQUESTERS)
    policy = f"prod-admins-{suffix}"
    apply_policy(cluster, policy_manifest(policy, GOVERNED, requester_groups=[REQUESTERS],
                                          approver_groups=[APPROVERS],
                                          max_duration_seconds=MAX_DURATION))
    try:
        concierge = concierge_factory(idp)
        alice, bob, carol = (_person(tmp_path, (cluster, idp, concierge), names[who])
                             for who in ("alice", "bob", "carol"))
        yield Story(cluster, idp, concierge, pods, alice, bob, carol, policy)
    finally:
        delete_policy(cluster, policy)


def _report(story: Story, record_property: Callable[[str, object], None], title: str) -> None:
    for name, seconds in story.times.items():
        record_property(name, round(seconds, 2))
    record_property("kubectl_calls_to_working", story.calls_to_working)
    figures = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in story.times.items())
    print(f"\nelevation timing ({title}): {figures}; kubectl calls after the approval until "
          f"one worked: {story.calls_to_working}; first refusal after the end by "
          f"{story.refused_by}")


def _forbidden(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


# --- before anyone asks ---------------------------------------------------------------


def _the_token_group_alone_grants_nothing(story: Story, pod: str) -> None:
    alice = story.alice
    assert GOVERNED not in alice.as_groups()
    assert REQUESTERS in alice.as_groups()
    (entry,) = alice.laptop.cached_credentials().values()
    assert GOVERNED not in entry["identity"]["groups"]
    refused = story.delete_pod(pod, dry_run=True)
    assert _forbidden(refused), refused.stderr
    assert 'cannot delete resource "pods"' in refused.stderr
    # Nor can she add the group by hand: her account may impersonate only what she proved.
    by_hand = alice.kubectl("delete", "pod", pod, "-n", story.pods.name, "--dry-run=server",
                            f"--as={alice.username}", f"--as-group={REQUESTERS}",
                            f"--as-group={GOVERNED}")
    assert _forbidden(by_hand), by_hand.stderr
    assert "impersonate" in by_hand.stderr
    # The concierge says why it withheld the group.
    logins = [line for line in story.concierge.audit_lines()
              if line.get("request") == "login" and line.get("outcome") == "success"
              and line.get("username") == alice.username]
    assert logins
    assert GOVERNED in _listed(logins[-1].get("groupsGovernedByPolicy"))
    assert GOVERNED not in logins[-1]["groups"]


def _listed(value: object) -> list[str]:
    """An audit field holding a list of names (as a JSON list, or JSON text of one)."""
    if isinstance(value, str):
        value = json.loads(value) if value.startswith("[") else [value]
    assert isinstance(value, list), value
    return [str(v) for v in value]


def _no_kubectl_writes_of_requests(story: Story, request_id: str | None) -> None:
    """Users get no RBAC on ElevationRequests: only the concierge writes them."""
    alice, namespace = story.alice, story.concierge.namespace
    if request_id is None:
        forged = {"apiVersion": constants.ELEVATION_API_VERSION,
                  "kind": constants.ELEVATION_REQUEST_KIND,
                  "metadata": {"name": f"elev-{secrets.token_hex(8)}", "namespace": namespace},
                  "spec": {"group": GOVERNED, "reason": "forged", "durationSeconds": 60,
                           "requester": {"username": alice.username}},
                  "status": {"phase": "Approved"}}
        created = subprocess.run(
            ["kubectl", "--kubeconfig", str(alice.laptop.kubeconfig), "create", "-f", "-"],
            input=json.dumps(forged), env=alice.laptop.env, capture_output=True, text=True,
            timeout=60, check=False)
        assert _forbidden(created), created.stderr
        assert f'User "{alice.username}" cannot create resource' in created.stderr
        return
    edited = alice.kubectl("patch", REQUEST_RESOURCE, request_id, "-n", namespace,
                           "--type=merge", "-p", json.dumps({"status": {"phase": "Approved"}}))
    assert _forbidden(edited), edited.stderr
    assert f'User "{alice.username}"' in edited.stderr
    listed = alice.kubectl("get", REQUEST_RESOURCE, "-n", namespace)
    assert _forbidden(listed), listed.stderr


# --- asking and approving --------------------------------------------------------------------


def _request(story: Story, duration: str) -> str:
    asked = story.alice.elevate("request", GOVERNED, "--reason", REASON, "--duration", duration)
    assert asked.returncode == 0, asked.stderr
    request_id = asked.stdout.strip()
    assert re.fullmatch(constants.ELEVATION_ID_PATTERN, request_id), asked.stdout
    obj = story.request_object(request_id)
    assert obj["spec"]["requester"]["username"] == story.alice.username
    assert obj["status"]["phase"] == "Pending"
    return request_id


def _refusals(story: Story, request_id: str) -> None:
    """The issue's refusals, each with a message and a nonzero exit; nothing changes."""
    own = story.alice.elevate("approve", request_id)
    assert own.returncode != 0
    assert "your own request" in own.stderr, own.stderr
    bob = story.bob.elevate("approve", request_id)
    assert bob.returncode != 0
    # Bob may not decide on it, and may not even learn that it exists.
    assert bob.stderr.strip(), "refused without a word"
    assert story.alice.username not in bob.stderr
    too_long = story.bob.elevate("request", GOVERNED, "--reason", "just in case",
                                 "--duration", "10m")
    assert too_long.returncode != 0
    assert str(MAX_DURATION) in too_long.stderr or "2m" in too_long.stderr, too_long.stderr
    ungoverned = story.bob.elevate("request", f"{PREFIX}nobody-governs-this", "--reason", "x y")
    assert ungoverned.returncode != 0
    assert "ElevationPolicy" in ungoverned.stderr, ungoverned.stderr
    assert story.request_object(request_id)["status"]["phase"] == "Pending"
    assert not story.request_object(request_id)["status"].get("approvals")


def _carol_sees_and_approves(story: Story, request_id: str) -> None:
    listed = story.carol.elevate("list", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    items = document["items"] if isinstance(document, dict) else document
    (mine,) = [item for item in items if item["id"] == request_id]
    assert mine["requester"] == story.alice.username
    assert mine["mayApprove"] is True
    bobs = story.bob.elevate("list", "-o", "json")
    assert bobs.returncode == 0, bobs.stderr
    assert request_id not in bobs.stdout
    approved = story.carol.elevate("approve", request_id)
    assert approved.returncode == 0, approved.stderr
    twice = story.carol.elevate("approve", request_id)
    assert twice.returncode != 0
    assert twice.stderr.strip()
    status = story.request_object(request_id)["status"]
    assert status["phase"] == "Approved"
    assert [a["user"] for a in status["approvals"]] == [story.carol.username]


def _alice_deletes_a_pod(story: Story, pod: str, approved_at: float) -> None:
    """At most two kubectl calls: the one that notices may be refused (and says so)."""
    first = story.delete_pod(pod)
    assert REFUSED_HINT in first.stderr, first.stderr  # this call logged in again
    assert "could not refresh" not in first.stderr
    tries, result = 1, first
    if result.returncode != 0:
        assert _forbidden(result), result.stderr
        tries, result = 2, story.delete_pod(pod)
    assert result.returncode == 0, result.stderr
    story.times["approval_to_working"] = time.monotonic() - approved_at
    story.calls_to_working = tries
    assert GOVERNED in story.alice.as_groups()
    (entry,) = story.alice.laptop.cached_credentials().values()
    assert GOVERNED in entry["identity"]["groups"]
    assert not story.pods.exists(story.cluster, pod)


def _elevated(story: Story, pod: str, duration: str) -> str:
    """Everything up to alice deleting a pod with the group; returns the request id."""
    _the_token_group_alone_grants_nothing(story, pod)
    _no_kubectl_writes_of_requests(story, None)
    request_id = _request(story, duration)
    _no_kubectl_writes_of_requests(story, request_id)
    _refusals(story, request_id)
    _carol_sees_and_approves(story, request_id)
    _alice_deletes_a_pod(story, pod, time.monotonic())
    return request_id


# --- the end ---------------------------------------------------------------------------------


def _forbidden_again(story: Story, pod: str, since: float) -> Polled:
    polled = poll(lambda: story.delete_pod(pod, dry_run=True), _forbidden,
                  timeout=END_TO_FORBIDDEN + 10, interval=0.5, since=since)
    assert polled.ok, polled.last.stderr
    story.times["end_to_forbidden"] = polled.seconds
    assert polled.seconds > -1.5, "the elevation ended before its time"
    assert polled.seconds <= END_TO_FORBIDDEN, polled
    story.refused_by = "impersonation" if "impersonate" in polled.last.stderr else "RBAC"
    return polled


def _back_to_normal(story: Story, pod: str) -> None:
    """Her ordinary self: reads work, the group is gone from as-groups and the cache, and
    deleting is refused by RBAC (not by a stale impersonation)."""
    started = time.monotonic()

    def normal(result: subprocess.CompletedProcess[str]) -> bool:
        return result.returncode == 0 and GOVERNED not in story.alice.as_groups()

    polled = poll(lambda: story.alice.kubectl("get", "pods", "-n", story.pods.name,
                                              "-o", "name"),
                  normal, timeout=FORBIDDEN_TO_NORMAL + 10, interval=0.5)
    assert polled.ok, polled.last.stderr
    story.times["forbidden_to_normal"] = time.monotonic() - started
    assert story.times["forbidden_to_normal"] <= FORBIDDEN_TO_NORMAL, polled
    assert f"pod/{pod}" in polled.last.stdout
    assert story.alice.as_groups() == [REQUESTERS]
    (entry,) = story.alice.laptop.cached_credentials().values()
    assert GOVERNED not in entry["identity"]["groups"]
    refused = story.delete_pod(pod, dry_run=True)
    assert _forbidden(refused), refused.stderr
    assert 'cannot delete resource "pods"' in refused.stderr
    assert story.pods.exists(story.cluster, pod)
    # All of it without a browser or a password: her one password login is the first.
    assert idp_password_grants(story.idp, story.alice.name) == 1


def _access_removed(story: Story, request_id: str) -> None:
    """The controller records the removal once; the role no longer allows the group."""
    polled = poll(lambda: story.request_object(request_id)["status"],
                  lambda status: bool(status.get("accessRemovedAt")), timeout=15, interval=0.5)
    assert polled.ok, polled.last


# --- the audit logs --------------------------------------------------------------------------


def _lines(story: Story, request_id: str, request: str) -> list[dict[str, Any]]:
    return [line for line in elevation_audit(story.concierge)
            if line.get("request") == request and line.get("id") == request_id]


def _steps(story: Story, request_id: str) -> list[tuple[str, str, str, object]]:
    """What the concierge's audit log says about one request, for failure messages."""
    return [(line["request"], line["outcome"], line["reason"], line.get("username"))
            for line in elevation_audit(story.concierge) if line.get("id") == request_id]


def _concierge_audit(story: Story, request_id: str, ended_by: str) -> None:
    alice, bob, carol = story.alice, story.bob, story.carol
    (created,) = _lines(story, request_id, "elevation.create")
    assert (created["outcome"], created["username"], created["group"]) == (
        "success", alice.username, GOVERNED)
    assert created["requestReason"] == REASON
    approvals = _lines(story, request_id, "elevation.approve")
    by = {(line["username"], line["outcome"]): line for line in approvals}
    assert len(by) == len(approvals) == 4, approvals  # alice, bob, carol, carol again
    assert by[(alice.username, "failure")]["reason"] == "self_approval"
    assert by[(bob.username, "failure")]["reason"] in ("not_an_approver", "elevation_not_found")
    assert by[(carol.username, "success")]["phase"] == "Approved"
    assert by[(carol.username, "failure")]["reason"] in ("already_approved", "elevation_ended")
    if ended_by == "revoke":
        (ended,) = _lines(story, request_id, "elevation.revoke")
        assert (ended["outcome"], ended["username"], ended["phase"]) == (
            "success", carol.username, "Revoked")
    else:
        (ended,) = _lines(story, request_id, "elevation.expire")
        assert ended["username"] == alice.username
    removed = _lines(story, request_id, "elevation.access_removed")
    assert all(line["username"] == alice.username for line in removed)
    if ended_by == "revoke" and "sessionsEnded" in ended:
        # The replica that served the revoke removed the access at once, in the same step.
        assert not removed, removed
    else:
        assert len(removed) == 1, ("no audit line for the access removal",
                                   _steps(story, request_id))
        assert int(removed[0]["sessionsEnded"]) >= 1
    # The logins: one that withheld the governed group, one that granted it.
    elevated = [line for line in story.concierge.audit_lines()
                if line.get("request") == "login" and line.get("username") == alice.username
                and GOVERNED in _listed(line.get("elevatedGroups") or [])]
    assert elevated, "no login of alice with the elevated group"
    assert GOVERNED in elevated[0]["groups"]


def _apiserver_audit(story: Story, request_id: str, ended_phase: str, victim: str) -> None:
    writes = request_writes(story.cluster, request_id)
    concierge_sa = f"system:serviceaccount:{story.concierge.namespace}:pinniped-concierge"
    assert writes
    assert all(event["user"]["username"] == concierge_sa for event in writes)
    created = [event for event in writes if event["verb"] == "create"]
    assert len(created) == 1
    assert created[0]["requestObject"]["spec"]["requester"]["username"] == story.alice.username
    phases = [(event.get("requestObject") or {}).get("status", {}).get("phase")
              for event in writes if event["verb"] != "create"]
    assert "Approved" in phases, phases
    assert ended_phase in phases, phases
    approved = next(event["requestObject"]["status"] for event in writes
                    if event["verb"] != "create"
                    and event["requestObject"].get("status", {}).get("phase") == "Approved")
    assert [a["user"] for a in approved["approvals"]] == [story.carol.username]
    deletes = [event for event in impersonated_calls(story.cluster, story.pods.name, "delete",
                                                     story.alice.username)
               if event["responseStatus"]["code"] == 200
               and event["objectRef"].get("name") == victim]
    assert len(deletes) == 1, deletes
    assert GOVERNED in deletes[0]["impersonatedUser"]["groups"]
    assert deletes[0]["user"]["username"].startswith("system:serviceaccount:")


# --- the tests -------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_an_approved_elevation_works_then_ends_by_itself(
        story: Story, record_property: Callable[[str, object], None]) -> None:
    victim, survivor = story.pods.pod(story.cluster), story.pods.pod(story.cluster)
    request_id = _elevated(story, victim, "20s")
    expires_at = parse_time(story.request_object(request_id)["status"]["expiresAt"])
    assert expires_at is not None
    # Still elevated until then (a dry run: the survivor stays for the checks after).
    still = story.delete_pod(survivor, dry_run=True)
    assert still.returncode == 0, still.stderr

    # The duration is measured from its end, wherever this test is when it comes.
    ends_in = (expires_at - dt.datetime.now(dt.UTC)).total_seconds()
    assert 0 < ends_in <= 20
    _forbidden_again(story, survivor, since=time.monotonic() + ends_in)
    _back_to_normal(story, survivor)
    _access_removed(story, request_id)
    status = story.request_object(request_id)["status"]
    assert status["phase"] == "Expired"
    _concierge_audit(story, request_id, ended_by="expire")
    _apiserver_audit(story, request_id, "Expired", victim)
    _report(story, record_property, "expiry")


@pytest.mark.timeout(150)
def test_a_revoked_elevation_ends_at_once(
        story: Story, record_property: Callable[[str, object], None]) -> None:
    victim, survivor = story.pods.pod(story.cluster), story.pods.pod(story.cluster)
    request_id = _elevated(story, victim, "90s")

    revoked_at = time.monotonic()
    revoked = story.carol.elevate("revoke", request_id, "--reason", "incident over")
    assert revoked.returncode == 0, revoked.stderr
    _forbidden_again(story, survivor, since=revoked_at)
    _back_to_normal(story, survivor)
    _access_removed(story, request_id)
    status = story.request_object(request_id)["status"]
    assert (status["phase"], status["endedBy"], status["endReason"]) == (
        "Revoked", story.carol.username, "incident over")
    _concierge_audit(story, request_id, ended_by="revoke")
    _apiserver_audit(story, request_id, "Revoked", victim)
    _report(story, record_property, "revoke")


@pytest.mark.timeout(90)
def test_a_denied_request_grants_nothing_and_the_plugin_stops_checking(story: Story) -> None:
    pod = story.pods.pod(story.cluster)
    request_id = _request(story, "1m")
    # While it is pending, alice's kubectl works as her ordinary self (each call checks).
    pending = story.alice.kubectl("get", "pods", "-n", story.pods.name, "-o", "name")
    assert pending.returncode == 0, pending.stderr
    checks = len(_state_checks(story))
    assert checks >= 1, "the plugin did not check a pending request"

    denied = story.carol.elevate("deny", request_id, "--reason", "use the runbook")
    assert denied.returncode == 0, denied.stderr
    status = story.request_object(request_id)["status"]
    assert (status["phase"], status["endedBy"], status["endReason"]) == (
        "Denied", story.carol.username, "use the runbook")
    late = story.carol.elevate("approve", request_id)
    assert late.returncode != 0
    assert "Denied" in late.stderr, late.stderr
    refused = story.delete_pod(pod, dry_run=True)
    assert _forbidden(refused), refused.stderr
    assert GOVERNED not in story.alice.as_groups()

    # Nothing open any more: one more check says so, and then the plugin stops asking.
    for _ in range(3):
        again = story.alice.kubectl("get", "pods", "-n", story.pods.name, "-o", "name")
        assert again.returncode == 0, again.stderr
    assert len(_state_checks(story)) <= checks + 2
    (denial,) = _lines(story, request_id, "elevation.deny")
    assert (denial["outcome"], denial["username"]) == ("success", story.carol.username)


def _state_checks(story: Story) -> list[dict[str, Any]]:
    """The plugin's checks of alice's state, in the concierge's audit log."""
    return [line for line in elevation_audit(story.concierge)
            if line.get("request") == "elevation.state"
            and line.get("username") == story.alice.username]
