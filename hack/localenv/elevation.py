"""What an administrator sets up for temporary elevated access, and what the tests read back.

The story tests (tests/integration/test_elevation_*.py) need a cluster where a
governed group is worth having: `pod_namespace` makes a namespace whose pods
the governed group may delete and the people's ordinary group may only read
(so "back to normal" is something kubectl can show), `apply_policy` applies an
ElevationPolicy built from the API model (so its shape is the one the CRD and
the concierge validate), and the readers here open both audit logs: the
concierge's (one line per elevation step) and the apiserver's (the
ElevationRequest writes with their bodies, and every impersonated call).

`poll` measures how long something took to become true, in wall-clock seconds,
so the tests can print the figures the issue asks for.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from pinniped_apis import constants
from pinniped_apis.elevation import ElevationPolicySpec, Subjects

T = TypeVar("T")

POLICY_RESOURCE = f"{constants.ELEVATION_POLICY_PLURAL}.{constants.ELEVATION_GROUP}"
REQUEST_RESOURCE = f"{constants.ELEVATION_REQUEST_PLURAL}.{constants.ELEVATION_GROUP}"


def policy_manifest(name: str, group: str, *, requester_groups: Sequence[str],
                    approver_groups: Sequence[str], approvals_required: int = 1,
                    max_duration_seconds: int = 3600) -> dict[str, Any]:
    spec = ElevationPolicySpec(
        group=group, requesters=Subjects(groups=tuple(requester_groups)),
        approvers=Subjects(groups=tuple(approver_groups)),
        approvals_required=approvals_required, max_duration_seconds=max_duration_seconds)
    return {"apiVersion": constants.ELEVATION_API_VERSION,
            "kind": constants.ELEVATION_POLICY_KIND, "metadata": {"name": name},
            "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True)}


def apply_policy(cluster: LocalCluster, manifest: dict[str, Any]) -> None:
    """Apply an ElevationPolicy as an administrator would (kubectl, admin credentials)."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))


def delete_policy(cluster: LocalCluster, name: str) -> None:
    cluster.kubectl("delete", POLICY_RESOURCE, name, "--ignore-not-found", "--wait=false")


def elevation_requests(cluster: LocalCluster, namespace: str) -> list[dict[str, Any]]:
    """The ElevationRequest objects in a concierge's namespace, as the apiserver holds them."""
    listed = cluster.kubectl("get", REQUEST_RESOURCE, "-n", namespace, "-o", "json")
    items = json.loads(listed.stdout)["items"]
    assert isinstance(items, list)
    return items


@dataclass(frozen=True)
class PodNamespace:
    """A namespace with pods: `deleters` may delete them, `readers` may only get and list."""

    name: str
    deleters: str
    readers: str

    def pod(self, cluster: LocalCluster, name: str | None = None) -> str:
        """Create one pod object (no kubelet runs: the apiserver just stores it); its name."""
        name = name or f"victim-{secrets.token_hex(3)}"
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": self.name},
               # No token to mount: no controller-manager makes the default account's.
               "spec": {"automountServiceAccountToken": False,
                        "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}}
        cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
        return name

    def exists(self, cluster: LocalCluster, pod: str) -> bool:
        got = cluster.kubectl("get", "pod", pod, "-n", self.name, "--ignore-not-found",
                              "-o", "name")
        return bool(got.stdout.strip())


def pod_namespace(cluster: LocalCluster, *, deleters: str, readers: str) -> PodNamespace:
    """What the issue's administrator does: bind the governed group to a Role that may delete
    pods. The readers' Role lets the same people see the pods as their ordinary selves."""
    namespace = f"prod-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", namespace)
    # The ServiceAccount admission plugin wants the pods' account to exist; without a
    # controller-manager nobody makes `default`.
    cluster.kubectl("-n", namespace, "create", "serviceaccount", "default")
    cluster.kubectl("-n", namespace, "create", "role", "pod-deleter", "--verb=get,list,delete",
                    "--resource=pods")
    cluster.kubectl("-n", namespace, "create", "rolebinding", "prod-admins",
                    "--role=pod-deleter", f"--group={deleters}")
    cluster.kubectl("-n", namespace, "create", "role", "pod-reader", "--verb=get,list",
                    "--resource=pods")
    cluster.kubectl("-n", namespace, "create", "rolebinding", "pod-readers",
                    "--role=pod-reader", f"--group={readers}")
    return PodNamespace(namespace, deleters, readers)


# --- the audit logs ---------------------------------------------------------------


def elevation_audit(concierge: LocalConcierge) -> list[dict[str, Any]]:
    """The concierge's audit lines about elevations (`elevation.*`), oldest first."""
    return [line for line in concierge.audit_lines()
            if str(line.get("request", "")).startswith("elevation.")]


def apiserver_events(cluster: LocalCluster,
                     keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The apiserver's audit events `keep` selects, oldest first."""
    events = []
    for line in cluster.audit_log.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        if keep(event):
            events.append(event)
    return events


def request_writes(cluster: LocalCluster, request_id: str) -> list[dict[str, Any]]:
    """The apiserver's audit events of writes to one ElevationRequest (bodies included, by
    the audit policy's rule for them)."""
    def keep(event: dict[str, Any]) -> bool:
        ref = event.get("objectRef") or {}
        return (ref.get("resource") == constants.ELEVATION_REQUEST_PLURAL
                and event.get("verb") in ("create", "update", "patch")
                and event.get("stage") == "ResponseComplete"
                and (ref.get("name") == request_id
                     or (event.get("responseObject") or {}).get("metadata", {}).get("name")
                     == request_id))

    return apiserver_events(cluster, keep)


def impersonated_calls(cluster: LocalCluster, namespace: str, verb: str,
                       username: str) -> list[dict[str, Any]]:
    """The apiserver's audit events of `verb` on pods in `namespace` made as `username`."""
    def keep(event: dict[str, Any]) -> bool:
        ref = event.get("objectRef") or {}
        return (ref.get("resource") == "pods" and ref.get("namespace") == namespace
                and event.get("verb") == verb and event.get("stage") == "ResponseComplete"
                and (event.get("impersonatedUser") or {}).get("username") == username)

    return apiserver_events(cluster, keep)


# --- measuring ----------------------------------------------------------------------


@dataclass(frozen=True)
class Polled:
    """How a `poll` ended: after `seconds` and `tries`, with the last value seen."""

    seconds: float
    tries: int
    ok: bool
    last: Any


def poll(attempt: Callable[[], T], done: Callable[[T], bool], *, timeout: float,
         interval: float = 0.5, since: float | None = None) -> Polled:
    """Call `attempt` until `done` says yes or `timeout` passes (from `since`, a
    `time.monotonic()`, or from now); `seconds` is measured from the same start."""
    start = time.monotonic() if since is None else since
    tries = 0
    last: Any = None
    while True:
        tries += 1
        last = attempt()
        if done(last):
            return Polled(time.monotonic() - start, tries, True, last)
        if time.monotonic() - start >= timeout:
            return Polled(time.monotonic() - start, tries, False, last)
        time.sleep(interval)
