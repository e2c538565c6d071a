"""Each user's ServiceAccount, impersonation ClusterRole and ClusterRoleBinding.

The ClusterRole is the security boundary of the whole product: it allows
`impersonate` on `users` [the username] and on `groups` [exactly the groups of
the latest login], and nothing else. It is brought in line with the token's
groups at every login, so a group removed at the IdP stops being
impersonable as soon as the user logs in again, for every token of that user.
Note that a rule with an empty `resourceNames` would mean *all* names, so a
user without groups gets no groups rule at all.

The objects are reconciled at each login but remembered in memory, with the
resourceVersion of each object as we last wrote or read it. A user coming
back with the same groups costs no API call here, but only while the
`object_watch` mirror confirms that none of their three objects has changed
since (a write by another replica, another concierge sharing the namespace,
or an administrator changes the resourceVersion), and only within
`userCacheTTLSeconds`. Without a mirror, or while its watches are down, every
login reconciles. Objects that exist but are not ours (no managed-by label,
another namespace recorded, or annotated for another username) are never
adopted.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, ServerError
from pinniped_concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj
from pinniped_concierge.object_watch import ObjectVersions

RBAC_GROUP = "rbac.authorization.k8s.io"
MAX_CACHED_USERS = 10_000
_LOCK_STRIPES = 64


@dataclass(frozen=True)
class UserRef:
    """What a session needs to know about a user's ServiceAccount."""

    username: str
    service_account: str
    uid: str


@dataclass(frozen=True)
class _Cached:
    ref: UserRef
    groups: frozenset[str]
    #: (kind, name, resourceVersion) of the three objects as we last wrote or read them.
    versions: tuple[tuple[Kind, str, str], ...]
    checked_at: float


def impersonation_rules(identity: wire.Identity) -> list[Obj]:
    rules: list[Obj] = [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
                         "resourceNames": [identity.username]}]
    if identity.groups:  # never an empty resourceNames: that would mean every group
        rules.append({"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
                      "resourceNames": sorted(identity.groups)})
    return rules


def groups_from_rules(rules: object) -> tuple[str, ...]:
    """The groups a ClusterRole of ours allows impersonating (the whoami view)."""
    if not isinstance(rules, list):
        return ()
    groups: list[str] = []
    for rule in rules:
        if isinstance(rule, dict) and rule.get("resources") == ["groups"]:
            groups.extend(n for n in rule.get("resourceNames") or [] if isinstance(n, str))
    return tuple(groups)


def _normalised_rules(rules: object) -> list[tuple[tuple[str, ...], ...]]:
    if not isinstance(rules, list):
        return []
    keys = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
    return [tuple(tuple(sorted(rule.get(k) or [])) for k in keys)
            for rule in rules if isinstance(rule, dict)]


def _subjects(binding: Obj) -> list[tuple[object, ...]]:
    subjects = binding.get("subjects")
    if not isinstance(subjects, list):
        return []
    return [(s.get("kind"), s.get("name"), s.get("namespace"))
            for s in subjects if isinstance(s, dict)]


