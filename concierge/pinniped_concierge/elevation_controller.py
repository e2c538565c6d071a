"""The Lease holder's side of elevations: end them on time, take the access back, tidy up.

Every `elevation.syncIntervalSeconds` (2 s by default) the replica holding the
Lease goes through the requests in the mirror and:

- expires a request still Pending after `pendingTimeoutSeconds`, and an
  Approved one whose `expiresAt` has passed;
- for an approved request that has ended (expired, revoked), removes the
  group from the user's ClusterRole and ends the sessions minted during it
  (`ElevationService.remove_access`), and does that again on every pass
  for the first `RECHECK_SECONDS` after it ended, even once `accessRemovedAt`
  is set: a login on another replica that read the grant just before the end
  may have written the group back, or minted a session, a moment later;
- deletes ended requests (the audit log keeps their story) `retentionSeconds`
  after they ended, but never one whose access removal has not been done; one
  that was never approved granted nothing, so it goes after
  `min(retentionSeconds, UNAPPROVED_RETENTION_SECONDS)` (an hour): a requester
  asking and withdrawing in a loop frees their `maxPerUser` room that soon.

Why this bounds the time an ended elevation keeps working: the role write and
the session deletions happen within one interval of the end; the apiserver
caches a token's authentication for about 10 s after that.

Each pass makes at most `MAX_CHANGES_PER_PASS` writes, in this order: access
removals not done yet (the most overdue first), then expiries (each approved
one's removal right after it), then the re-checks, then deletions. Only a call
that wrote is charged: a re-check that finds nothing to take back costs a
ClusterRole read and a Secret list, not a write, and must not push a newly
ended elevation's removal to a later pass. Those reads are bounded too, by
`MAX_ATTEMPTS_PER_PASS`. So a backlog after an outage is worked off over a few
passes instead of in one burst of API calls. Each change gets one concierge
audit line; a pass that changes nothing writes none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pinniped_apis.elevation import FINAL_PHASES
from pinniped_concierge.audit import AuditEvent, AuditLog
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.elevation_service import (
    AccessRemoval,
    ElevationService,
    ended_or_created,
    retention_of,
)
from pinniped_concierge.elevation_store import ElevationStore, StoredRequest
from pinniped_concierge.errors import Reason, ServerError, Unavailable

log = logging.getLogger("concierge.elevation")

#: After an approved request ends, its access removal is repeated for this long.
RECHECK_SECONDS = 30.0
#: Writes (expiries, removals, deletions) one pass makes at most; the rest wait a pass.
MAX_CHANGES_PER_PASS = 50
#: Calls that may write (each a few API calls) one pass makes at most, writing or not.
MAX_ATTEMPTS_PER_PASS = 4 * MAX_CHANGES_PER_PASS


class _Budget:
    """What one pass may still do: writes, and attempts (reads that found nothing to do)."""

    def __init__(self) -> None:
        self.writes = MAX_CHANGES_PER_PASS
        self.attempts = MAX_ATTEMPTS_PER_PASS

    def left(self) -> bool:
        return self.writes > 0 and self.attempts > 0

    def spend(self, wrote: bool) -> None:
        self.attempts -= 1
        if wrote:
            self.writes -= 1


class ElevationController:
    def __init__(self, service: ElevationService, store: ElevationStore, audit: AuditLog,
                 config: ElevationConfig, clock: Callable[[], float] = time.time) -> None:
        self._service = service
        self._store = store
        self._audit = audit
        self._config = config
        self._clock = clock

    async def run(self) -> None:
        """`sync` every interval until cancelled; a failed pass is logged, never raised."""
        interval = self._config.sync_interval_seconds
        log.info("elevation expiry and access removal: every %d s while this replica holds "
                 "the Lease", interval)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except (Unavailable, ServerError) as exc:
                log.warning("elevation sync failed, will retry in %d s: %s", interval, exc)
            except Exception:  # a bug must not stop the expiry for good
                log.exception("elevation sync failed unexpectedly, will retry in %d s",
                              interval)

    async def sync(self) -> int:
        """One pass; returns how many changes it made (expiries, removals, deletions)."""
        now = self._clock()
        requests = await self._store.requests()
        budget = _Budget()
        changes = 0
        removed: set[str] = set()
        overdue = sorted((r for r in requests if self._never_removed(r)), key=ended_or_created)
        for request in overdue:
            if not budget.left():
                break
            changes += await self._removal(request, budget)
            removed.add(request.name)
        expiring = sorted((r for r in requests if self._due_to_expire(r, now)),
                          key=self._overdue_since)
        for request in expiring:
            if not budget.left():
                break
            expired = await self._service.expire(request.name)
            budget.spend(expired is not None)
            if expired is None:
                continue
            changes += 1
            self._record("elevation.expire", expired, {"endReason":
                                                         expired.status.end_reason or ""})
            if expired.status.approved_at is not None and budget.left():
                changes += await self._removal(expired, budget)
                removed.add(expired.name)
        # The most recently ended first: a login racing the end is likeliest there.
        rechecks = sorted((r for r in requests if r.name not in removed
                           and self._in_recheck(r, now)), key=ended_or_created, reverse=True)
        for request in rechecks:
            if not budget.left():
                break
            changes += await self._removal(request, budget)
        for request in sorted(requests, key=ended_or_created):
            if not budget.left():
                break
            if self._due_for_deletion(request, now):
                deleted = await self._service.delete_ended(request)
                budget.spend(deleted)
                if deleted:
                    changes += 1
                    self._record("elevation.delete", request, {})
        if not budget.left():
            log.info("elevation sync: %d change(s) this pass, which has done all it may; "
                     "the rest follow in the next", changes)
        return changes

    async def _removal(self, request: StoredRequest, budget: _Budget) -> int:
        """One access removal, charged and audited if it changed anything; 1 if it did."""
        removal = await self._remove(request)
        changed = removal is not None and removal.changed
        budget.spend(changed)
        if removal is None or not changed:
            return 0
        self._record("elevation.access_removed", request, {
            "sessionsEnded": str(removal.sessions_ended),
            "roleChanged": "true" if removal.role_changed else "false"})
        return 1

    async def _remove(self, request: StoredRequest) -> AccessRemoval | None:
        """One request's access removal; a failure is logged and retried at the next pass."""
        try:
            return await self._service.remove_access(request)
        except (Unavailable, ServerError) as exc:
            log.warning("elevation %s: access removal failed, will retry: %s", request.name,
                        exc)
            return None

    def _due_to_expire(self, request: StoredRequest, now: float) -> bool:
        return request.overdue(now, self._config.pending_timeout_seconds) is not None

    def _overdue_since(self, request: StoredRequest) -> float:
        if request.status.phase == "Approved":
            return request.expires_at() or request.created_at
        return request.created_at + self._config.pending_timeout_seconds

    @staticmethod
    def _granted_and_ended(request: StoredRequest) -> bool:
        return (request.status.phase in FINAL_PHASES
                and request.status.approved_at is not None)

    def _never_removed(self, request: StoredRequest) -> bool:
        """Ended after having been approved, and its access not taken back yet."""
        return self._granted_and_ended(request) and request.status.access_removed_at is None

    def _in_recheck(self, request: StoredRequest, now: float) -> bool:
        """Ended after having been approved, only just now: its removal is repeated (the
        caller does the ones not yet removed first)."""
        ended = request.ended_at()
        return (self._granted_and_ended(request) and ended is not None
                and now - ended < RECHECK_SECONDS)

    def _due_for_deletion(self, request: StoredRequest, now: float) -> bool:
        if request.status.phase not in FINAL_PHASES:
            return False
        if request.status.approved_at is not None and request.status.access_removed_at is None:
            return False  # its access must be taken back first
        # Past the re-check too, so that deleting it never cuts the re-check short.
        kept = max(retention_of(request, self._config), RECHECK_SECONDS)
        return now - ended_or_created(request) >= kept

    def _record(self, kind: str, request: StoredRequest, extra: dict[str, str]) -> None:
        """One audit line for a change the controller made, in the requester's name."""
        event = AuditEvent(request=kind, client="", outcome="success", reason=Reason.OK,
                           username=request.spec.requester.username, http_status=0)
        event.extra.update({"id": request.name, "group": request.spec.group,
                            "phase": request.status.phase, **extra})
        self._audit.record(event)
