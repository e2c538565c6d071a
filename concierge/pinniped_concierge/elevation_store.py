"""What the concierge knows of ElevationPolicies and ElevationRequests, read from memory.

Every login asks two questions of this store: which groups are governed (a
governed group is never granted from an ID token) and which elevations the
user holds right now. A login must not pay an API call for either while the
watches are up, so both kinds are mirrored by list-then-watch loops
(`object_watch.ListWatch` into an `object_watch.Mirror`, as the revocation markers are): the
ElevationPolicies cluster-wide, the ElevationRequests in the concierge's
namespace by its own label selector (`naming.owned_selector`).

It fails closed where a mistake would grant a group:
- while the policies' mirror is not synced (its watch has not listed yet, or
  is reconnecting now), the policies are listed from the API instead (every
  page, at most `elevation.maxPolicies` + 1 objects), and that answer serves
  every question for at most `LISTED_POLICIES_SECONDS`, so a storm of logins
  costs about one list a second (one list in flight at a time). The last
  known set is never used instead: a policy created while a replica's watch
  was down would not be enforced there, and that replica would grant its
  group from ID tokens. If the list fails, `governed` raises
  `Unavailable(ELEVATION_POLICIES_UNKNOWN)` (a 503 with Retry-After) and
  /readyz says not ready; so it does while more than `elevation.maxPolicies`
  exist (the set it knows might not be all of them);
- a policy whose spec does not validate still governs its `spec.group`, if
  that is a string; two policies for one group are read as one invalid policy
  (nobody may ask for the group until an administrator resolves it);
- a request that does not parse, or whose labels disagree with its
  requester, grants nothing;
- while the requests' watch is down, the requests are listed from the API on
  each call (an ended elevation must not stay granted from a stale mirror);
- a mirror, even a synced one, may be a moment behind the API: `read_fresh`
  reads one request from the API, for the login that must confirm its
  elevations after minting their session (`login`).

Without a watch (a swapped `kube` in tests), everything is listed on each
call. The requests mirror holds at most `elevation.maxRequests` objects: the
concierge never makes more, and one beyond it grants nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pinniped_apis import rfc3339
from pinniped_apis.elevation import (
    FINAL_PHASES,
    ElevationPolicySpec,
    ElevationRequestSpec,
    ElevationRequestStatus,
)
from pinniped_concierge import naming
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import (
    ELEVATION_POLICIES,
    ELEVATION_REQUESTS,
    ClusterResource,
    Conflict,
    KubeAPI,
    NotFound,
    Obj,
    pages,
)
from pinniped_concierge.object_watch import Mirror, WatchSource, new_watch_client

log = logging.getLogger("concierge.elevation")

PAGE_SIZE = 250
#: How long a client waits before trying again while the policies are unknown.
RETRY_AFTER_SECONDS = 5
#: While the policies' watch is not synced, one list of them answers for this long.
LISTED_POLICIES_SECONDS = 1.0


@dataclass(frozen=True)
class Policy:
    """One ElevationPolicy: the group it governs, and its spec (None: it does not validate,
    or another policy names the same group)."""

    name: str
    group: str
    spec: ElevationPolicySpec | None


@dataclass(frozen=True)
class StoredRequest:
    """One ElevationRequest as the concierge wrote it."""

    name: str
    uid: str
    resource_version: str
    namespace: str
    spec: ElevationRequestSpec
    status: ElevationRequestStatus
    created_at: float

    @property
    def id(self) -> str:
        return self.name

    def expires_at(self) -> float | None:
        return _timestamp(self.status.expires_at)

    def ended_at(self) -> float | None:
        """When it ended: `status.endedAt`; for an ended request without one, its expiry."""
        ended = _timestamp(self.status.ended_at)
        if ended is None and self.status.phase in FINAL_PHASES:
            return self.expires_at()
        return ended

    def active(self, now: float) -> bool:
        """Approved, and its time has not run out."""
        expires = self.expires_at()
        return self.status.phase == "Approved" and expires is not None and expires > now

    def open(self, now: float) -> bool:
        """Pending, or active."""
        return self.status.phase == "Pending" or self.active(now)

    def overdue(self, now: float, pending_timeout_seconds: int) -> str | None:
        """Why it has ended by `now` although its phase does not say so yet (the controller
        writes Expired a moment later), or None: the one expiry rule, for the API's answers
        and for the controller."""
        if self.status.phase == "Approved" and not self.active(now):
            return "its duration ended"
        if (self.status.phase == "Pending"
                and self.created_at + pending_timeout_seconds <= now):
            return f"not approved within {pending_timeout_seconds} s"
        return None

    def to_object(self, status: ElevationRequestStatus) -> Obj:
        """The whole object for a PUT of a new `status`: its uid and resourceVersion make the
        write fail (Conflict) if anyone wrote since this was read."""
        body = request_object(self.name, self.namespace, self.spec, status)
        body["metadata"] |= {"uid": self.uid, "resourceVersion": self.resource_version}
        return body


def request_object(name: str, namespace: str, spec: ElevationRequestSpec,
                   status: ElevationRequestStatus) -> Obj:
    """An ElevationRequest as we write it, labelled with its requester (`read_request` refuses
    one whose labels disagree)."""
    return {
        "apiVersion": ELEVATION_REQUESTS.api_version, "kind": ELEVATION_REQUESTS.kind,
        "metadata": {"name": name, "namespace": namespace,
                     "labels": naming.user_labels(spec.requester.username, namespace)},
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "status": status.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


@dataclass(frozen=True)
class Grant:
    """One active elevation: the group it grants, until when."""

    id: str
    group: str
    expires_at: float


@dataclass(frozen=True)
class ElevationInput:
    """What a login must know about elevations: the governed groups, the user's active
    elevations (of governed groups only), and whether they have any request open."""

    governed: frozenset[str]
    grants: tuple[Grant, ...] = ()
    check: bool = False


def active_grants(requests: Iterable[StoredRequest], governed: frozenset[str], now: float
                  ) -> tuple[Grant, ...]:
    """The elevations among `requests` active at `now`, of groups still `governed` (sorted
    by group, then id): the one rule of what grants a group."""
    grants = [Grant(r.name, r.spec.group, r.expires_at() or now) for r in requests
              if r.active(now) and r.spec.group in governed]
    return tuple(sorted(grants, key=lambda g: (g.group, g.id)))


def read_policy(obj: Obj) -> Policy | None:
    """The policy in `obj`; None only if it names no group at all (then it governs nothing
    we could name)."""
    name = naming.metadata_field(obj, "name")
    raw = obj.get("spec")
    group = raw.get("group") if isinstance(raw, dict) else None
    if not name or not isinstance(group, str) or not group:
        return None
    try:
        spec: ElevationPolicySpec | None = ElevationPolicySpec.model_validate(
            raw, by_alias=True, by_name=False)
    except ValidationError:
        spec = None
    return Policy(name, group, spec)


def read_request(obj: Obj, namespace: str) -> StoredRequest | None:
    """The request in `obj` if it is ours in every respect (managed-by, our namespace, the
    user label of its requester), else None: such an object grants nothing."""
    name = naming.metadata_field(obj, "name")
    if not name or not naming.is_owned(obj, namespace) or (
            naming.metadata_field(obj, "namespace") not in (None, namespace)):
        return None
    try:
        spec = ElevationRequestSpec.model_validate(obj.get("spec"), by_alias=True,
                                                   by_name=False)
        status = ElevationRequestStatus.model_validate(obj.get("status") or {}, by_alias=True,
                                                       by_name=False)
    except ValidationError:
        return None
    if naming.label(obj, naming.USER_LABEL) != naming.user_key(spec.requester.username,
                                                               namespace):
        return None
    created = _timestamp(naming.metadata_field(obj, "creationTimestamp"))
    return StoredRequest(name, naming.metadata_field(obj, "uid") or "",
                         naming.metadata_field(obj, "resourceVersion") or "", namespace,
                         spec, status, created if created is not None else 0.0)


class ElevationStore:
    """Policies and requests, from the mirrors (or, without them, from the API)."""

    def __init__(self, kube: KubeAPI, namespace: str, config: ElevationConfig, *,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._kube = kube
        self._namespace = namespace
        self._max_policies = config.max_policies
        self._max_requests = config.max_requests
        self._monotonic = monotonic
        #: More than maxPolicies objects are kept (the excess is what makes logins refused).
        self.policies_target: Mirror[Policy] = Mirror(read_policy)
        self.requests_target: Mirror[StoredRequest] = Mirror(
            lambda obj: read_request(obj, namespace), max_objects=config.max_requests)
        #: The last list of the policies (while their mirror is not synced): when it started,
        #: and the policies, or why they are unknown.
        self._listed: tuple[float, list[Policy] | str] | None = None
        #: The list in flight, and the event loop it runs in: concurrent logins share it.
        self._listing: tuple[asyncio.AbstractEventLoop, asyncio.Task[None]] | None = None
        #: True once `watch_sources` made the watches. Without them (a swapped kube) there is
        #: no storm to absorb: the policies are listed afresh for every question.
        self._watched = False

    # --- policies ---------------------------------------------------------------------

    async def _policies(self) -> list[Policy]:
        known = self.policies_target.snapshot()
        if known is None:
            known = await self._listed_policies()
        if len(known) > self._max_policies:
            raise self._unknown(self._too_many())
        return known

    async def _listed_policies(self) -> list[Policy]:
        """The policies from the API: the last list if it started less than
        `LISTED_POLICIES_SECONDS` ago (watched only), else a new one (shared by concurrent
        callers)."""
        listed = self._listed
        fresh_for = LISTED_POLICIES_SECONDS if self._watched else 0.0
        if listed is None or self._monotonic() - listed[0] >= fresh_for:
            loop = asyncio.get_running_loop()
            if self._listing is None or self._listing[0] is not loop:
                self._listing = (loop, loop.create_task(self._list_policies()))
            # Shielded: one caller giving up (a client gone) must not cancel the others' list.
            await asyncio.shield(self._listing[1])
            listed = self._listed
            assert listed is not None  # set by `_list_policies`, which never raises
        if isinstance(listed[1], str):
            raise self._unknown(listed[1])
        return listed[1]

    async def _list_policies(self) -> None:
        started = self._monotonic()
        answer: list[Policy] | str
        try:
            objects = await self._list(ELEVATION_POLICIES, None, "", self._max_policies + 1)
        except (NotFound, Conflict, Unavailable, ServerError) as exc:
            answer = f"their watch is not up, and listing them failed: {exc}"
        else:
            answer = (self._too_many() if len(objects) > self._max_policies else
                      [p for p in map(read_policy, objects) if p is not None])
        finally:
            self._listing = None
        self._listed = (started, answer)

    def _too_many(self) -> str:
        return f"there are more than elevation.maxPolicies ({self._max_policies}) of them"

    def _unknown(self, why: str) -> Unavailable:
        return Unavailable(Reason.ELEVATION_POLICIES_UNKNOWN,
                           f"the concierge does not know every ElevationPolicy ({why}), so it "
                           "cannot tell which groups to withhold; try again shortly",
                           retry_after_seconds=RETRY_AFTER_SECONDS)

    async def governed(self) -> frozenset[str]:
        """Every group some policy names, valid or not (raises `Unavailable` while unknown)."""
        return frozenset(p.group for p in await self._policies())

    async def policy(self, group: str) -> Policy | None:
        """The policy governing `group`; one with `spec` None if it does not validate or if
        several name the group."""
        found = sorted((p for p in await self._policies() if p.group == group),
                       key=lambda p: p.name)
        if not found:
            return None
        if len(found) > 1:
            return Policy(found[0].name, group, None)
        return found[0]

    # --- requests ---------------------------------------------------------------------

    async def requests(self) -> list[StoredRequest]:
        """Every request, newest first (at most maxRequests)."""
        known = self.requests_target.snapshot()
        if known is None:
            known = await self._list_requests(naming.owned_selector(self._namespace))
        return _newest_first(known)

    async def requests_of(self, username: str) -> list[StoredRequest]:
        """`username`'s own requests, newest first."""
        known = self.requests_target.snapshot()
        if known is None:
            labels = naming.user_labels(username, self._namespace)
            known = await self._list_requests(",".join(f"{k}={v}" for k, v in labels.items()))
        return _newest_first(r for r in known if r.spec.requester.username == username)

    async def active_for(self, username: str, now: float) -> tuple[Grant, ...]:
        """`username`'s active elevations for groups that are still governed (sorted by
        group, then id)."""
        governed = await self.governed()  # first: unknown policies refuse before a list
        return active_grants(await self.requests_of(username), governed, now)

    async def for_login(self, username: str, now: float) -> ElevationInput:
        """A login's question, from one read of each mirror: the governed groups, the
        user's active elevations of them, and whether anything of theirs is open (raises
        `Unavailable` while the policies are unknown)."""
        governed = await self.governed()  # first, as in `active_for`
        mine = await self.requests_of(username)
        return ElevationInput(governed, active_grants(mine, governed, now),
                              any(r.open(now) for r in mine))

    async def read_fresh(self, request_id: str) -> StoredRequest | None:
        """One request read from the API now, not from the mirror (one GET); None if it is
        gone or not ours. Raises `Unavailable`/`ServerError` when the API cannot answer."""
        try:
            obj = await self._kube.read_namespaced_custom(ELEVATION_REQUESTS, self._namespace,
                                                          request_id)
        except NotFound:
            return None
        return read_request(obj, self._namespace)

    async def _list_requests(self, selector: str) -> list[StoredRequest]:
        objects = await self._list(ELEVATION_REQUESTS, self._namespace, selector,
                                   self._max_requests)
        return [r for r in (read_request(o, self._namespace) for o in objects)
                if r is not None]

    async def _list(self, resource: ClusterResource, namespace: str | None, selector: str,
                    at_most: int) -> list[Obj]:
        """Paged, and no more than `at_most` objects."""
        found: list[Obj] = []
        async for page in pages(lambda token: self._kube.list_custom(
                resource, namespace, min(PAGE_SIZE, at_most - len(found) + 1), token,
                selector)):
            found.extend(page)  # the next page asks only for what is still wanted
            if len(found) >= at_most:
                break
        return found[:at_most]

    # --- state -------------------------------------------------------------------------

    def synced(self) -> bool:
        """Both watches are up right now (answers are current, and cost no call)."""
        return self.policies_target.synced() and self.requests_target.synced()

    def watch_sources(self, api_client: Any) -> list[WatchSource]:
        """The list-then-watch loops that feed the two mirrors."""
        from kubernetes import client

        custom = client.CustomObjectsApi(new_watch_client(api_client))
        self._watched = True
        policies = {"group": ELEVATION_POLICIES.group, "version": ELEVATION_POLICIES.version,
                    "plural": ELEVATION_POLICIES.plural}
        requests = {"group": ELEVATION_REQUESTS.group, "version": ELEVATION_REQUESTS.version,
                    "namespace": self._namespace, "plural": ELEVATION_REQUESTS.plural}
        return [
            WatchSource("ElevationPolicies", custom.list_cluster_custom_object, policies, "",
                        self.policies_target,
                        meanwhile="logins list the ElevationPolicies (at most once a "
                                  "second) until it is back",
                        page_size=PAGE_SIZE),
            WatchSource("ElevationRequests", custom.list_namespaced_custom_object, requests,
                        naming.owned_selector(self._namespace), self.requests_target,
                        meanwhile="each login lists its user's ElevationRequests until it is "
                                  "back", page_size=PAGE_SIZE),
        ]

    async def readiness_problem(self) -> str | None:
        """Why logins would be refused now (the policies unknown), or None."""
        try:
            await self._policies()
        except Unavailable as exc:
            return (f"{exc.message} (is deploy/crds.yaml applied, and does the concierge's "
                    "ClusterRole allow list and watch on elevationpolicies? The watch's "
                    "warnings say which)")
        return None


def _newest_first(requests: Iterable[StoredRequest]) -> list[StoredRequest]:
    return sorted(requests, key=lambda r: (-r.created_at, r.name))


def _timestamp(value: str | None) -> float | None:
    parsed = rfc3339.parse_time(value)
    if parsed is None:
        return None
    stamp = parsed.timestamp()
    return stamp if math.isfinite(stamp) else None
