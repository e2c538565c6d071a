"""Elevations over `FakeKube`, for unit tests: the real service and controller, a manual clock.

`ElevationServiceEnv` wires the real `ElevationStore` (no watch: it lists on each
call, as with a swapped kube), `UserObjects`, `ElevationService` and
`ElevationController` to one `FakeKube` and one `ManualClock`, so a test can
apply a policy, act as alice, bob or carol, move time on and look at exactly
what the cluster holds.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

from localenv.fixtures_concierge import FakeKube, ManualClock
from pinniped_apis import wire
from pinniped_apis.elevation import ElevationCreate
from pinniped_concierge import naming
from pinniped_concierge.audit import AuditEvent, AuditLog
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.elevation_controller import ElevationController
from pinniped_concierge.elevation_service import ElevationService
from pinniped_concierge.elevation_store import ElevationStore, StoredRequest, read_request
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, ELEVATION_REQUESTS, Kind, Obj
from pinniped_concierge.naming import groups_from_rules
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.userobjects import UserObjects

NS = "pinniped-concierge"
GROUP = "corp:prod-admins"
ALICE = wire.Identity("corp:alice", ("corp:sre",))
BOB = wire.Identity("corp:bob", ("corp:sre",))  # may ask, may not approve
CAROL = wire.Identity("corp:carol", ("corp:sre-leads",))
DAVE = wire.Identity("corp:dave", ("corp:sre-leads",))
MALLORY = wire.Identity("corp:mallory", ("corp:contractors",))  # neither

T = TypeVar("T")


def policy_spec(group: str = GROUP, *, approvals_required: int = 1,
                max_duration_seconds: int = 3600) -> dict[str, Any]:
    return {"group": group, "requesters": {"groups": ["corp:sre"]},
            "approvers": {"groups": ["corp:sre-leads"]},
            "approvalsRequired": approvals_required,
            "maxDurationSeconds": max_duration_seconds}


def event(kind: str = "elevation.test") -> AuditEvent:
    return AuditEvent(request=kind, client="")


class ElevationServiceEnv:
    """The elevation service and controller over a `FakeKube`, with no app or login around
    them (`localenv.elevation_app_env.ElevationEnv` is the app with logins)."""

    def __init__(self, **config: Any) -> None:
        self.clock = ManualClock()
        self.kube = FakeKube(self.clock)
        self.config = ElevationConfig.model_validate(config)
        self.store = ElevationStore(self.kube, NS, self.config)
        self.user_objects = UserObjects(self.kube, NS, 0, clock=self.clock)
        self.session_store = Sessions(self.kube, NS, 600, 30, clock=self.clock)
        self.service = ElevationService(self.kube, NS, self.store, self.user_objects,
                                        self.config, sessions=self.session_store, clock=self.clock)
        self.audit_stream = io.StringIO()
        self.controller = ElevationController(self.service, self.store,
                                              AuditLog(self.audit_stream), self.config,
                                              self.clock)

    @staticmethod
    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(coroutine)

    def policy(self, name: str = "prod-admins", spec: Any = None) -> None:
        self.kube.apply_custom(ELEVATION_POLICIES, name, spec if spec is not None
                               else policy_spec())

    def ask(self, caller: wire.Identity = ALICE, group: str = GROUP,
            duration: int | None = None) -> str:
        """A request by `caller`; its id."""
        body = ElevationCreate.model_validate({"group": group, "reason": "incident 42",
                                               **({"durationSeconds": duration}
                                                  if duration is not None else {})})
        return self.run(self.service.create(caller, body, event())).id

    def decide(self, caller: wire.Identity, request_id: str, action: str) -> str:
        """`action` by `caller`; the phase it left the request in."""
        return self.run(self.service.decide(caller, request_id, action, None, event())).phase

    def approved(self, requester: wire.Identity = ALICE, duration: int | None = 600) -> str:
        request_id = self.ask(requester, duration=duration)
        self.decide(CAROL, request_id, "approve")
        return request_id

    def obj(self, request_id: str) -> Obj:
        return self.kube.namespaced_custom[(ELEVATION_REQUESTS.plural, NS, request_id)]

    def stored(self, request_id: str) -> StoredRequest:
        parsed = read_request(self.obj(request_id), NS)
        assert parsed is not None
        return parsed

    # The user's side, as a login with an elevation would leave it.

    def role_groups(self, who: wire.Identity = ALICE) -> tuple[str, ...]:
        role = self.kube.get(Kind.CLUSTER_ROLE, naming.user_object_name(who.username, NS))
        assert role is not None
        return groups_from_rules(role.get("rules"))

    def logged_in_with(self, who: wire.Identity, *groups: str) -> None:
        """The user's objects, their role allowing their own groups plus `groups`."""
        self.run(self.user_objects.ensure(wire.Identity(who.username,
                                                        (*who.groups, *groups))))

    def session(self, who: wire.Identity, name: str, *elevations: str) -> None:
        """A session Secret of `who`, minted during `elevations` (none: an ordinary one)."""
        annotations = {naming.USERNAME_ANNOTATION: who.username}
        labels = naming.user_labels(who.username, NS) | {naming.SESSION_LABEL: "true"}
        if elevations:
            annotations[naming.ELEVATIONS_ANNOTATION] = ",".join(elevations)
            labels[naming.ELEVATED_LABEL] = "true"
        self.run(self.kube.create(Kind.SECRET, {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": naming.session_secret_name(name), "labels": labels,
                         "annotations": annotations}}, NS))

    def sessions(self) -> list[str]:
        return [naming.session_id_of(n) for n in self.kube.names(Kind.SECRET)]

    def audit(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.audit_stream.getvalue().splitlines()]
