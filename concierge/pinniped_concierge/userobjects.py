"""Each user's ServiceAccount, impersonation ClusterRole and ClusterRoleBinding.

The ClusterRole is the security boundary of the whole product: it allows
`impersonate` on `users` [the username] and on `groups` [exactly the groups of
the newest ID token seen], and nothing else. It is brought in line with the
token's groups at every login, so a group removed at the IdP stops being
impersonable as soon as the user logs in again, for every token of that user.
"Newest" is by the token's `iat`, which the role records: a login with an
older token (a replayed one, or another laptop's cached one) never widens the
role and gets only the groups the role already allows (`group_history`); the
audit line names what it did not get. Note that a rule with an empty
`resourceNames` would mean *all* names, so a user without groups gets no
groups rule at all. The role also records when the user was last seen
(`naming.LAST_LOGIN_ANNOTATION`, for the idle-user clean-up), written at most
once an hour, so a returning user still costs no write.

The objects are reconciled at each login but remembered in memory, with the
resourceVersion of each object as we last wrote or read it. A user coming
back with the same groups costs no API call here, but only while the
`object_watch` mirror confirms that none of their three objects has changed
since (a write by another replica, another concierge sharing the namespace,
or an administrator changes the resourceVersion; the next login then reads
the role again, including another replica's record of a newer token), and
only within `userCacheTTLSeconds`. Without a mirror, or while its watches are
down, every login reconciles. Every update of the role is conditional on the
resourceVersion it was decided from, so two replicas can never overwrite each
other's decision unseen. Objects that exist but are not ours (no managed-by
label, another namespace recorded, or annotated for another username) are
never adopted, and a role carrying an `aggregationRule` is rewritten without
it.

One user's logins take turns on a replica (`exclusive`, a lock per user in
flight): a login reads the role, decides and writes it without another login
of the same user deciding from the same stale read.

Temporary elevated access (`ElevationInput`, from `elevation_store`): a group
an ElevationPolicy governs is never granted from the ID token. The token's
other groups go through `group_history` exactly as before, compared with the
role's groups minus the governed ones; then the groups of the user's active
elevations are added, to the role and to this login's identity. So the role's
groups differ whenever an elevation starts or ends, and the next login
(warm or not) writes the role. `withdraw` takes a group away again when an
elevation ends, without waiting for a login.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pinniped_apis import wire
from pinniped_concierge import group_history, naming
from pinniped_concierge.elevation_store import ElevationInput
from pinniped_concierge.elevation_store import Grant as ElevationGrant
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.group_history import Grant, RoleRecord
from pinniped_concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj
from pinniped_concierge.naming import groups_from_rules
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.user_locks import UserLocks
from pinniped_concierge.user_ownership import delete_user_objects

RBAC_GROUP = "rbac.authorization.k8s.io"
MAX_CACHED_USERS = 10_000
#: Conditional writes of one ClusterRole that may lose a race before the login gives up (503).
ROLE_WRITE_ATTEMPTS = 3
#: The audit field naming the groups a login did not get because its token is too old.
GROUPS_NARROWED_BY_AGE = "groupsNarrowedByAge"
#: The audit field naming the groups a login got from active elevations.
ELEVATED_GROUPS = "elevatedGroups"
#: The audit field naming the token's groups withheld because an ElevationPolicy governs them.
GROUPS_GOVERNED_BY_POLICY = "groupsGovernedByPolicy"


@dataclass(frozen=True)
class UserRef:
    """What a session needs to know about a user's ServiceAccount, and what this login got."""

    username: str
    service_account: str
    uid: str
    #: The groups this login may impersonate (the role allows every one of them).
    groups: tuple[str, ...] = ()
    #: Groups in the ID token that this login did not get: the token is older than the one
    #: that last set the user's groups (`group_history`).
    withheld_groups: tuple[str, ...] = ()
    #: The active elevations whose groups this login got (`groups` includes them).
    grants: tuple[ElevationGrant, ...] = ()
    #: The user has an elevation pending or active: the plugin should check its state.
    check_elevation: bool = False
    #: Groups in the ID token that this login did not get from it: a policy governs them.
    governed_withheld: tuple[str, ...] = ()

    @property
    def identity(self) -> wire.Identity:
        """The identity granted: what the credential and the audit line must carry."""
        return wire.Identity(self.username, self.groups)

    @property
    def elevated_groups(self) -> tuple[str, ...]:
        return tuple(sorted({g.group for g in self.grants}))

    def audit_fields(self) -> dict[str, str]:
        """Extra audit fields for this login: the groups withheld (by age, or because a policy
        governs them) and the groups elevated, each when there are any."""
        fields = {GROUPS_NARROWED_BY_AGE: self.withheld_groups,
                  GROUPS_GOVERNED_BY_POLICY: self.governed_withheld,
                  ELEVATED_GROUPS: self.elevated_groups}
        return {key: json.dumps(list(groups)) for key, groups in fields.items() if groups}

    def granting(self, grant: Grant, elevation: ElevationInput | None = None,
                 token_groups: Sequence[str] = ()) -> UserRef:
        if elevation is None:
            return replace(self, groups=grant.groups, withheld_groups=grant.withheld)
        return replace(self, groups=grant.groups, withheld_groups=grant.withheld,
                       grants=elevation.grants, check_elevation=elevation.check,
                       governed_withheld=tuple(g for g in token_groups
                                               if g in elevation.governed))


