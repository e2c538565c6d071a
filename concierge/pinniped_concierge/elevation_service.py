"""The concierge's elevation API: ask for a governed group, approve, deny, revoke, look.

Who the caller is comes only from their reviewed cluster credential (the app
passes the `wire.Identity` the TokenReview and their ClusterRole say); the
requester written into an `ElevationRequest` is that identity, never anything
from the request body. That is the whole point of the feature: nobody can ask
in someone else's name, and nobody can approve their own request.

Every decision about an existing request is made from a fresh read of the
object, not from the mirror: two approvers clicking at once, or an approval
racing the controller's expiry, must not both win. Each write is a PUT
carrying the resourceVersion it was decided from; a `Conflict` means someone
else wrote in between, so the request is read and decided again (at most
`WRITE_ATTEMPTS` times, then 503). Listing and the plugin's state check read
the mirror (`ElevationStore`): they decide nothing.

A request is *visible* to its requester and to the approvers of its group's
current policy. Anyone else is told it does not exist (404), so ids cannot be
probed for who asked for what. A path segment that cannot be an id at all is
never echoed, not in the 404 and not in the audit line (which carries a short
hash of it): it is whatever a client sent, up to the server's line limit.

What one person can make the concierge keep is bounded: at most
`maxOpenPerUser` requests open and at most `maxPerUser` in any phase (ended
ones count until the controller deletes them), so that asking and withdrawing
in a loop cannot fill `maxRequests` for everyone. The controller deletes an
ended request that was never approved (it granted nothing, and the audit log
keeps its story) `UNAPPROVED_RETENTION_SECONDS` after it ended, or after
`retentionSeconds` if that is shorter; an approved one after `retentionSeconds`.
A create refused by `maxPerUser` says so, and its Retry-After is when the
user's next ended request is due to go.

A list answer holds at most `MAX_LISTED` requests, newest first, and at most
`MAX_LIST_BYTES` of JSON (the CLI reads at most 1 MiB: reasons of non-ASCII
characters are sent escaped, six bytes each); how many were left out is in
the audit line (`leftOut`).

The plugin's state check (`state`) costs the TokenReview and nothing more:
the app hands over only the ServiceAccount the token belongs to, which is
named from a hash of the username (`naming.user_object_name`), and the
user's requests are found by that name in the mirror (their user label is the
same hash). Its `active` list is `elevation_store.active_grants`, the very rule
logins use (a group no longer governed is no longer granted), so the plugin
and the login never disagree about what the credential should hold.

`remove_access` is shared with the Lease holder's controller: once an approved
request has ended, the group leaves the user's ClusterRole (unless another
active elevation of theirs grants it) and the sessions minted during the
elevation are ended; it is idempotent, so a repeat costs no harm.
"""

from __future__ import annotations

import builtins
import datetime as dt
import functools
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from pinniped_apis import rfc3339, wire
from pinniped_apis.constants import (
    ELEVATION_ID_PATTERN,
    ELEVATION_ID_PREFIX,
)
from pinniped_apis.elevation import (
    FINAL_PHASES,
    OPEN_PHASES,
    ActiveElevation,
    Approval,
    ApprovalView,
    ElevationCreate,
    ElevationDecision,
    ElevationList,
    ElevationRequestSpec,
    ElevationRequestStatus,
    ElevationState,
    ElevationView,
    Phase,
    Requester,
)
from pinniped_concierge import naming
from pinniped_concierge.audit import AuditEvent, short_digest
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.elevation_store import (
    ElevationStore,
    Policy,
    StoredRequest,
    active_grants,
    read_request,
    request_object,
)
from pinniped_concierge.errors import Reason, Refused, ServerError, Unavailable
from pinniped_concierge.kubeapi import (
    ELEVATION_REQUESTS,
    Conflict,
    KubeAPI,
    NotFound,
    Obj,
    pages,
)
from pinniped_concierge.sessions import Sessions
from pinniped_concierge.user_locks import UserLocks
from pinniped_concierge.userobjects import UserObjects

log = logging.getLogger("concierge.elevation")

