"""A live view of the concierge's own objects, kept current by Kubernetes watches.

Why: the per-user cache (`userobjects`) lets a returning user skip reading
their ClusterRole. That is only safe if we learn when anyone else (another
replica, another concierge in the same namespace, an administrator) changes
or deletes one of those objects. So for each kind we manage, a background
thread lists our objects (label selector: managed by a concierge, for this
namespace; session Secrets by their own label) and then watches them, keeping
each object's latest `resourceVersion`. A cached user is trusted only while
each of their objects still has exactly the resourceVersion we last wrote or
read; any other write changes it.

While a kind's watch is not established (starting, or reconnecting after an
error) that kind is unknown: the cache is bypassed and every login reconciles
against the API (slower, never stale). After a normal end of a watch request
(the server-side timeout) it resumes from the last resourceVersion, so no
change is missed; after any error, 410 Gone included, it lists again. A read
timeout a little longer than the server-side one notices a silently dead
connection. What remains is the watch's own delivery delay (milliseconds): a
change made by someone else is trusted away at most that long.

The threads use their own API client (their own connection pool, user agent
`pinniped-concierge-watch`): long-running watches must not hold connections
the login path needs, and the apiserver's audit log can tell them apart.

The list-then-watch loop itself (`ListWatch`, fed into any `WatchTarget`) also
serves the JWTAuthenticator objects (`cluster_authenticators`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from pinniped_concierge import backoff, naming
from pinniped_concierge.kubeapi import Kind, Obj

log = logging.getLogger("concierge.watch")

T = TypeVar("T")

WATCH_USER_AGENT = "pinniped-concierge-watch"
#: Server-side timeout of one watch request; the watch then resumes where it was.
WATCH_SECONDS = 60
#: A watch request silent for longer than this is taken for a dead connection.
READ_TIMEOUT_SECONDS = WATCH_SECONDS + 15
LIST_PAGE_SIZE = 500
RETRY_DELAYS_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Secret deletions the watch reported, remembered (`ObjectVersions.secret_deleted`).
MAX_REMEMBERED_DELETIONS = 10_000


@dataclass(frozen=True)
class Seen:
    """What the watch last reported about one object."""

    resource_version: str
    uid: str | None
    user: str | None  # the `naming.USER_LABEL` value
    #: When it was created (a session: started), as text that sorts in time order
    #: (`naming.session_started`).
    created: str
    #: A ClusterRole's username annotation (whose identity it allows); None for other kinds.
    username: str | None = None
    #: A ClusterRole's groups (`naming.groups_from_rules`); empty for other kinds.
    groups: frozenset[str] = frozenset()

    @classmethod
    def of(cls, obj: Obj) -> Seen | None:
        version = naming.metadata_field(obj, "resourceVersion")
        if version is None:
            return None
        seen = cls(version, naming.metadata_field(obj, "uid"),
                   naming.label(obj, naming.USER_LABEL), naming.session_started(obj))
        if "rules" not in obj:  # only ClusterRoles need the rest (`holding`)
            return seen
        return replace(seen, username=naming.annotation(obj, naming.USERNAME_ANNOTATION),
                       groups=frozenset(naming.groups_from_rules(obj.get("rules"))))


class ObjectVersions:
    """Thread-safe mirror: kind -> name -> `Seen`, plus which kinds are currently watched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Kind, dict[str, Seen]] = {}
        self._by_user: dict[Kind, dict[str, set[str]]] = {}
        self._synced: set[Kind] = set()
        #: The latest Secret deletions the watch reported, name -> uid, oldest first.
        self._deleted_secrets: OrderedDict[str, str | None] = OrderedDict()

    # --- fed by the watch ----------------------------------------------------------

    def reset(self, kind: Kind, objects: Iterable[Obj]) -> None:
        """The complete current set (from a list); from now on the kind is known."""
        with self._lock:
            self._objects[kind], self._by_user[kind] = {}, {}
            for obj in objects:
                self._put(kind, obj)
            self._synced.add(kind)

    def apply(self, kind: Kind, event_type: str, obj: Obj) -> None:
        with self._lock:
            if kind not in self._synced:
                return
            if event_type == "DELETED":
                name = naming.metadata_field(obj, "name")
                self._drop(kind, name)
                if name is not None and kind == Kind.SECRET:
                    self._deleted_secrets.pop(name, None)  # to the end: the latest
                    self._deleted_secrets[name] = naming.metadata_field(obj, "uid")
                    if len(self._deleted_secrets) > MAX_REMEMBERED_DELETIONS:
                        self._deleted_secrets.popitem(last=False)
            else:
                self._put(kind, obj)

    def lost(self, kind: Kind) -> None:
        """The watch broke: forget everything about `kind` until the next `reset`."""
        with self._lock:
            self._synced.discard(kind)
            self._objects.pop(kind, None)
            self._by_user.pop(kind, None)
            if kind == Kind.SECRET:
                self._deleted_secrets.clear()

    def _put(self, kind: Kind, obj: Obj) -> None:
        name, seen = naming.metadata_field(obj, "name"), Seen.of(obj)
        if name is None or seen is None:
            return
        self._drop(kind, name)
        self._objects[kind][name] = seen
        if seen.user is not None:
            self._by_user[kind].setdefault(seen.user, set()).add(name)

    def _drop(self, kind: Kind, name: str | None) -> None:
        seen = self._objects[kind].pop(name, None) if name is not None else None
        if seen is not None and seen.user is not None:
            names = self._by_user[kind].get(seen.user, set())
            names.discard(name or "")
            if not names:
                self._by_user[kind].pop(seen.user, None)

    # --- read by the login path ---------------------------------------------------

    def synced(self, kind: Kind) -> bool:
        with self._lock:
            return kind in self._synced

    def matches(self, expected: Iterable[tuple[Kind, str, str]]) -> bool:
        """True if every (kind, name, resourceVersion) is known to be current right now."""
        with self._lock:
            for kind, name, version in expected:
                seen = self._objects.get(kind, {}).get(name) if kind in self._synced else None
                if seen is None or seen.resource_version != version:
                    return False
            return True

    def count(self, kind: Kind) -> int | None:
        """How many objects of `kind` there are; None while `kind` is not watched (metrics)."""
        with self._lock:
            return len(self._objects[kind]) if kind in self._synced else None

    def holding(self, groups: frozenset[str]) -> list[tuple[str, frozenset[str]]] | None:
        """(username, which of `groups`) for each of our ClusterRoles allowing any of
        `groups`; None while ClusterRoles are not watched (the governed-group sweep)."""
        with self._lock:
            if Kind.CLUSTER_ROLE not in self._synced:
                return None
            return [(seen.username, held) for seen in self._objects[Kind.CLUSTER_ROLE].values()
                    if seen.username is not None and (held := seen.groups & groups)]

    def secret_deleted(self, name: str, uid: str | None) -> bool:
        """Whether the watch reported the Secret `name` with `uid` deleted (among the latest
        `MAX_REMEMBERED_DELETIONS`): the session cap's ledger learns so that a Secret it
        created has come and gone (`session_ledger`). By uid, since a name may be taken
        again; an unknown uid (None) is never reported deleted."""
        with self._lock:
            return (uid is not None and Kind.SECRET in self._synced
                    and self._deleted_secrets.get(name) == uid)

    def of_user(self, kind: Kind, user: str) -> dict[str, Seen] | None:
        """The objects of `kind` labelled for `user`; None while `kind` is not watched."""
        with self._lock:
            if kind not in self._synced:
                return None
            objects = self._objects[kind]
            return {name: objects[name] for name in self._by_user[kind].get(user, ())}


