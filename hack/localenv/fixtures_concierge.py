"""pytest fixtures for the concierge: a fake Kubernetes for unit tests, real parts for the rest.

Unit tests get `fake_kube`, a `pinniped_concierge.kubeapi.KubeAPI` that keeps objects
in dicts and behaves like the apiserver where the concierge depends on it
(409 on create of an existing name, 404 on missing, uid preconditions, bound
tokens that stop reviewing once their Secret is gone, a new resourceVersion
on every write). `FakeKube.watch` feeds a `pinniped_concierge.object_watch.ObjectVersions`
the way the real watch does, but instantly (or, with `hold_watch`, only when
the test calls `deliver_watch_events`: a lagging watch). With `interleave`,
every call yields to the event loop first, as a real request would, so
concurrent logins really do interleave between one call and the next.

Integration tests get `concierge` (one real `pinniped-concierge` process per
session, on the real apiserver and IdP, running with deploy/'s RBAC) and
`minting_issuer` (an https issuer whose keys the tests hold, trusted by that
concierge as the `minted` authenticator, for tokens the real IdP will not mint).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import copy
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from localenv import pki
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, Unavailable
from pinniped_concierge.kubeapi import (
    ClusterResource,
    Conflict,
    Kind,
    NotFound,
    Obj,
    count_call,
)
from pinniped_concierge.object_watch import ObjectVersions, WatchTarget

# --- an in-memory Kubernetes ------------------------------------------------------


def _unsigned_jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'fake'})}.{part(claims)}.c2lnbmF0dXJl"


class ManualClock:
    """A clock (seconds) that moves only when a test moves it: expiry without sleeping."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