#: Conditional writes of one request that may lose a race before the call gives up (503).
WRITE_ATTEMPTS = 3
#: Items in one list answer at most, newest first (an approver of a busy group sees the latest).
MAX_LISTED = 200
#: JSON bytes of the items in one list answer at most (the CLI reads at most 1 MiB).
MAX_LIST_BYTES = 512 * 1024
#: An ended request that was never approved is deleted this long after it ended (or after
#: `retentionSeconds`, if shorter): it granted nothing, and the audit log keeps its story.
UNAPPROVED_RETENTION_SECONDS = 3600
#: Objects per page when listing a user's requests or sessions from the API.
PAGE_SIZE = 250
#: Retry-After for a create refused by a limit: an open request needs time to end.
LIMIT_RETRY_AFTER_SECONDS = 60
#: One user's creates in flight at once on a replica (they take turns; more get 429).
MAX_CREATES_PER_USER = 4

_ID = re.compile(ELEVATION_ID_PATTERN)
#: `naming.user_key`'s form: what follows the prefix in a ServiceAccount name of ours.
_USER_KEY = re.compile("[0-9a-f]{32}")


@dataclass(frozen=True)
class AccessRemoval:
    """What one access removal changed (the controller audits only real changes)."""

    #: The group left the user's ClusterRole (it was still there).
    role_changed: bool
    sessions_ended: int
    #: `status.accessRemovedAt` was written by this call.
    marked: bool

    @property
    def changed(self) -> bool:
        return self.role_changed or self.sessions_ended > 0 or self.marked


#: A decision on a freshly read request: the new status, or None for "nothing to write".
Decide = Callable[[StoredRequest, float], Awaitable[ElevationRequestStatus | None]]


def is_request_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def retention_of(request: StoredRequest, config: ElevationConfig) -> float:
    """How long an ended request is kept after it ended."""
    if request.status.approved_at is None:
        return min(config.retention_seconds, UNAPPROVED_RETENTION_SECONDS)
    return config.retention_seconds


def ended_or_created(request: StoredRequest) -> float:
    """When an ended request ended; its creation for one that says nowhere when (an edited
    object), so that it is still deleted some day."""
    ended = request.ended_at()
    return ended if ended is not None else request.created_at


@functools.lru_cache(maxsize=4096)
def _account_of(username: str, namespace: str) -> str:
    """The user's ServiceAccount name (a hash: worth remembering for the state check)."""
    return naming.user_object_name(username, namespace)


def _time(when: float) -> str:
    return rfc3339.format_time(dt.datetime.fromtimestamp(when, dt.UTC))


def _not_found(request_id: str) -> Refused:
    return Refused(404, Reason.ELEVATION_NOT_FOUND,
                   f"no elevation request {request_id} that you may see: only its "
                   "requester and the approvers of its group can see or decide it; "
                   "check the id with 'pinniped elevate list'")


def _malformed_id() -> Refused:
    return Refused(404, Reason.ELEVATION_NOT_FOUND,
                   "no elevation request has the id you gave: ids are "
                   f"{ELEVATION_ID_PREFIX} and 16 hexadecimal digits; check the id "
                   "with 'pinniped elevate list'")