class WatchTarget(Protocol):
    """What a list-then-watch loop feeds, from its own thread."""

    def reset(self, objects: list[Obj]) -> None:
        """The complete current set (from a list)."""

    def apply(self, event_type: str, obj: Obj) -> None:
        """One ADDED, MODIFIED or DELETED event."""

    def lost(self) -> None:
        """The watch broke; a `reset` follows once it is back."""


class Mirror(Generic[T]):
    """One watched kind's objects by name, parsed, fed from the watch's thread (a
    `WatchTarget`).

    It knows nothing while the watch is down (`snapshot`, `group` and `count` answer
    None): its reader must then ask the API, never trust a copy that may be missing a
    change. An object `parse` refuses (None) is not held; one that changes into such an
    object is dropped. `group_by` indexes the objects by a key, e.g. their user, for a
    reader on the login path; `max_objects` caps what a flood of objects can make us
    hold (a new object beyond it is not kept; changes to kept ones still are).
    """

    def __init__(self, parse: Callable[[Obj], T | None], *,
                 group_by: Callable[[T], str] | None = None,
                 max_objects: int | None = None) -> None:
        self._parse = parse
        self._group_by = group_by
        self._max = max_objects
        self._lock = threading.Lock()
        self._objects: dict[str, T] = {}
        self._groups: dict[str, dict[str, T]] = {}
        self._synced = False

    def reset(self, objects: list[Obj]) -> None:
        with self._lock:
            self._objects, self._groups = {}, {}
            for obj in objects:
                self._put(obj)
            self._synced = True

    def apply(self, event_type: str, obj: Obj) -> None:
        name = naming.metadata_field(obj, "name")
        with self._lock:
            if not self._synced or name is None:
                return
            if event_type == "DELETED":
                self._remove(name)
            else:
                self._put(obj)

    def lost(self) -> None:
        with self._lock:
            self._synced = False
            self._objects, self._groups = {}, {}

    def _put(self, obj: Obj) -> None:
        name = naming.metadata_field(obj, "name")
        if name is None:
            return
        kept = name in self._objects
        self._remove(name)
        parsed = self._parse(obj)
        if parsed is None or not (kept or self._max is None or len(self._objects) < self._max):
            return
        self._objects[name] = parsed
        if self._group_by is not None:
            self._groups.setdefault(self._group_by(parsed), {})[name] = parsed

    def _remove(self, name: str) -> None:
        parsed = self._objects.pop(name, None)
        if parsed is None or self._group_by is None:
            return
        key = self._group_by(parsed)
        group = self._groups.get(key, {})
        group.pop(name, None)
        if not group:
            self._groups.pop(key, None)

    def synced(self) -> bool:
        with self._lock:
            return self._synced

    def snapshot(self) -> list[T] | None:
        """Everything, or None while the watch is down (never listed, or lost since)."""
        with self._lock:
            return list(self._objects.values()) if self._synced else None

    def group(self, key: str) -> list[T] | None:
        """The objects `group_by` puts under `key`, or None while the watch is down."""
        with self._lock:
            return list(self._groups.get(key, {}).values()) if self._synced else None

    def count(self) -> int | None:
        with self._lock:
            return len(self._objects) if self._synced else None


