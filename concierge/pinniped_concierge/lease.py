"""Leader election over a `coordination.k8s.io/v1` Lease: background work on one replica.

Every replica serves logins and watches JWTAuthenticators, but the writes that
would otherwise race (session sweeps, JWTAuthenticator status, the
CredentialIssuer) run only on the replica that holds the Lease.

The rules, and why:

- A Lease with no holder, or one whose record has not changed for its
  `leaseDurationSeconds` *by our own clock*, may be taken. We time the record
  from when we first saw it, never from its `renewTime`, so clocks that differ
  between nodes cannot make two replicas think they hold it.
- Every write carries the resourceVersion it was based on; a 409 means another
  replica wrote first, and it has the Lease.
- The holder renews every `renew_seconds` with one API call (a PUT of the
  object it last wrote); the others read it once per period, plus one read at
  the moment it would expire, so a dead holder is replaced within the duration
  plus one period.
- A holder whose renewals fail steps down (cancels its leader work) once
  `duration - renew` has passed since its last successful renewal began, which
  is before anyone else may take over.
- On shutdown the holder releases the Lease (no holder, duration 1 s), so the
  next replica takes over at its next look instead of after the duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pinniped_concierge import backoff, naming
from pinniped_concierge.errors import ServerError, Unavailable
from pinniped_concierge.kubeapi import Conflict, LeaseAPI, NotFound, Obj

log = logging.getLogger("concierge.lease")

LeaderWork = Callable[[], Coroutine[Any, Any, None]]
#: How long a release on shutdown may take before the process exits anyway.
RELEASE_TIMEOUT_SECONDS = 2.0


def process_identity() -> str:
    """Unique per process: the host (the pod's name in a cluster), the pid, and a random part
    so that a restarted container with the same pid is not taken for its predecessor."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(4)}"


def micro_time(when: float) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _as_micro_time(value: str) -> str | None:
    """`value` (any RFC 3339 form) as a MicroTime, or None when it is no timestamp."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return micro_time(parsed.timestamp())


#: The shortest wait between two looks, so a deadline already reached cannot spin.
MIN_WAIT_SECONDS = 0.05


class LeaseElector:
    def __init__(self, kube: LeaseAPI, namespace: str, name: str, *, identity: str,
                 duration_seconds: float, renew_seconds: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if renew_seconds * 2 >= duration_seconds:
            raise ValueError("renew_seconds must be well below duration_seconds")
        self._kube = kube
        self._namespace = namespace
        self.name = name
        self.identity = identity
        self._duration = duration_seconds
        self._renew = renew_seconds
        self._clock = clock
        self._wall = wall_clock
        self._lease: Obj | None = None  # the object as last read or written
        self._observed: tuple[object, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0  # when the last successful acquire or renew began
        self._failures = 0
        self._problem: str | None = None
        self._leading = False
        self._work: list[LeaderWork] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._callbacks: list[Callable[[bool], None]] = []

    @property
    def leading(self) -> bool:
        """Whether this replica holds the Lease and may do the leader's work now."""
        return self._leading

    def while_leading(self, work: LeaderWork) -> None:
        """Run `work()` as a task from each election won until leadership is lost."""
        self._work.append(work)

    def on_change(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(leading)` whenever this replica gains or loses the Lease."""
        self._callbacks.append(callback)

    async def run(self) -> None:
        """Take part in the election until cancelled; then release what we hold."""
        try:
            while True:
                await asyncio.sleep(await self.step())
        finally:
            held = self._leading
            await self._stop_leading("shutting down")
            if held:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                        await self.release()

    async def step(self) -> float:
        """One look at the Lease (acquire, renew or observe); returns the seconds to wait."""
        started = self._clock()
        limit = self._renew
        if self._leading:  # a call that hangs must not carry us past the step-down point
            limit = min(limit, max(MIN_WAIT_SECONDS, self._step_down_at() - started))
        try:
            async with asyncio.timeout(limit):
                won = await self._acquire_or_renew(started)
        except Conflict:
            self._lease = None  # someone else wrote it: read it next time
            await self._stop_leading("another replica wrote the Lease first")
            return self._renew
        except (Unavailable, ServerError, NotFound, TimeoutError) as exc:
            return await self._failed(started, exc)
        if self._problem is not None:
            log.info("Lease %s: reachable again", self.name)
        self._failures, self._problem = 0, None
        if won:
            self._renewed_at = started
            await self._start_leading()
            return self._renew
        await self._stop_leading("another replica holds it")
        expires_in = self._observed_at + self._lease_duration() - self._clock()
        return max(MIN_WAIT_SECONDS, min(self._renew, expires_in))

    async def _failed(self, _started: float, exc: Exception) -> float:
        self._lease = None
        self._failures += 1
        problem = "timed out" if isinstance(exc, TimeoutError) else str(exc)
        if problem != self._problem:
            log.warning("Lease %s: cannot read or renew it (retrying): %s", self.name, problem)
        self._problem = problem
        left = self._step_down_at() - self._clock()
        if self._leading and left <= MIN_WAIT_SECONDS:
            await self._stop_leading("renewals failed; stepping down before the Lease expires")
        if self._leading:  # try again, but no later than the step-down point
            return max(MIN_WAIT_SECONDS, min(self._renew, left))
        return min(max(self._renew, backoff.delay(self._failures - 1)), self._duration)

    def _step_down_at(self) -> float:
        """When a holder whose renewals keep failing must have stopped its leader work: one
        renew period before the Lease can have expired for the others. Measured from the
        start of the last good renewal on our own clock, and checked against the time now,
        not the time a (possibly hung) call began."""
        return self._renewed_at + self._duration - self._renew

    async def _acquire_or_renew(self, now: float) -> bool:
        if self._leading and self._lease is not None:  # renew: one call
            self._lease = await self._kube.replace_lease(
                self._namespace, self.name, self._record(self._lease, acquire=False))
            return True
        try:
            lease = await self._kube.read_lease(self._namespace, self.name)
        except NotFound:
            self._lease = await self._kube.create_lease(self._namespace, self._new_lease())
            log.info("Lease %s: created; this replica (%s) does the background work",
                     self.name, self.identity)
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        record = (holder, spec.get("renewTime"), spec.get("leaseDurationSeconds"),
                  naming.metadata_field(lease, "resourceVersion"))
        if record != self._observed:
            self._observed, self._observed_at = record, now
        self._lease = lease
        if holder == self.identity:
            self._lease = await self._kube.replace_lease(
                self._namespace, self.name, self._record(lease, acquire=False))
            return True
        if holder and now < self._observed_at + self._lease_duration():
            return False
        self._lease = await self._kube.replace_lease(
            self._namespace, self.name, self._record(lease, acquire=True))
        log.info("Lease %s: acquired from %s; this replica (%s) does the background work",
                 self.name, holder or "(released)", self.identity)
        return True

    def _lease_duration(self) -> float:
        """The holder's own duration (it may be configured differently), else ours."""
        spec = (self._lease or {}).get("spec") or {}
        value = spec.get("leaseDurationSeconds")
        return float(value) if isinstance(value, int) and value > 0 else self._duration

    def _new_lease(self) -> Obj:
        now = micro_time(self._wall())
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self._namespace,
                             "labels": {naming.MANAGED_BY_LABEL: naming.MANAGED_BY}},
                "spec": {"holderIdentity": self.identity,
                         "leaseDurationSeconds": int(self._duration),
                         "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}

    def _record(self, lease: Obj, *, acquire: bool) -> Obj:
        body = copy.deepcopy(lease)
        spec = body.setdefault("spec", {})
        now = micro_time(self._wall())
        if acquire:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = now
        elif isinstance(spec.get("acquireTime"), str):
            # As read back it may lack the fixed six-digit fraction MicroTime requires.
            spec["acquireTime"] = _as_micro_time(spec["acquireTime"]) or now
        spec.update({"holderIdentity": self.identity,
                     "leaseDurationSeconds": int(self._duration), "renewTime": now})
        return body

    async def release(self) -> None:
        """Give the Lease up (no holder), so another replica takes it at its next look."""
        if self._lease is None:
            return
        body = copy.deepcopy(self._lease)
        spec = body.setdefault("spec", {})
        if spec.get("holderIdentity") != self.identity:
            return
        spec.pop("holderIdentity", None)
        spec.update({"leaseDurationSeconds": 1, "renewTime": micro_time(self._wall())})
        with contextlib.suppress(Conflict, NotFound):
            self._lease = await self._kube.replace_lease(self._namespace, self.name, body)
            log.info("Lease %s: released", self.name)

    async def _start_leading(self) -> None:
        if self._leading:
            return
        self._leading = True
        self._tasks = [asyncio.create_task(_logged(work), name=f"leader-{i}")
                       for i, work in enumerate(self._work)]
        for callback in self._callbacks:
            callback(True)

    async def _stop_leading(self, why: str) -> None:
        if not self._leading:
            return
        self._leading = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        log.info("Lease %s: no longer held by this replica (%s)", self.name, why)
        for callback in self._callbacks:
            callback(False)


async def _logged(work: LeaderWork) -> None:
    """Run leader work; a bug in it is logged instead of vanishing with the task."""
    try:
        await work()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("background work %s ended: %s: %s", getattr(work, "__name__", work),
                  type(exc).__name__, str(exc)[:300])