class FakeKube:
    """Just enough apiserver for the concierge's logic; every call is recorded in `calls`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.objects: dict[tuple[Kind, str | None, str], Obj] = {}
        self.calls: list[str] = []
        self.unavailable = False
        self.tokens: dict[str, dict[str, Any]] = {}
        self.token_requests: list[Obj] = []
        self._ids = itertools.count(1)
        self._clock = clock
        self._watches: list[tuple[ObjectVersions, str]] = []
        #: Cluster-scoped custom objects by (plural, name), namespaced ones by (plural,
        #: namespace, name), and who watches which plural (namespace None: cluster-scoped),
        #: with which label selector.
        self.custom: dict[tuple[str, str], Obj] = {}
        self.namespaced_custom: dict[tuple[str, str, str], Obj] = {}
        self._custom_watches: list[tuple[str, str | None, str, WatchTarget]] = []
        #: Leases by (namespace, name).
        self.leases: dict[tuple[str, str], Obj] = {}
        #: Yield to the event loop at every call (see the module docstring).
        self.interleave = False
        #: While True, watch events wait in `_held_events` for `deliver_watch_events`.
        self.hold_watch = False
        self._held_events: list[tuple[ObjectVersions, Kind, str, Obj]] = []

    def watch(self, versions: ObjectVersions, namespace: str) -> ObjectVersions:
        """Keep `versions` current as `ObjectWatcher` would for `namespace`, with no delay."""
        self._watches.append((versions, namespace))
        for kind in Kind:
            versions.reset(kind, [copy.deepcopy(obj) for (k, ns, _), obj in self.objects.items()
                                  if k == kind and _watched(kind, ns, obj, namespace)])
        return versions

    def _notify(self, kind: Kind, namespace: str | None, old: Obj | None,
                new: Obj | None) -> None:
        for versions, watched_ns in self._watches:
            was = old is not None and _watched(kind, namespace, old, watched_ns)
            now = new is not None and _watched(kind, namespace, new, watched_ns)
            if now:
                self._send(versions, kind, "MODIFIED" if was else "ADDED", new or {})
            elif was:
                self._send(versions, kind, "DELETED", old or {})

    def _send(self, versions: ObjectVersions, kind: Kind, event_type: str, obj: Obj) -> None:
        if self.hold_watch:
            self._held_events.append((versions, kind, event_type, copy.deepcopy(obj)))
        else:
            versions.apply(kind, event_type, copy.deepcopy(obj))

    def deliver_watch_events(self) -> int:
        """Deliver the events held back while `hold_watch` (the watch catching up)."""
        held, self._held_events = self._held_events, []
        for versions, kind, event_type, obj in held:
            versions.apply(kind, event_type, obj)
        return len(held)

    # helpers for tests
    def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj | None:
        return self.objects.get((kind, namespace, name))

    def names(self, kind: Kind) -> list[str]:
        return sorted(name for (k, _, name) in self.objects if k == kind)

    def _call(self, what: str) -> None:
        count_call()
        self.calls.append(what)
        if self.unavailable:
            raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "the fake Kubernetes API is down")

    async def _enter(self, what: str) -> None:
        """`_call`, after letting other tasks run when `interleave` (a request's round trip)."""
        if self.interleave:
            await asyncio.sleep(0)
        self._call(what)

    # KubeAPI
    async def create(self, kind: Kind, body: Obj, namespace: str | None = None) -> Obj:
        await self._enter(f"create {kind}")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        key = (kind, namespace, meta["name"])
        if key in self.objects:
            raise Conflict(f"{kind} {meta['name']} exists")
        meta["uid"] = f"uid-{next(self._ids)}"
        meta["resourceVersion"] = str(next(self._ids))
        meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                  time.gmtime(self._clock()))
        if namespace is not None:
            meta["namespace"] = namespace
        self.objects[key] = obj
        self._notify(kind, namespace, None, obj)
        return copy.deepcopy(obj)

    async def read(self, kind: Kind, name: str, namespace: str | None = None) -> Obj:
        await self._enter(f"read {kind}")
        try:
            return copy.deepcopy(self.objects[(kind, namespace, name)])
        except KeyError:
            raise NotFound(name) from None

    async def replace(self, kind: Kind, name: str, body: Obj,
                      namespace: str | None = None) -> Obj:
        await self._enter(f"replace {kind}")
        key = (kind, namespace, name)
        if key not in self.objects:
            raise NotFound(name)
        obj = copy.deepcopy(body)
        old = self.objects[key]
        old_meta = old["metadata"]
        expected = (body.get("metadata") or {}).get("resourceVersion")
        if expected and expected != old_meta["resourceVersion"]:
            raise Conflict("resourceVersion precondition failed")  # like a PUT with one
        obj["metadata"] = {**obj.get("metadata", {}), "uid": old_meta["uid"],
                           "creationTimestamp": old_meta.get("creationTimestamp"),
                           "resourceVersion": str(next(self._ids))}
        self.objects[key] = obj
        self._notify(kind, namespace, old, obj)
        return copy.deepcopy(obj)

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     uid: str | None = None) -> None:
        await self._enter(f"delete {kind}")
        key = (kind, namespace, name)
        if key not in self.objects:
            raise NotFound(name)
        if uid is not None and self.objects[key]["metadata"]["uid"] != uid:
            raise Conflict("uid precondition failed")
        self._notify(kind, namespace, self.objects.pop(key), None)

    async def list(self, kind: Kind, namespace: str, label_selector: str, limit: int,
                   continue_token: str | None = None) -> tuple[list[Obj], str | None]:
        await self._enter(f"list {kind}")
        return _page([obj for (k, ns, _), obj in sorted(self.objects.items())
                      if k == kind and ns == namespace and _selected(obj, label_selector)],
                     limit, continue_token)

    async def create_token(self, namespace: str, service_account: str, body: Obj) -> Obj:
        await self._enter("create TokenRequest")
        self.token_requests.append(copy.deepcopy(body))
        sa = self.objects.get((Kind.SERVICE_ACCOUNT, namespace, service_account))
        ref = body["spec"]["boundObjectRef"]
        secret = self.objects.get((Kind.SECRET, namespace, ref["name"]))
        if sa is None or secret is None or secret["metadata"]["uid"] != ref["uid"]:
            raise NotFound(service_account)
        exp = int(self._clock()) + int(body["spec"]["expirationSeconds"])
        token = _unsigned_jwt({
            "sub": f"system:serviceaccount:{namespace}:{service_account}", "exp": exp,
            "kubernetes.io": {"namespace": namespace,
                              "secret": {"name": ref["name"], "uid": ref["uid"]},
                              "serviceaccount": {"name": service_account,
                                                 "uid": sa["metadata"]["uid"]}},
            "jti": str(next(self._ids)),
        })
        self.tokens[token] = {"namespace": namespace, "sa": service_account,
                              "secret": ref["name"], "secret_uid": ref["uid"], "exp": exp}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
        return {**copy.deepcopy(body), "status": {"token": token, "expirationTimestamp": stamp}}

    async def review_token(self, token: str) -> Obj:
        await self._enter("create TokenReview")
        info = self.tokens.get(token)
        if info is None or info["exp"] <= self._clock():
            return {"authenticated": False}
        secret = self.objects.get((Kind.SECRET, info["namespace"], info["secret"]))
        sa = self.objects.get((Kind.SERVICE_ACCOUNT, info["namespace"], info["sa"]))
        if secret is None or secret["metadata"]["uid"] != info["secret_uid"] or sa is None:
            return {"authenticated": False}
        return {"authenticated": True, "user": {
            "username": f"system:serviceaccount:{info['namespace']}:{info['sa']}",
            "groups": ["system:serviceaccounts", "system:authenticated"]}}

    async def ping(self, namespace: str) -> None:
        self._call("ping")

    # custom objects: what the concierge calls
    async def read_custom(self, resource: ClusterResource, name: str) -> Obj:
        self._call(f"read {resource.kind}")
        try:
            return copy.deepcopy(self.custom[(resource.plural, name)])
        except KeyError:
            raise NotFound(name) from None

    async def create_custom(self, resource: ClusterResource, body: Obj) -> Obj:
        self._call(f"create {resource.kind}")
        name = body["metadata"]["name"]
        if (resource.plural, name) in self.custom:
            raise Conflict(f"{resource.kind} {name} exists")
        return copy.deepcopy(self._store(resource, copy.deepcopy(body), None))

    async def replace_custom_status(self, resource: ClusterResource, name: str,
                                    body: Obj) -> Obj:
        """Like the status subresource: only `status` changes, and a stale write is refused."""
        self._call(f"update {resource.kind} status")
        old = self.custom.get((resource.plural, name))
        if old is None:
            raise NotFound(name)
        if body.get("metadata", {}).get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise Conflict("resourceVersion precondition failed")
        new = copy.deepcopy(old)
        new["status"] = copy.deepcopy(body.get("status"))
        return copy.deepcopy(self._store(resource, new, old))

    async def list_custom(self, resource: ClusterResource, namespace: str | None, limit: int,
                          continue_token: str | None = None, label_selector: str = ""
                          ) -> tuple[builtins.list[Obj], str | None]:
        await self._enter(f"list {resource.kind}")
        if namespace is None:
            found = [o for (plural, _), o in sorted(self.custom.items())
                     if plural == resource.plural]
        else:
            found = [o for (plural, ns, _), o in sorted(self.namespaced_custom.items())
                     if plural == resource.plural and ns == namespace]
        return _page([o for o in found if _selected(o, label_selector)], limit, continue_token)

    async def create_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                       body: Obj) -> Obj:
        await self._enter(f"create {resource.kind}")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        key = (resource.plural, namespace, meta["name"])
        if key in self.namespaced_custom:
            raise Conflict(f"{resource.kind} {meta['name']} exists")
        meta |= {"namespace": namespace, "uid": f"uid-{next(self._ids)}",
                 "resourceVersion": str(next(self._ids)), "generation": 1,
                 "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                    time.gmtime(self._clock()))}
        return copy.deepcopy(self._store_namespaced(resource, obj, None))

    async def read_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                     name: str) -> Obj:
        await self._enter(f"read {resource.kind}")
        try:
            return copy.deepcopy(self.namespaced_custom[(resource.plural, namespace, name)])
        except KeyError:
            raise NotFound(name) from None

    async def replace_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                        name: str, body: Obj) -> Obj:
        """Like a PUT: a stale resourceVersion, or a uid that is not the object's, is a 409."""
        await self._enter(f"replace {resource.kind}")
        old = self.namespaced_custom.get((resource.plural, namespace, name))
        if old is None:
            raise NotFound(name)
        old_meta, meta = old["metadata"], body.get("metadata") or {}
        if meta.get("resourceVersion") and meta["resourceVersion"] != old_meta["resourceVersion"]:
            raise Conflict("resourceVersion precondition failed")
        if meta.get("uid") and meta["uid"] != old_meta["uid"]:
            raise Conflict("uid precondition failed")
        obj = copy.deepcopy(body)
        generation = int(old_meta.get("generation", 1)) + (obj.get("spec") != old.get("spec"))
        obj["metadata"] = {**obj.get("metadata", {}), "name": name, "namespace": namespace,
                           "uid": old_meta["uid"], "generation": generation,
                           "creationTimestamp": old_meta.get("creationTimestamp"),
                           "resourceVersion": str(next(self._ids))}
        return copy.deepcopy(self._store_namespaced(resource, obj, old))

    async def delete_namespaced_custom(self, resource: ClusterResource, namespace: str,
                                       name: str, uid: str | None = None) -> None:
        await self._enter(f"delete {resource.kind}")
        key = (resource.plural, namespace, name)
        old = self.namespaced_custom.get(key)
        if old is None:
            raise NotFound(name)
        if uid is not None and old["metadata"]["uid"] != uid:
            raise Conflict("uid precondition failed")
        del self.namespaced_custom[key]
        self._notify_custom(resource.plural, namespace, old, None)

    # Leases: like the apiserver, a write based on an older resourceVersion is a 409
    async def read_lease(self, namespace: str, name: str) -> Obj:
        self._call("read Lease")
        try:
            return copy.deepcopy(self.leases[(namespace, name)])
        except KeyError:
            raise NotFound(name) from None

    async def create_lease(self, namespace: str, body: Obj) -> Obj:
        self._call("create Lease")
        name = body["metadata"]["name"]
        if (namespace, name) in self.leases:
            raise Conflict(f"Lease {name} exists")
        lease = copy.deepcopy(body)
        lease["metadata"] |= {"namespace": namespace, "uid": f"uid-{next(self._ids)}",
                              "resourceVersion": str(next(self._ids))}
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)

    async def replace_lease(self, namespace: str, name: str, body: Obj) -> Obj:
        self._call("update Lease")
        old = self.leases.get((namespace, name))
        if old is None:
            raise NotFound(name)
        if body.get("metadata", {}).get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise Conflict("resourceVersion precondition failed")
        lease = copy.deepcopy(body)
        lease["metadata"]["resourceVersion"] = str(next(self._ids))
        self.leases[(namespace, name)] = lease
        return copy.deepcopy(lease)

    # custom objects: what an administrator does (kubectl apply / delete), for tests
    def apply_custom(self, resource: ClusterResource, name: str, spec: Any,
                     labels: dict[str, str] | None = None) -> Obj:
        """Create the object, or change its spec (and generation) and labels."""
        old = self.custom.get((resource.plural, name))
        obj: Obj = copy.deepcopy(old) if old else {
            "apiVersion": resource.api_version, "kind": resource.kind, "metadata": {"name": name}}
        if old is None or old.get("spec") != spec:
            obj["metadata"]["generation"] = int(obj["metadata"].get("generation", 0)) + 1
        obj["spec"] = copy.deepcopy(spec)
        if labels is not None:
            obj["metadata"]["labels"] = dict(labels)
        return copy.deepcopy(self._store(resource, obj, old))

    def delete_custom(self, resource: ClusterResource, name: str) -> None:
        self._notify_custom(resource.plural, None, self.custom.pop((resource.plural, name)),
                            None)

    def watch_custom(self, resource: ClusterResource, target: WatchTarget,
                     namespace: str | None = None, label_selector: str = "") -> None:
        """Feed `target` as the concierge's watch would: a list now, then every change of the
        objects `label_selector` picks (`namespace` None: cluster-scoped objects)."""
        self._custom_watches.append((resource.plural, namespace, label_selector, target))
        found = ([o for (plural, _), o in sorted(self.custom.items())
                  if plural == resource.plural] if namespace is None else
                 [o for (plural, ns, _), o in sorted(self.namespaced_custom.items())
                  if plural == resource.plural and ns == namespace])
        target.reset([copy.deepcopy(o) for o in found if _selected(o, label_selector)])

    def stop_custom_watch(self, target: WatchTarget) -> None:
        """The watch feeding `target` breaks (`lost`), and sends nothing more."""
        self._custom_watches = [w for w in self._custom_watches if w[3] is not target]
        target.lost()

    def _notify_custom(self, plural: str, namespace: str | None, old: Obj | None,
                       new: Obj | None) -> None:
        for watched, watched_ns, selector, target in self._custom_watches:
            if watched != plural or watched_ns != namespace:
                continue
            was = old is not None and _selected(old, selector)
            now = new is not None and _selected(new, selector)
            if now:
                target.apply("MODIFIED" if was else "ADDED", copy.deepcopy(new or {}))
            elif was:
                target.apply("DELETED", copy.deepcopy(old or {}))

    def _store_namespaced(self, resource: ClusterResource, obj: Obj, old: Obj | None) -> Obj:
        meta = obj["metadata"]
        self.namespaced_custom[(resource.plural, meta["namespace"], meta["name"])] = obj
        self._notify_custom(resource.plural, meta["namespace"], old, obj)
        return obj

    def _store(self, resource: ClusterResource, obj: Obj, old: Obj | None) -> Obj:
        meta = obj["metadata"]
        if old is None:
            meta["uid"] = f"uid-{next(self._ids)}"
            meta.setdefault("generation", 1)
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                      time.gmtime(self._clock()))
        meta["resourceVersion"] = str(next(self._ids))
        self.custom[(resource.plural, meta["name"])] = obj
        self._notify_custom(resource.plural, None, old, obj)
        return obj