@dataclass(frozen=True)
class WatchSource:
    """One list-then-watch loop: what to list, with which fixed arguments, and whom to feed."""

    what: str  # for logs and thread names: "ClusterRoles", "JWTAuthenticators"
    list_fn: Any  # an official client's list function (it also watches)
    arguments: Mapping[str, Any]
    label_selector: str
    target: WatchTarget
    #: What is degraded while the watch is down, for the warning.
    meanwhile: str
    page_size: int = LIST_PAGE_SIZE


class ListWatch:
    """One daemon thread per source, each listing then watching with the official client."""

    def __init__(self, sources: Iterable[WatchSource],
                 connect_timeout_seconds: float = 5.0) -> None:
        self.sources = tuple(sources)
        self._connect_timeout = connect_timeout_seconds
        self._stopping = threading.Event()

    def start(self) -> None:
        for source in self.sources:
            threading.Thread(target=self._run, args=(source,), daemon=True,
                             name=f"watch-{source.what}").start()

    def stop(self) -> None:
        """Stop at the next event or read timeout; the threads are daemons, nothing waits."""
        self._stopping.set()
        for source in self.sources:
            source.target.lost()

    async def run(self) -> None:
        """Background task for the app's lifespan: watch until cancelled."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            self.stop()

    def _run(self, source: WatchSource) -> None:
        failures = 0

        def listed() -> None:
            # A successful list ends the run of failures: the next break (say the
            # apiserver restarting again) retries after the shortest delay, not the
            # longest, so changes are seen again within seconds.
            nonlocal failures
            failures = 0

        while not self._stopping.is_set():
            try:
                self._list_and_watch(source, listed)
                failures = 0
            except Exception as exc:  # any failure: unknown until listed again
                source.target.lost()
                if self._stopping.is_set():
                    return
                delay = backoff.delay(failures, RETRY_DELAYS_SECONDS)
                failures += 1
                log.warning("watch of %s lost (%s); %s; retrying in %.1f s", source.what,
                            _describe(exc), source.meanwhile, delay)
                self._stopping.wait(delay)

    def _list_and_watch(self, source: WatchSource, listed: Callable[[], None]) -> None:
        from kubernetes import watch as kube_watch

        watch: Any = kube_watch  # untyped
        version = self._list(source)
        listed()
        log.info("watching %s (label selector %r)", source.what, source.label_selector)
        while not self._stopping.is_set():
            stream = watch.Watch()
            for event in stream.stream(
                    source.list_fn, **source.arguments, label_selector=source.label_selector,
                    resource_version=version, allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_SECONDS,
                    _request_timeout=(self._connect_timeout, READ_TIMEOUT_SECONDS)):
                if self._stopping.is_set():
                    stream.stop()
                    return
                version = handle_event(source.target, event) or version

    def _list(self, source: WatchSource) -> str:
        """List every object (paged, one consistent snapshot); returns its resourceVersion."""
        items: list[Obj] = []
        version: str | None = None
        continue_token: str | None = None
        while True:
            extra = {"_continue": continue_token} if continue_token else {}
            response = source.list_fn(
                **source.arguments, label_selector=source.label_selector,
                limit=source.page_size, _preload_content=False,
                _request_timeout=(self._connect_timeout, READ_TIMEOUT_SECONDS), **extra)
            page = json.loads(response.data)
            metadata = page.get("metadata") or {}
            version = version or metadata.get("resourceVersion")
            items += [item for item in page.get("items") or [] if isinstance(item, dict)]
            continue_token = metadata.get("continue") or None
            if not continue_token:
                break
        if not isinstance(version, str) or not version:
            raise WatchBroken(f"list of {source.what} has no resourceVersion")
        source.target.reset(items)
        return version


def handle_event(target: WatchTarget, event: object) -> str | None:
    """Apply one watch event; returns its resourceVersion to resume from.

    The client raises ApiException for ERROR events (410 Gone included);
    `raw_object` is the object as the apiserver sent it, a plain dict.
    """
    if not isinstance(event, dict) or not isinstance(event.get("raw_object"), dict):
        raise WatchBroken("an event that is not an object")
    event_type, obj = event.get("type"), event["raw_object"]
    if event_type in ("ADDED", "MODIFIED", "DELETED"):
        target.apply(str(event_type), obj)
    elif event_type != "BOOKMARK":
        raise WatchBroken(f"unexpected event type {str(event_type)[:20]!r}")
    return naming.metadata_field(obj, "resourceVersion")


@dataclass(frozen=True)
class _KindTarget:
    """One kind of `ObjectVersions`, as a `WatchTarget`."""

    versions: ObjectVersions
    kind: Kind

    def reset(self, objects: list[Obj]) -> None:
        self.versions.reset(self.kind, objects)

    def apply(self, event_type: str, obj: Obj) -> None:
        self.versions.apply(self.kind, event_type, obj)

    def lost(self) -> None:
        self.versions.lost(self.kind)


def new_watch_client(api_client: Any) -> Any:
    """`api_client` marked as the watch's (user agent `WATCH_USER_AGENT`)."""
    api_client.user_agent = WATCH_USER_AGENT
    return api_client