def _about(seconds: int) -> str:
    """A wait, for a person: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def _conflict_gave_up(request_id: str) -> Unavailable:
    return Unavailable(Reason.USER_OBJECT_CONFLICT,
                       f"elevation request {request_id} kept changing while we decided; "
                       "try again in a moment", 1)


class ElevationService:
    def __init__(self, kube: KubeAPI, namespace: str, store: ElevationStore,
                 user_objects: UserObjects, config: ElevationConfig, *, sessions: Sessions,
                 clock: Callable[[], float] = time.time) -> None:
        self._kube = kube
        self._namespace = namespace
        self._store = store
        self._user_objects = user_objects
        self._sessions = sessions
        self._config = config
        self._clock = clock
        self._create_locks = UserLocks(MAX_CREATES_PER_USER)

    # --- who may do what ---------------------------------------------------------

    def phase(self, request: StoredRequest, now: float) -> Phase:
        """The phase as it stands now: an approved request past its end, or a pending one
        past the pending timeout, has ended even before the controller writes so."""
        if request.overdue(now, self._config.pending_timeout_seconds) is not None:
            return "Expired"
        return request.status.phase

    @staticmethod
    def _approver(policy: Policy | None, caller: wire.Identity) -> bool:
        return (policy is not None and policy.spec is not None
                and policy.spec.approvers.include(caller.username, caller.groups))

    @staticmethod
    def _requester(request: StoredRequest, caller: wire.Identity) -> bool:
        return request.spec.requester.username == caller.username

    def _visible(self, request: StoredRequest, policy: Policy | None,
                 caller: wire.Identity) -> bool:
        return self._requester(request, caller) or self._approver(policy, caller)

    # --- create ------------------------------------------------------------------

    async def create(self, caller: wire.Identity, body: ElevationCreate,
                     event: AuditEvent) -> ElevationView:
        group = body.group
        event.extra["group"] = group
        event.extra["requestReason"] = body.reason  # plain text, bounded (`elevation.Reason`)
        governed = await self._store.governed()
        policy = await self._store.policy(group)
        if group not in governed or policy is None:
            raise Refused(400, Reason.NO_ELEVATION_POLICY,
                          f"no ElevationPolicy governs group {group}; ask your cluster "
                          "administrator")
        if policy.spec is None:
            raise Refused(400, Reason.NO_ELEVATION_POLICY,
                          f"the ElevationPolicy {policy.name} for group {group} is not "
                          "valid, so nobody can be granted it; ask your cluster "
                          "administrator to fix it")
        if not policy.spec.requesters.include(caller.username, caller.groups):
            raise Refused(403, Reason.NOT_A_REQUESTER,
                          f"you may not ask for group {group}: ElevationPolicy "
                          f"{policy.name} does not list you among its requesters; ask "
                          "your cluster administrator")
        maximum = policy.spec.max_duration_seconds
        duration = body.duration_seconds if body.duration_seconds is not None else maximum
        if duration > maximum:
            raise Refused(400, Reason.DURATION_TOO_LONG,
                          f"durationSeconds {duration} is over the maximum of "
                          f"{maximum} s for group {group}; ask for {maximum} s or less")
        async with self._create_locks.hold(caller.username):
            await self._within_limits(caller, group)
            created = await self._create_object(caller, group, body.reason, duration)
        event.extra["id"], event.extra["phase"] = created.name, created.status.phase
        log.info("elevation %s: %s asked for group %s for %d s", created.name,
                 caller.username, group, duration)
        return self.view(created, policy, caller, self._clock())

    async def _within_limits(self, caller: wire.Identity, group: str) -> None:
        """No second open request for one group, at most maxOpenPerUser open ones, at most
        maxPerUser in any phase and at most maxRequests objects; the user's own are listed
        fresh (the mirror may lag behind a create a moment ago), under their lock (so their
        creates take turns here)."""
        now = self._clock()
        kept = await self._list_user_requests(caller.username)
        mine = [r for r in kept if self.phase(r, now) in OPEN_PHASES]
        same = [r.name for r in mine if r.spec.group == group]
        if same:
            raise Refused(409, Reason.ELEVATION_ALREADY_OPEN,
                          f"you already have request {same[0]} open for group {group}; "
                          f"wait for it, or revoke it with 'pinniped elevate revoke "
                          f"{same[0]}'")
        if len(mine) >= self._config.max_open_per_user:
            raise Refused(429, Reason.ELEVATION_LIMIT_REACHED,
                          f"you have {len(mine)} requests open, the most allowed; "
                          "revoke one you no longer need, or wait for one to end",
                          retry_after=LIMIT_RETRY_AFTER_SECONDS)
        if len(kept) >= self._config.max_per_user:
            wait = self._until_one_is_deleted(kept, now)
            raise Refused(429, Reason.ELEVATION_LIMIT_REACHED,
                          f"you have {len(kept)} elevation requests, the most one "
                          "person may have (elevation.maxPerUser), ended ones "
                          "included until they are cleaned up; wait for ended ones "
                          f"to be cleaned up (the next in about {_about(wait)}), or "
                          "ask your cluster administrator", retry_after=wait)
        if len(await self._store.requests()) >= self._config.max_requests:
            raise Refused(429, Reason.ELEVATION_LIMIT_REACHED,
                          "the concierge holds as many elevation requests as it may "
                          f"({self._config.max_requests}); try again later, or ask "
                          "your cluster administrator",
                          retry_after=LIMIT_RETRY_AFTER_SECONDS)

    def _until_one_is_deleted(self, kept: builtins.list[StoredRequest], now: float) -> int:
        """Seconds until the controller deletes the next of these that has ended (the
        Retry-After of a create refused by maxPerUser)."""
        due = [ended_or_created(r) + retention_of(r, self._config) for r in kept
               if r.status.phase in FINAL_PHASES]
        if not due:
            return LIMIT_RETRY_AFTER_SECONDS
        return max(1, math.ceil(min(due) - now)) + self._config.sync_interval_seconds

    async def _list_user_requests(self, username: str) -> builtins.list[StoredRequest]:
        return [r for r in await self._list_account_requests(self._user_account(username))
                if r.spec.requester.username == username]

    def _user_account(self, username: str) -> str:
        return _account_of(username, self._namespace)

    async def _list_account_requests(self, account: str) -> builtins.list[StoredRequest]:
        """The requests of the user whose ServiceAccount is `account`, listed from the API
        by their user label."""
        key = account.removeprefix(naming.USER_OBJECT_PREFIX)
        if _USER_KEY.fullmatch(key) is None:  # not a name we give: nobody's requests
            return []
        selector = f"{naming.owned_selector(self._namespace)},{naming.USER_LABEL}={key}"
        found: list[StoredRequest] = []
        async for items in pages(lambda token: self._kube.list_custom(
                ELEVATION_REQUESTS, self._namespace, PAGE_SIZE, token, label_selector=selector),
                # Bounded: never more pages than maxRequests objects can fill.
                max_pages=self._config.max_requests // PAGE_SIZE + 2):
            for item in items:
                parsed = self._parse(item)
                if parsed is not None and self._user_account(
                        parsed.spec.requester.username) == account:
                    found.append(parsed)
        return found

    async def _create_object(self, caller: wire.Identity, group: str, reason: str,
                             duration: int) -> StoredRequest:
        try:
            spec = ElevationRequestSpec(
                group=group, reason=reason, duration_seconds=duration,
                requester=Requester(username=caller.username, groups=caller.groups))
        except ValidationError as exc:  # the identity's names outgrow an object's bounds
            raise Refused(400, Reason.MALFORMED_REQUEST,
                          "your identity cannot be recorded in an elevation request "
                          f"({exc.error_count()} problem(s)); ask your cluster "
                          "administrator") from None
        for _ in range(2):  # a name clash of 64 random bits: one more try is plenty
            name = ELEVATION_ID_PREFIX + secrets.token_hex(8)
            try:
                created = await self._kube.create_namespaced_custom(
                    ELEVATION_REQUESTS, self._namespace,
                    request_object(name, self._namespace, spec, ElevationRequestStatus()))
            except Conflict:
                continue
            return self._written(created, name)
        raise ServerError(Reason.KUBERNETES_ERROR, "could not pick an unused ElevationRequest "
                          "name")

    # --- list and state (from the mirror) ---------------------------------------

    async def list(self, caller: wire.Identity, event: AuditEvent) -> ElevationList:
        """The caller's own requests and those they may decide, newest first: at most
        `MAX_LISTED` of them and `MAX_LIST_BYTES` of JSON."""
        now = self._clock()
        policies: dict[str, Policy | None] = {}
        items: list[ElevationView] = []
        size, visible, full = 0, 0, False
        requests = sorted(await self._store.requests(), key=lambda r: (r.created_at, r.name),
                          reverse=True)
        for request in requests:
            group = request.spec.group
            if group not in policies:
                policies[group] = await self._store.policy(group)
            if not self._visible(request, policies[group], caller):
                continue
            visible += 1
            if full:
                continue
            view = self.view(request, policies[group], caller, now)
            weight = len(json.dumps(view.to_wire(), ensure_ascii=True,
                                    separators=(",", ":"))) + 1  # and its comma
            if len(items) >= MAX_LISTED or size + weight > MAX_LIST_BYTES:
                full = True  # newest first without gaps: nothing older after this
                continue
            items.append(view)
            size += weight
        event.extra["listed"] = str(len(items))
        if visible > len(items):
            event.extra["leftOut"] = str(visible - len(items))
        return ElevationList(items=items, omitted=visible - len(items))

    async def state(self, account: str, event: AuditEvent) -> ElevationState:
        """The pending ids and active elevations of the user whose ServiceAccount is
        `account`: what the plugin compares with the credential it holds. From the mirror,
        so no API call while the watches are up (otherwise the user's requests and the
        policies are listed); `active` by the rule logins use (`elevation_store.active_grants`). The
        audit line names the ServiceAccount, and the user when they have a request (nothing
        else here says who it is: reading that costs two calls, and this answer needs none)."""
        now = self._clock()
        mine = await self._requests_of_account(account)
        event.extra["serviceAccount"] = account
        if not mine:
            event.extra["pending"] = event.extra["active"] = "0"
            return ElevationState()
        username = mine[0].spec.requester.username
        event.username = username
        pending = sorted(r.name for r in mine if self.phase(r, now) == "Pending")
        active = active_grants((r for r in mine if r.spec.requester.username == username),
                               await self._store.governed(), now)
        event.extra["pending"] = str(len(pending))
        event.extra["active"] = str(len(active))
        return ElevationState(pending=pending, active=[
            ActiveElevation(id=g.id, group=g.group,
                            expiresAt=dt.datetime.fromtimestamp(g.expires_at, dt.UTC))
            for g in active])

    async def _requests_of_account(self, account: str) -> builtins.list[StoredRequest]:
        """The requests of the user whose ServiceAccount is `account`: from the mirror while
        its watch is up, else listed by the user's label (one call, not every request)."""
        if not self._store.requests_target.synced():
            return await self._list_account_requests(account)
        return [r for r in await self._store.requests()
                if self._user_account(r.spec.requester.username) == account]

    def view(self, request: StoredRequest, policy: Policy | None, caller: wire.Identity,
             now: float) -> ElevationView:
        phase = self.phase(request, now)
        status = request.status
        approver = self._approver(policy, caller) and not self._requester(request, caller)
        approved_by_caller = any(a.user == caller.username for a in status.approvals)
        required = policy.spec.approvals_required if policy and policy.spec else 1
        return ElevationView(
            id=request.name, group=request.spec.group,
            requester=request.spec.requester.username, reason=request.spec.reason,
            phase=phase, durationSeconds=request.spec.duration_seconds,
            createdAt=dt.datetime.fromtimestamp(request.created_at, dt.UTC),
            approvals=[ApprovalView(user=a.user, at=at) for a in status.approvals
                       if (at := rfc3339.parse_time(a.at)) is not None],
            approvalsRequired=required,
            expiresAt=rfc3339.parse_time(status.expires_at), endedBy=status.ended_by,
            endReason=status.end_reason,
            mayApprove=approver and phase == "Pending" and not approved_by_caller,
            mayRevoke=phase in OPEN_PHASES and (
                self._requester(request, caller) or self._approver(policy, caller)))

    # --- approve, deny, revoke ------------------------------------------------

    async def decide(self, caller: wire.Identity, request_id: str, action: str,
                     body: ElevationDecision | None, event: AuditEvent) -> ElevationView:
        if not is_request_id(request_id):
            event.extra["id"] = "malformed:" + short_digest(request_id)
            raise _malformed_id()
        event.extra["id"] = request_id
        reason = body.reason if body is not None else None
        deciders: dict[str, Callable[[StoredRequest, Policy | None, float],
                                     ElevationRequestStatus]] = {
            "approve": lambda r, p, now: self._approve(r, p, caller, now),
            "deny": lambda r, p, now: self._deny(r, p, caller, reason, now),
            "revoke": lambda r, p, now: self._revoke(r, caller, reason, now),
        }
        if action not in deciders:
            raise Refused(404, Reason.MALFORMED_REQUEST,
                          f"no action {action!r}; use approve, deny or revoke")
        decider = deciders[action]
        policy_of: dict[str, Policy | None] = {}

        async def decide(request: StoredRequest, now: float) -> ElevationRequestStatus:
            policy = await self._store.policy(request.spec.group)
            policy_of["policy"] = policy
            event.extra["group"] = request.spec.group
            if not self._visible(request, policy, caller):
                raise _not_found(request_id)
            return decider(request, policy, now)

        written = await self._transition(request_id, decide)
        event.extra["phase"] = written.status.phase
        if written.status.end_reason is not None and action != "approve":
            event.extra["endReason"] = written.status.end_reason
        log.info("elevation %s: %s by %s, now %s", written.name, action, caller.username,
                 written.status.phase)
        if action == "revoke" and written.status.approved_at is not None:
            try:
                removal = await self.remove_access(written)
            except (Unavailable, ServerError) as exc:  # the controller repeats it within 2 s
                log.warning("elevation %s: access removal after revoke failed, the Lease "
                            "holder will retry: %s", written.name, exc)
                event.extra["accessRemoval"] = "deferred"
            else:
                event.extra["sessionsEnded"] = str(removal.sessions_ended)
        return self.view(written, policy_of.get("policy"), caller, self._clock())

    def _approve(self, request: StoredRequest, policy: Policy | None, caller: wire.Identity,
                 now: float) -> ElevationRequestStatus:
        rid = request.name
        if self._requester(request, caller):
            raise Refused(403, Reason.SELF_APPROVAL,
                          "you cannot approve your own request; ask one of the "
                          "approvers")
        if not self._approver(policy, caller) or policy is None or policy.spec is None:
            raise Refused(403, Reason.NOT_AN_APPROVER,
                          f"you are not an approver of group {request.spec.group}; ask "
                          "one of the approvers its ElevationPolicy names")
        status = request.status
        if any(a.user == caller.username for a in status.approvals):
            raise Refused(409, Reason.ALREADY_APPROVED,
                          f"you have already approved {rid}; it needs "
                          f"{policy.spec.approvals_required} distinct approvers, so "
                          "ask another approver")
        self._must_be_pending(request, now, "approve")
        approvals = (*status.approvals, Approval(user=caller.username, at=_time(now)))
        if len({a.user for a in approvals}) < policy.spec.approvals_required:
            return status.model_copy(update={"approvals": approvals})
        return status.model_copy(update={
            "approvals": approvals, "phase": "Approved", "approved_at": _time(now),
            "expires_at": _time(now + request.spec.duration_seconds)})

    def _deny(self, request: StoredRequest, policy: Policy | None, caller: wire.Identity,
              reason: str | None, now: float) -> ElevationRequestStatus:
        if self._requester(request, caller):
            raise Refused(403, Reason.SELF_APPROVAL,
                          "you cannot deny your own request; to withdraw it, run "
                          f"'pinniped elevate revoke {request.name}'")
        if not self._approver(policy, caller):
            raise Refused(403, Reason.NOT_AN_APPROVER,
                          f"you are not an approver of group {request.spec.group}; "
                          "only its approvers may deny requests for it")
        self._must_be_pending(request, now, "deny")
        return self._ended(request, "Denied", caller.username,
                           reason or f"denied by {caller.username}", now)

    def _revoke(self, request: StoredRequest, caller: wire.Identity, reason: str | None,
                now: float) -> ElevationRequestStatus:
        phase = self.phase(request, now)
        if phase not in OPEN_PHASES:
            raise Refused(409, Reason.ELEVATION_ENDED,
                          f"request {request.name} has already ended ({phase}); "
                          "nothing to revoke")
        return self._ended(request, "Revoked", caller.username,
                           reason or f"revoked by {caller.username}", now)

    def _must_be_pending(self, request: StoredRequest, now: float, action: str) -> None:
        phase = self.phase(request, now)
        if phase != "Pending":
            raise Refused(409, Reason.ELEVATION_ENDED,
                          f"request {request.name} is {phase}, not Pending; there is "
                          f"nothing to {action} (see 'pinniped elevate list')")

    @staticmethod
    def _ended(request: StoredRequest, phase: Phase, by: str | None, reason: str,
               now: float) -> ElevationRequestStatus:
        update: dict[str, Any] = {"phase": phase, "ended_at": _time(now),
                                  "end_reason": reason}
        if by is not None:
            update["ended_by"] = by
        return request.status.model_copy(update=update)

    # --- what the controller asks for ------------------------------------------

    async def expire(self, request_id: str) -> StoredRequest | None:
        """Mark a request Expired if, freshly read, it has timed out pending or its duration
        has ended; None when there was nothing to do (it changed, or it is gone)."""
        async def decide(request: StoredRequest, now: float) -> ElevationRequestStatus | None:
            reason = request.overdue(now, self._config.pending_timeout_seconds)
            return None if reason is None else self._ended(request, "Expired", None, reason, now)

        try:
            return await self._transition(request_id, decide, only_if_changed=True)
        except Refused:  # deleted meanwhile
            return None

    async def delete_ended(self, request: StoredRequest) -> bool:
        """Delete an ended request (retention); False if it was gone or replaced already."""
        try:
            await self._kube.delete_namespaced_custom(ELEVATION_REQUESTS, self._namespace,
                                                      request.name, uid=request.uid)
        except (NotFound, Conflict):
            return False
        return True

    async def _transition(self, request_id: str, decide: Decide, *,
                          only_if_changed: bool = False) -> StoredRequest:
        """Read the request, decide, write conditionally; on a lost race, all over again."""
        for _ in range(WRITE_ATTEMPTS):
            request = await self._read(request_id)
            now = self._clock()
            status = await decide(request, now)
            if status is None or status == request.status:
                if only_if_changed:
                    raise Refused(409, Reason.ELEVATION_ENDED, "nothing to do")
                return request
            try:
                written = await self._kube.replace_namespaced_custom(
                    ELEVATION_REQUESTS, self._namespace, request.name,
                    request.to_object(status))
            except Conflict:
                continue
            except NotFound:
                raise _not_found(request_id) from None
            return self._written(written, request_id)
        raise _conflict_gave_up(request_id)

    async def _read(self, request_id: str) -> StoredRequest:
        parsed = await self._store.read_fresh(request_id)
        if parsed is None:
            raise _not_found(request_id)
        return parsed

    def _parse(self, obj: Obj) -> StoredRequest | None:
        """A request object of ours, or None (not ours, or not readable: never acted on)."""
        return read_request(obj, self._namespace)

    def _written(self, obj: Obj, name: str) -> StoredRequest:
        """The request as the API answered our write of it."""
        parsed = self._parse(obj)
        if parsed is None:
            raise ServerError(Reason.KUBERNETES_ERROR,
                              f"ElevationRequest {name} came back unreadable")
        return parsed

    # --- access removal (semantics 6) -----------------------------------------

    async def remove_access(self, request: StoredRequest) -> AccessRemoval:
        """Take the group back and end the sessions minted during the elevation."""
        username, group = request.spec.requester.username, request.spec.group
        # Under the user's lock: a login of theirs on this replica finishes (its role write and
        # its session) before we look, so we end what it made; another replica's racing login
        # is caught by the controller's re-check in the next 30 s.
        async with self._user_objects.exclusive(username):
            now = self._clock()
            still = {g.group for g in await self._store.active_for(username, now)
                     if g.id != request.name}
            role_changed = False
            if group not in still:
                role_changed = await self._user_objects.withdraw(username, [group])
            ended = await self._sessions.end_elevated(username, request.name)
        marked = False
        if request.status.access_removed_at is None:
            marked = await self._mark_removed(request.name)
        if role_changed or ended:
            log.info("elevation %s: removed group %s from %s (role changed: %s, %d session(s) "
                     "ended)", request.name, group, username, role_changed, ended)
        return AccessRemoval(role_changed, ended, marked)

    async def _mark_removed(self, request_id: str) -> bool:
        async def decide(request: StoredRequest, now: float) -> ElevationRequestStatus | None:
            if request.status.access_removed_at is not None:
                return None
            return request.status.model_copy(update={"access_removed_at": _time(now)})

        try:
            await self._transition(request_id, decide, only_if_changed=True)
        except Refused:  # gone, or marked by someone else meanwhile
            return False
        return True
