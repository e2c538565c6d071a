"""Count a concierge's per-user objects in a real cluster, and say what is wrong with them.

After load or a fault, the question is not only "did the clients get 200s"
but "is the cluster left right": exactly one ServiceAccount, ClusterRole and
ClusterRoleBinding per user, wired to each other, and no more live session
Secrets than `maxSessionsPerUser`, each owned by the user's current
ServiceAccount (a session owned by a deleted one would be an orphan). The
census reads with the admin's kubectl, never through the concierge.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from localenv.cluster import LocalCluster
from pinniped_concierge import naming

Obj = dict[str, Any]


@dataclass
class Census:
    namespace: str
    #: Objects by the user key label (`naming.USER_LABEL`).
    service_accounts: dict[str, list[Obj]] = field(default_factory=lambda: defaultdict(list))
    cluster_roles: dict[str, list[Obj]] = field(default_factory=lambda: defaultdict(list))
    bindings: dict[str, list[Obj]] = field(default_factory=lambda: defaultdict(list))
    sessions: dict[str, list[Obj]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def take(cls, cluster: LocalCluster, namespace: str) -> Census:
        census = cls(namespace)
        owned = naming.owned_selector(namespace)
        for kind, where, selector, into in (
                ("serviceaccounts", namespace, owned, census.service_accounts),
                ("clusterroles", None, owned, census.cluster_roles),
                ("clusterrolebindings", None, owned, census.bindings),
                ("secrets", namespace, naming.session_selector(), census.sessions)):
            for item in _list(cluster, kind, where, selector):
                into[naming.label(item, naming.USER_LABEL) or ""].append(item)
        return census

    def session_count(self) -> int:
        return sum(len(items) for items in self.sessions.values())

    def max_sessions(self) -> int:
        return max((len(items) for items in self.sessions.values()), default=0)

    def problems(self, usernames: Iterable[str], max_sessions_per_user: int) -> list[str]:
        """Everything that is not exactly right for these users (and no one else)."""
        wanted = {naming.user_key(u, self.namespace): u for u in usernames}
        found: list[str] = []
        for kind, objects in (("ServiceAccount", self.service_accounts),
                              ("ClusterRole", self.cluster_roles),
                              ("ClusterRoleBinding", self.bindings),
                              ("session Secret", self.sessions)):
            strangers = sorted(set(objects) - set(wanted))
            if strangers:
                found.append(f"{kind}s for users nobody logged in as: {strangers}")
        for key, username in sorted(wanted.items()):
            found += self._user_problems(key, username, max_sessions_per_user)
        return found

    def _user_problems(self, key: str, username: str, max_sessions: int) -> list[str]:
        found = []
        name = naming.USER_OBJECT_PREFIX + key
        for kind, objects in (("ServiceAccount", self.service_accounts[key]),
                              ("ClusterRole", self.cluster_roles[key]),
                              ("ClusterRoleBinding", self.bindings[key])):
            if len(objects) != 1:
                found.append(f"{username}: {len(objects)} {kind}s, not 1")
            elif naming.metadata_field(objects[0], "name") != name:
                found.append(f"{username}: {kind} named {objects[0]['metadata']['name']}")
        if found:
            return found
        binding = self.bindings[key][0]
        if binding.get("roleRef", {}).get("name") != name or [
                (s.get("kind"), s.get("name"), s.get("namespace"))
                for s in binding.get("subjects") or []] != [
                ("ServiceAccount", name, self.namespace)]:
            found.append(f"{username}: ClusterRoleBinding does not bind its own role and account")
        users = [n for rule in self.cluster_roles[key][0].get("rules") or []
                 if rule.get("resources") == ["users"] for n in rule.get("resourceNames") or []]
        if users != [username]:
            found.append(f"{username}: ClusterRole impersonates users {users}")
        sessions = self.sessions[key]
        if len(sessions) > max_sessions:
            found.append(f"{username}: {len(sessions)} live sessions, over the cap of "
                         f"{max_sessions}")
        sa_uid = naming.metadata_field(self.service_accounts[key][0], "uid")
        orphans = [s for s in sessions if [o.get("uid") for o in
                                           s["metadata"].get("ownerReferences") or []] != [sa_uid]]
        if orphans:
            found.append(f"{username}: {len(orphans)} sessions not owned by the live "
                         "ServiceAccount")
        return found


def remove_user_objects(cluster: LocalCluster, namespace: str) -> None:
    """Delete every per-user object and session of the concierge in `namespace` (no
    controller-manager runs locally, so nothing garbage-collects them): a test that made
    thousands of them leaves the shared cluster as it found it."""
    owned = naming.owned_selector(namespace)
    cluster.kubectl("delete", "clusterrolebindings,clusterroles", "-l", owned, "--wait=false")
    cluster.kubectl("delete", "secrets", "-n", namespace, "-l", naming.session_selector(),
                    "--wait=false")
    cluster.kubectl("delete", "serviceaccounts", "-n", namespace, "-l", owned, "--wait=false")


def _list(cluster: LocalCluster, kind: str, namespace: str | None, selector: str) -> list[Obj]:
    where = ["-n", namespace] if namespace is not None else []
    result = cluster.kubectl("get", kind, *where, "-l", selector, "-o", "json")
    items = json.loads(result.stdout).get("items") or []
    return [item for item in items if isinstance(item, dict)]