@dataclass(frozen=True)
class _Cached:
    ref: UserRef
    #: The ClusterRole's groups and recorded times, as we last wrote or read them.
    record: RoleRecord
    #: (kind, name, resourceVersion) of the three objects as we last wrote or read them.
    versions: tuple[tuple[Kind, str, str], ...]
    checked_at: float

    def version_of(self, kind: Kind) -> str:
        return next((version for k, _, version in self.versions if k == kind), "")


def impersonation_rules(identity: wire.Identity) -> list[Obj]:
    rules: list[Obj] = [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
                         "resourceNames": [identity.username]}]
    if identity.groups:  # never an empty resourceNames: that would mean every group
        rules.append({"apiGroups": [""], "resources": ["groups"], "verbs": ["impersonate"],
                      "resourceNames": sorted(identity.groups)})
    return rules


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


def _record(role: Obj) -> RoleRecord:
    return RoleRecord.of(role, groups_from_rules(role.get("rules")))


def decide(token_groups: Sequence[str], issued_at: float | None, record: RoleRecord | None,
           elevation: ElevationInput | None) -> Grant:
    """This login's groups: `group_history` for the token's ungoverned groups (against the
    role's ungoverned ones), plus the groups of active elevations.

    Without elevations in play (no governed group anywhere) this is `group_history.grant`
    exactly, so its guarantees hold unchanged for every ungoverned group.
    """
    if elevation is None or not (elevation.governed or elevation.grants):
        return group_history.grant(token_groups, issued_at, record)
    governed = elevation.governed
    history = (replace(record, groups=record.groups - governed)
               if record is not None else None)
    base = group_history.grant([g for g in token_groups if g not in governed], issued_at,
                               history)
    elevated = frozenset(g.group for g in elevation.grants if g.group in governed)
    if not elevated:
        return base
    return replace(base, groups=tuple(sorted(set(base.groups) | elevated)),
                   role_groups=base.role_groups | elevated)


