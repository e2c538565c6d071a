"""`AppEnv` whose logins consult an `ElevationStore` fed by the fake's watches (unit tests of
logins with elevations, and of the governed-group sweep)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from localenv.app_env import ALICE_TOKEN, NS, AppEnv
from pinniped_apis import rfc3339, wire
from pinniped_concierge import naming
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.elevation_store import ElevationStore
from pinniped_concierge.kubeapi import ELEVATION_POLICIES, ELEVATION_REQUESTS, Kind, Obj
from pinniped_concierge.login import LoginService
from pinniped_concierge.naming import groups_from_rules
from pinniped_concierge.userobjects import UserObjects

ALICE = "corp:alice@example.com"
ROLE = naming.user_object_name(ALICE, NS)
PROD = "corp:prod-admins"


def when(t: float) -> str:
    return rfc3339.format_time(dt.datetime.fromtimestamp(t, dt.UTC))


class ElevationEnv(AppEnv):
    """`AppEnv` whose logins consult an `ElevationStore`, fed by the fake's watches."""

    def __init__(self, *, listed: bool = True) -> None:
        super().__init__()
        self.store = ElevationStore(self.kube, NS, ElevationConfig())
        self.user_objects: UserObjects = self.services.login._user_objects
        old = self.services.login
        self.services.login = LoginService(old.authenticator_set, self.user_objects,
                                           old._sessions, elevations=self.store)
        self.store.watch_sources(type("Client", (), {"user_agent": ""})())
        if listed:
            self.kube.watch_custom(ELEVATION_POLICIES, self.store.policies_target)
            self.kube.watch_custom(ELEVATION_REQUESTS, self.store.requests_target, NS,
                                   naming.owned_selector(NS))

    def govern(self, group: str, name: str = "prod") -> None:
        self.kube.apply_custom(ELEVATION_POLICIES, name, {
            "group": group, "requesters": {"groups": ["corp:devs"]},
            "approvers": {"users": ["corp:carol"]}})

    def elevate(self, group: str = PROD, *, phase: str = "Approved",
                ends_in: float = 300, name: str = "elev-00000000000000a1") -> Obj:
        status: dict[str, Any] = {"phase": phase}
        if phase == "Approved":
            status |= {"approvedAt": when(time.time()), "expiresAt": when(time.time() + ends_in)}
        return asyncio.run(self.kube.create_namespaced_custom(ELEVATION_REQUESTS, NS, {
            "apiVersion": ELEVATION_REQUESTS.api_version, "kind": ELEVATION_REQUESTS.kind,
            "metadata": {"name": name, "labels": naming.user_labels(ALICE, NS)},
            "spec": {"group": group, "reason": "incident 42", "durationSeconds": 600,
                     "requester": {"username": ALICE, "groups": ["corp:devs"]}},
            "status": status}))

    def end(self, obj: Obj) -> None:
        ended = obj | {"status": {"phase": "Revoked", "endedBy": "corp:carol",
                                  "endReason": "done", "endedAt": when(time.time())}}
        asyncio.run(self.kube.replace_namespaced_custom(ELEVATION_REQUESTS, NS,
                                                        obj["metadata"]["name"], ended))

    def credential(self) -> tuple[wire.ClusterCredential, dict[str, Any], dict[str, Any]]:
        """Log alice in: her credential, the raw response status, and the audit line."""
        response = self.login(ALICE_TOKEN)
        assert response.status_code == 200, response.text
        return (wire.parse_credential_response(response.json()), response.json()["status"],
                self.audit()[-1])

    def role_groups(self) -> tuple[str, ...]:
        role = self.kube.get(Kind.CLUSTER_ROLE, ROLE)
        assert role is not None
        return tuple(sorted(groups_from_rules(role["rules"])))

    def session_secret(self, credential: wire.ClusterCredential) -> Obj:
        secrets = [obj for (kind, _, _), obj in self.kube.objects.items()
                   if kind == Kind.SECRET and obj["metadata"]["name"] in _bound_secret(
                       self, credential)]
        (secret,) = secrets
        return secret


def _bound_secret(env: AppEnv, credential: wire.ClusterCredential) -> set[str]:
    return {env.kube.tokens[credential.token]["secret"]}