class ObjectWatcher(ListWatch):
    """The per-user cache's watches: our ServiceAccounts, ClusterRoles, ClusterRoleBindings
    and session Secrets, into `versions`."""

    def __init__(self, api_client: Any, namespace: str, versions: ObjectVersions,
                 connect_timeout_seconds: float = 5.0) -> None:
        from kubernetes import client

        new_watch_client(api_client)
        core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
        owned = naming.owned_selector(namespace)
        where = {"namespace": namespace}
        sources = {
            Kind.SERVICE_ACCOUNT: (core.list_namespaced_service_account, where, owned),
            Kind.CLUSTER_ROLE: (rbac.list_cluster_role, {}, owned),
            Kind.CLUSTER_ROLE_BINDING: (rbac.list_cluster_role_binding, {}, owned),
            Kind.SECRET: (core.list_namespaced_secret, where, naming.session_selector()),
        }
        self.kinds = {kind: WatchSource(
            f"{kind}s", list_fn, arguments, selector, _KindTarget(versions, kind),
            meanwhile="the user cache is bypassed until it is back")
            for kind, (list_fn, arguments, selector) in sources.items()}
        super().__init__(self.kinds.values(), connect_timeout_seconds)


class WatchBroken(Exception):
    pass


def _describe(exc: Exception) -> str:
    """Enough to diagnose, without dumping response bodies or headers into the log."""
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    if status is not None:
        return f"{type(exc).__name__}: HTTP {status} {str(reason)[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