class UserObjects:
    """Reconciles and remembers the per-user objects."""

    def __init__(self, kube: KubeAPI, namespace: str, cache_ttl_seconds: float,
                 versions: ObjectVersions | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._namespace = namespace
        self._ttl = cache_ttl_seconds if versions is not None else 0
        self._versions = versions
        self._monotonic = monotonic
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._locks = [asyncio.Lock() for _ in range(_LOCK_STRIPES)]

    def forget(self, username: str) -> None:
        self._cache.pop(username, None)

    def object_name(self, username: str) -> str:
        return naming.user_object_name(username, self._namespace)

    async def ensure(self, identity: wire.Identity, issued_at: float | None = None) -> UserRef:
        """Make the cluster match `identity`; return the user's ServiceAccount.

        `issued_at` is the ID token's `iat` (None when it has none).
        """
        key = naming.user_key(identity.username, self._namespace)
        async with self._locks[int(key[:8], 16) % _LOCK_STRIPES]:
            groups = frozenset(identity.groups)
            cached = self._fresh(identity.username)
            if cached is not None and cached.groups == groups:
                return cached.ref
            if cached is not None:
                # Warm path, groups changed. The mirror just confirmed the role is
                # the one we wrote, so one unconditional update of it is enough.
                try:
                    role = await self._kube.replace(Kind.CLUSTER_ROLE, cached.ref.service_account,
                                                    self._cluster_role(identity))
                except NotFound:
                    self.forget(identity.username)
                else:
                    versions = tuple(
                        (kind, name, _version(role) if kind == Kind.CLUSTER_ROLE else version)
                        for kind, name, version in cached.versions)
                    self._remember(replace(cached, groups=groups, versions=versions))
                    return cached.ref
            cached = await self._reconcile(identity)
            self._remember(cached)
            return cached.ref

    def _fresh(self, username: str) -> _Cached | None:
        cached = self._cache.get(username)
        if cached is None:
            return None
        if (self._versions is None or self._monotonic() - cached.checked_at >= self._ttl
                or not self._versions.matches(cached.versions)):
            # Expired, or someone else wrote (or deleted) one of the objects.
            self.forget(username)
            return None
        self._cache.move_to_end(username)
        return cached

    def _remember(self, cached: _Cached) -> None:
        if self._ttl <= 0:
            return
        self._cache[cached.ref.username] = cached
        self._cache.move_to_end(cached.ref.username)
        while len(self._cache) > MAX_CACHED_USERS:
            self._cache.popitem(last=False)

    # --- full reconcile (cold path) -------------------------------------------

    async def _reconcile(self, identity: wire.Identity) -> _Cached:
        name = self.object_name(identity.username)
        started = self._monotonic()
        sa = await self._create_or_read(Kind.SERVICE_ACCOUNT, self._service_account(identity),
                                        identity.username, self._namespace)
        uid = naming.metadata_field(sa, "uid")
        if not uid:
            raise ServerError(Reason.KUBERNETES_ERROR, f"ServiceAccount {name} has no uid")

        desired_role = self._cluster_role(identity)
        role = await self._create_or_read(Kind.CLUSTER_ROLE, desired_role, identity.username)
        if (_normalised_rules(role.get("rules")) != _normalised_rules(desired_role["rules"])
                or role.get("aggregationRule") is not None):
            role = await self._kube.replace(Kind.CLUSTER_ROLE, name, desired_role)

        desired_binding = self._binding(identity)
        binding = await self._create_or_read(Kind.CLUSTER_ROLE_BINDING, desired_binding,
                                             identity.username)
        if binding.get("roleRef") != desired_binding["roleRef"]:
            # roleRef is immutable: replace the whole binding.
            await self._kube.delete(Kind.CLUSTER_ROLE_BINDING, name,
                                    uid=naming.metadata_field(binding, "uid"))
            binding = await self._kube.create(Kind.CLUSTER_ROLE_BINDING, desired_binding)
        elif _subjects(binding) != _subjects(desired_binding):
            binding = await self._kube.replace(Kind.CLUSTER_ROLE_BINDING, name, desired_binding)
        versions = ((Kind.SERVICE_ACCOUNT, name, _version(sa)),
                    (Kind.CLUSTER_ROLE, name, _version(role)),
                    (Kind.CLUSTER_ROLE_BINDING, name, _version(binding)))
        return _Cached(UserRef(identity.username, name, uid), frozenset(identity.groups),
                       versions, started)

    async def _create_or_read(self, kind: Kind, desired: Obj, username: str,
                              namespace: str | None = None) -> Obj:
        name = desired["metadata"]["name"]
        try:
            return await self._kube.create(kind, desired, namespace)
        except Conflict:
            existing = await self._kube.read(kind, name, namespace)
        if not naming.is_owned(existing, self._namespace) or naming.annotation(
                existing, naming.USERNAME_ANNOTATION) != username:
            raise ServerError(Reason.USER_OBJECT_CONFLICT,
                              f"{kind} {name} exists but is not ours (concierge namespace "
                              f"{self._namespace}) for this user; refusing to adopt it")
        return existing

    # --- desired objects -----------------------------------------------------

    def _metadata(self, identity: wire.Identity, namespace: str | None = None) -> Obj:
        meta: dict[str, Any] = {
            "name": self.object_name(identity.username),
            "labels": naming.user_labels(identity.username, self._namespace),
            "annotations": {naming.USERNAME_ANNOTATION: identity.username},
        }
        if namespace is not None:
            meta["namespace"] = namespace
        return meta

    def _service_account(self, identity: wire.Identity) -> Obj:
        return {"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": self._metadata(identity, self._namespace),
                # The account only ever holds bound tokens we mint; it must not
                # get one mounted anywhere by accident.
                "automountServiceAccountToken": False}

    def _cluster_role(self, identity: wire.Identity) -> Obj:
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                "metadata": self._metadata(identity), "rules": impersonation_rules(identity)}

    def _binding(self, identity: wire.Identity) -> Obj:
        name = self.object_name(identity.username)
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
                "metadata": self._metadata(identity),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name,
                              "namespace": self._namespace}]}

    # --- reading back (whoami) --------------------------------------------------

    async def describe(self, service_account: str) -> wire.Identity:
        """The identity a ServiceAccount of ours stands for, as the cluster has it now."""
        sa = await self._kube.read(Kind.SERVICE_ACCOUNT, service_account, self._namespace)
        username = naming.annotation(sa, naming.USERNAME_ANNOTATION)
        if not naming.is_owned(sa, self._namespace) or username is None or (
                self.object_name(username) != service_account):
            raise NotFound(service_account)
        role = await self._kube.read(Kind.CLUSTER_ROLE, service_account)
        if not naming.is_owned(role, self._namespace):
            raise NotFound(service_account)
        return wire.Identity(username, groups_from_rules(role.get("rules")))


def _version(obj: Obj) -> str:
    """An object's resourceVersion; "" (never current) if the API left it out."""
    return naming.metadata_field(obj, "resourceVersion") or ""