def _selected(obj: Obj, label_selector: str) -> bool:
    """Whether an equality-based label selector ("k=v,k2=v2") picks `obj`."""
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (
        part.split("=", 1) for part in label_selector.split(",") if part))


def _page(matching: list[Obj], limit: int,
          continue_token: str | None) -> tuple[list[Obj], str | None]:
    """One page, continuing after the last name returned (as the apiserver does, not at an
    offset)."""
    after = [o for o in matching if continue_token is None
             or o["metadata"]["name"] > continue_token]
    page = [copy.deepcopy(o) for o in after[:limit]]
    return page, page[-1]["metadata"]["name"] if len(after) > limit else None


def _watched(kind: Kind, namespace: str | None, obj: Obj, watched_ns: str) -> bool:
    """Whether `ObjectWatcher` for `watched_ns` would see `obj` (its label selectors)."""
    if kind in (Kind.SERVICE_ACCOUNT, Kind.SECRET) and namespace != watched_ns:
        return False
    selector = (naming.session_selector() if kind == Kind.SECRET
                else naming.owned_selector(watched_ns))
    return _selected(obj, selector)


@pytest.fixture
def fake_kube() -> FakeKube:
    return FakeKube()


# --- the real concierge ---------------------------------------------------------


@pytest.fixture(scope="session")
def minting_issuer(local_workdir: Path, local_ca: pki.CA) -> Iterator[MintingIssuer]:
    issuer = MintingIssuer.start(local_workdir / "minting-issuer", local_ca)
    try:
        yield issuer
    finally:
        issuer.stop()


@pytest.fixture(scope="session")
def concierge(local_workdir: Path, local_ca: pki.CA, cluster: LocalCluster, idp: LocalIdP,
              minting_issuer: MintingIssuer) -> Iterator[LocalConcierge]:
    """The shared concierge: authenticator `corp` (the real IdP) and `minted` (tests' keys)."""
    running = LocalConcierge.start(local_workdir / "concierge", local_ca, cluster, idp,
                                   extra_issuers=[minting_issuer])
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def concierge_factory(tmp_path: Path, local_ca: pki.CA,
                      cluster: LocalCluster) -> Iterator[Callable[..., LocalConcierge]]:
    """Start private concierges (own namespace, own config) for tests that need them."""
    started: list[LocalConcierge] = []

    def start(idp: LocalIdP, **overrides: Any) -> LocalConcierge:
        running = LocalConcierge.start(tmp_path / f"concierge-{len(started)}", local_ca,
                                       cluster, idp, **overrides)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()
