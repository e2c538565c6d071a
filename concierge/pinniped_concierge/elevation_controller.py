"""The Lease holder's side of elevations: end them on time, take the access back, tidy up.

Every `elevation.syncIntervalSeconds` (2 s by default) the replica holding the
Lease goes through the requests in the mirror and:

- expires a request still Pending after `pendingTimeoutSeconds`, and an
  Approved one whose `expiresAt` has passed;
- for an approved request that has ended (expired, revoked), removes the
  group from the user's ClusterRole and ends the sessions minted during it
  (`ElevationService.remove_access_report`), and does that again on every pass
  for the first `RECHECK_SECONDS` after it ended, even once `accessRemovedAt`
  is set: a login on another replica that read the grant just before the end
  may have written the group back, or minted a session, a moment later;
- deletes ended requests older than `retentionSeconds` (the audit log keeps
  their story), but never one whose access removal has not been done.

Why this bounds the time an ended elevation keeps working: the role write and
the session deletions happen within one interval of the end; the apiserver
caches a token's authentication for about 10 s after that.

Each pass does at most `MAX_CHANGES_PER_PASS` writes (expiries and removals
first, the most overdue first; deletions after), so a backlog after an outage
is worked off over a few passes instead of in one burst of API calls. Each
change gets one concierge audit line; a pass that changes nothing writes none.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pinniped_apis.elevation import FINAL_PHASES
from pinniped_concierge.audit import AuditEvent, AuditLog
from pinniped_concierge.config import ElevationConfig
from pinniped_concierge.elevation_service import AccessRemoval, ElevationService
from pinniped_concierge.elevation_store import ElevationStore, StoredRequest
from pinniped_concierge.errors import Reason, ServerError, Unavailable

log = logging.getLogger("concierge.elevation")

#: After an approved request ends, its access removal is repeated for this long.
RECHECK_SECONDS = 30.0
#: Writes (expiries, removals, deletions) one pass makes at most; the rest wait a pass.
MAX_CHANGES_PER_PASS = 50


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
        expiring = sorted((r for r in requests if self._due_to_expire(r, now)),
                          key=self._overdue_since)
        budget = MAX_CHANGES_PER_PASS
        changes = 0
        removals: dict[str, StoredRequest] = {}
        for request in expiring[:budget]:
            expired = await self._service.expire(request.name)
            budget -= 1
            if expired is None:
                continue
            changes += 1
            self._record("elevation.expire", expired, {"endReason":
                                                         expired.status.end_reason or ""})
            if expired.status.approved_at is not None:
                removals[expired.name] = expired
        for request in requests:
            if request.name not in removals and self._needs_removal(request, now):
                removals[request.name] = request
        for request in sorted(removals.values(), key=lambda r: r.ended_at() or 0.0):
            if budget <= 0:
                break
            budget -= 1
            removal = await self._remove(request)
            if removal is not None and removal.changed:
                changes += 1
                self._record("elevation.access_removed", request, {
                    "sessionsEnded": str(removal.sessions_ended),
                    "roleChanged": "true" if removal.role_changed else "false"})
        for request in sorted(requests, key=lambda r: r.ended_at() or 0.0):
            if budget <= 0:
                break
            if self._due_for_deletion(request, now):
                budget -= 1
                if await self._service.delete_ended(request):
                    changes += 1
                    self._record("elevation.delete", request, {})
        if budget <= 0:
            log.info("elevation sync: %d change(s) this pass, the most it makes; the rest "
                     "follow in the next", MAX_CHANGES_PER_PASS)
        return changes

    async def _remove(self, request: StoredRequest) -> AccessRemoval | None:
        """One request's access removal; a failure is logged and retried at the next pass."""
        try:
            return await self._service.remove_access_report(request)
        except (Unavailable, ServerError) as exc:
            log.warning("elevation %s: access removal failed, will retry: %s", request.name,
                        exc)
            return None

    def _due_to_expire(self, request: StoredRequest, now: float) -> bool:
        phase = request.status.phase
        return ((phase == "Pending"
                 and request.created_at + self._config.pending_timeout_seconds <= now)
                or (phase == "Approved" and not request.active(now)))

    def _overdue_since(self, request: StoredRequest) -> float:
        if request.status.phase == "Approved":
            return request.expires_at() or request.created_at
        return request.created_at + self._config.pending_timeout_seconds

    @staticmethod
    def _needs_removal(request: StoredRequest, now: float) -> bool:
        """Ended after having been approved, and not removed yet or ended only just now."""
        if request.status.phase not in FINAL_PHASES or request.status.approved_at is None:
            return False
        ended = request.ended_at()
        return (request.status.access_removed_at is None
                or (ended is not None and now - ended < RECHECK_SECONDS))

    def _due_for_deletion(self, request: StoredRequest, now: float) -> bool:
        if request.status.phase not in FINAL_PHASES:
            return False
        if request.status.approved_at is not None and request.status.access_removed_at is None:
            return False  # its access must be taken back first
        ended = request.ended_at()
        # Past the re-check too, so that deleting it never cuts the re-check short.
        return (ended is not None and now - ended >= max(self._config.retention_seconds,
                                                         RECHECK_SECONDS))

    def _record(self, kind: str, request: StoredRequest, extra: dict[str, str]) -> None:
        """One audit line for a change the controller made, in the requester's name."""
        event = AuditEvent(request=kind, client="", outcome="success", reason=Reason.OK,
                           username=request.spec.requester.username, http_status=0)
        event.extra.update({"id": request.name, "group": request.spec.group,
                            "phase": request.status.phase, **extra})
        self._audit.record(event)