class UserObjects:
    """Reconciles and remembers the per-user objects."""

    def __init__(self, kube: KubeAPI, namespace: str, cache_ttl_seconds: float,
                 versions: ObjectVersions | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time,
                 max_requests_per_user: int | None = None,
                 max_users: int | None = None) -> None:
        self._kube = kube
        self._namespace = namespace
        self._ttl = cache_ttl_seconds if versions is not None else 0
        self._versions = versions
        self._monotonic = monotonic
        self._clock = clock
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._locks = UserLocks(max_requests_per_user)
        self._max_users = max_users

    @property
    def namespace(self) -> str:
        return self._namespace

    def forget(self, username: str) -> None:
        self._cache.pop(username, None)

    async def delete(self, username: str) -> None:
        """Delete the user's objects where they are ours (`user_ownership`), and forget them."""
        self.forget(username)
        await delete_user_objects(self._kube, self._namespace, username, [], [])

    def object_name(self, username: str) -> str:
        return naming.user_object_name(username, self._namespace)

    @contextlib.asynccontextmanager
    async def exclusive(self, username: str) -> AsyncIterator[None]:
        """Hold `username`'s lock (reentrant within the task): one change of theirs at a time.

        A login holds it across `ensure` and the session's start, so that
        concurrent logins of one user run one after the other on this replica.
        """
        async with self._locks.hold(naming.user_key(username, self._namespace)):
            yield

    async def ensure(self, identity: wire.Identity, issued_at: float | None = None,
                     elevation: ElevationInput | None = None) -> UserRef:
        """Make the cluster match `identity`; return the user's ServiceAccount and what this
        login is granted.

        `issued_at` is the ID token's `iat` (None when it has none, which
        counts as oldest): a token older than the one that last set the
        user's groups gets only the groups the role already allows, and
        changes none (`group_history`). `elevation`: the governed groups are
        not granted from the token; the active elevations' groups are granted.
        """
        async with self.exclusive(identity.username):
            cached = self._fresh(identity.username)
            if cached is not None:
                user = await self._warm(cached, identity, issued_at, elevation)
                if user is not None:
                    return user
            cached, grant = await self._reconcile(identity, issued_at, elevation)
            self._remember(cached)
            return cached.ref.granting(grant, elevation, identity.groups)

    async def _warm(self, cached: _Cached, identity: wire.Identity, issued_at: float | None,
                    elevation: ElevationInput | None) -> UserRef | None:
        """A user the mirror says is unchanged: no call, or one conditional write of the role
        (groups changed, or "last seen" is due). None: reconcile instead."""
        grant = decide(identity.groups, issued_at, cached.record, elevation)
        now = self._clock()
        if not grant.changes(cached.record) and not cached.record.last_login_due(now):
            self._cache.move_to_end(identity.username)
            return cached.ref.granting(grant, elevation, identity.groups)
        body = self._cluster_role(identity.username, grant, now,
                                  cached.version_of(Kind.CLUSTER_ROLE))
        try:
            role = await self._kube.replace(Kind.CLUSTER_ROLE, cached.ref.service_account, body)
        except (NotFound, Conflict):  # deleted or changed since the mirror last looked
            self.forget(identity.username)
            return None
        versions = tuple((kind, name, _version(role) if kind == Kind.CLUSTER_ROLE else version)
                         for kind, name, version in cached.versions)
        self._remember(replace(cached, record=_record(role), versions=versions))
        return cached.ref.granting(grant, elevation, identity.groups)

    def _fresh(self, username: str) -> _Cached | None:
        cached = self._cache.get(username)
        if cached is None:
            return None
        if (self._versions is None or self._monotonic() - cached.checked_at >= self._ttl
                or not self._versions.matches(cached.versions)):
            # Expired, or someone else wrote (or deleted) one of the objects.
            self.forget(username)
            return None
        return cached

    def _remember(self, cached: _Cached) -> None:
        if self._ttl <= 0:
            return
        self._cache[cached.ref.username] = cached
        self._cache.move_to_end(cached.ref.username)
        while len(self._cache) > MAX_CACHED_USERS:
            self._cache.popitem(last=False)

    # --- full reconcile (cold path) -------------------------------------------

    def _refuse_beyond_max_users(self, username: str) -> None:
        """No new user's objects once `max_users` users have theirs.

        Every identity the IdP vouches for would otherwise cost three
        cluster-scoped objects, and every ClusterRoleBinding slows down every
        request in the cluster; an IdP with self-service sign-up would let one
        person make that cost as large as they like. Counted from the mirror
        (no API call); while it is down there is no count, and no refusal.
        """
        if self._max_users is None or self._versions is None:
            return
        count = self._versions.count(Kind.CLUSTER_ROLE_BINDING)
        mine = self._versions.of_user(Kind.CLUSTER_ROLE_BINDING,
                                      naming.user_key(username, self._namespace))
        if count is not None and count >= self._max_users and not mine:
            raise Unavailable(Reason.USER_LIMIT_REACHED,
                              f"the concierge manages {count} users, its maxUsers; it takes new "
                              "ones once idle users are cleaned up: try again later",
                              retry_after_seconds=60)

    async def _reconcile(self, identity: wire.Identity, issued_at: float | None,
                         elevation: ElevationInput | None) -> tuple[_Cached, Grant]:
        self._refuse_beyond_max_users(identity.username)
        name = self.object_name(identity.username)
        started = self._monotonic()
        sa = await self._create_or_read(Kind.SERVICE_ACCOUNT, self._service_account(identity),
                                        identity.username, self._namespace)
        uid = naming.metadata_field(sa, "uid")
        if not uid:
            raise ServerError(Reason.KUBERNETES_ERROR, f"ServiceAccount {name} has no uid")

        role, grant = await self._reconcile_role(identity, issued_at, elevation)

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
        return _Cached(UserRef(identity.username, name, uid), _record(role), versions,
                       started), grant

    async def _reconcile_role(self, identity: wire.Identity, issued_at: float | None,
                              elevation: ElevationInput | None) -> tuple[Obj, Grant]:
        """Create the ClusterRole, or bring it in line with this login.

        Every update is conditional on the resourceVersion just read, so a
        concurrent write (another replica narrowing the groups with a newer
        token) is never overwritten unseen: the role is read again and this
        login decided afresh.
        """
        name, username = self.object_name(identity.username), identity.username
        now = self._clock()
        role: Obj | None = None  # None: not there (as far as we know), create it
        for _ in range(ROLE_WRITE_ATTEMPTS):
            try:
                if role is None:
                    grant = decide(identity.groups, issued_at, None, elevation)
                    try:
                        return await self._kube.create(
                            Kind.CLUSTER_ROLE, self._cluster_role(username, grant, now)), grant
                    except Conflict:
                        role = await self._read_ours(Kind.CLUSTER_ROLE, name, username)
                record = _record(role)
                grant = decide(identity.groups, issued_at, record, elevation)
                desired = self._cluster_role(username, grant, now, _version(role))
                # An aggregationRule is refused too: anyone who may label ClusterRoles could
                # widen an aggregated role, and the controller rewrites its rules.
                if (_normalised_rules(role.get("rules")) == _normalised_rules(desired["rules"])
                        and role.get("aggregationRule") is None
                        and not record.last_login_due(now)):
                    return role, grant
                try:
                    return await self._kube.replace(Kind.CLUSTER_ROLE, name, desired), grant
                except Conflict:  # written by someone else since we read it: decide afresh
                    role = await self._read_ours(Kind.CLUSTER_ROLE, name, username)
            except NotFound:  # deleted meanwhile
                role = None
        raise _kept_changing(name, "this login updated it")

    async def withdraw(self, username: str, groups: Iterable[str]) -> bool:
        """Take `groups` out of the user's ClusterRole (an elevation ended); True if it wrote.

        Under the user's lock, conditional on the resourceVersion read (a race is read
        again and decided afresh), and the user's cache entry forgotten, so their next
        login reads the role. Nothing happens if the role is gone, is not ours, or allows
        none of `groups`. The role's recorded times are kept: this is not a login.
        """
        removing = frozenset(groups)
        name = self.object_name(username)
        async with self.exclusive(username):
            self.forget(username)
            for _ in range(ROLE_WRITE_ATTEMPTS):
                try:
                    role = await self._read_ours(Kind.CLUSTER_ROLE, name, username)
                except (NotFound, ServerError):  # gone, or not ours: nothing of ours to narrow
                    return False
                allowed = groups_from_rules(role.get("rules"))
                if not removing.intersection(allowed):
                    return False
                recorded = {key: value for key in (naming.GROUPS_ISSUED_AT_ANNOTATION,
                                                   naming.LAST_LOGIN_ANNOTATION)
                            if (value := naming.annotation(role, key)) is not None}
                body = self._role_object(username, set(allowed) - removing, recorded,
                                         _version(role))
                try:
                    await self._kube.replace(Kind.CLUSTER_ROLE, name, body)
                except NotFound:
                    return False
                except Conflict:  # written since we read it: read again
                    continue
                return True
        raise _kept_changing(name, "an ended elevation was taken out of it")

    async def _create_or_read(self, kind: Kind, desired: Obj, username: str,
                              namespace: str | None = None) -> Obj:
        try:
            return await self._kube.create(kind, desired, namespace)
        except Conflict:
            return await self._read_ours(kind, desired["metadata"]["name"], username, namespace)

    async def _read_ours(self, kind: Kind, name: str, username: str,
                         namespace: str | None = None) -> Obj:
        """Read an object; refuse it unless it is ours and `username`'s (never adopted)."""
        existing = await self._kube.read(kind, name, namespace)
        if not naming.is_owned(existing, self._namespace) or naming.annotation(
                existing, naming.USERNAME_ANNOTATION) != username:
            raise ServerError(Reason.USER_OBJECT_CONFLICT,
                              f"{kind} {name} exists but is not ours (concierge namespace "
                              f"{self._namespace}) for this user; refusing to adopt it")
        return existing

    # --- desired objects -----------------------------------------------------

    def _metadata(self, username: str, namespace: str | None = None) -> Obj:
        meta: dict[str, Any] = {
            "name": self.object_name(username),
            "labels": naming.user_labels(username, self._namespace),
            "annotations": {naming.USERNAME_ANNOTATION: username},
        }
        if namespace is not None:
            meta["namespace"] = namespace
        return meta

    def _service_account(self, identity: wire.Identity) -> Obj:
        return {"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": self._metadata(identity.username, self._namespace),
                # The account only ever holds bound tokens we mint; it must not
                # get one mounted anywhere by accident.
                "automountServiceAccountToken": False}

    def _cluster_role(self, username: str, grant: Grant, now: float,
                      resource_version: str = "") -> Obj:
        """The role for this login: the grant's role groups, "last seen" now, and (when
        `resource_version` is given) a write that fails if anyone wrote since."""
        return self._role_object(username, grant.role_groups,
                                 group_history.role_annotations(grant, now), resource_version)

    def _role_object(self, username: str, groups: Iterable[str], annotations: dict[str, str],
                     resource_version: str = "") -> Obj:
        """The user's ClusterRole allowing `groups`, with `annotations` beside the username's;
        with a `resource_version`, a write that fails if anyone wrote since."""
        metadata = self._metadata(username)
        metadata["annotations"] |= annotations
        if resource_version:
            metadata["resourceVersion"] = resource_version
        allowed = wire.Identity(username, tuple(sorted(groups)))
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRole",
                "metadata": metadata, "rules": impersonation_rules(allowed)}

    def _binding(self, identity: wire.Identity) -> Obj:
        name = self.object_name(identity.username)
        return {"apiVersion": f"{RBAC_GROUP}/v1", "kind": "ClusterRoleBinding",
                "metadata": self._metadata(identity.username),
                "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name,
                              "namespace": self._namespace}]}

    # --- reading back (whoami) --------------------------------------------------

    async def describe(self, service_account: str) -> wire.Identity:
        """The identity a ServiceAccount of ours stands for, as the cluster has it now.

        The ClusterRole is checked to be ours too (and that user's): whoami must
        never report groups from a role someone else made under that name.
        """
        sa = await self._kube.read(Kind.SERVICE_ACCOUNT, service_account, self._namespace)
        username = naming.annotation(sa, naming.USERNAME_ANNOTATION)
        if not naming.is_owned(sa, self._namespace) or username is None or (
                self.object_name(username) != service_account):
            raise NotFound(service_account)
        role = await self._kube.read(Kind.CLUSTER_ROLE, service_account)
        if not naming.is_owned(role, self._namespace) or naming.annotation(
                role, naming.USERNAME_ANNOTATION) != username:
            raise NotFound(service_account)
        return wire.Identity(username, groups_from_rules(role.get("rules")))


def _kept_changing(name: str, while_what: str) -> Unavailable:
    return Unavailable(Reason.USER_OBJECT_CONFLICT,
                       f"ClusterRole {name} kept changing while {while_what}; try again",
                       retry_after_seconds=1)


def _version(obj: Obj) -> str:
    """An object's resourceVersion; "" (never current) if the API left it out."""
    return naming.metadata_field(obj, "resourceVersion") or ""
