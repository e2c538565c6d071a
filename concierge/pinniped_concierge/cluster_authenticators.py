"""JWTAuthenticator objects as authenticators: watched, checked, used only when Ready.

    watch (thread) -> mirror of the objects -> reconcile (one task) -> verifiers, status
                                                 ^
                       key checks (one task per admitted object) --+

The watch (`object_watch.ListWatch`) keeps a mirror of the objects the label
selector picks; every change wakes the reconcile task, which also runs every
`RESYNC_SECONDS`. Reconciling is level-triggered, from the whole current set:
1. each object is read and admitted or refused (`authenticator_admission`);
2. an admitted object gets a verifier (its own https client trusting
   `spec.tls.certificateAuthorityData`, its own key check task); a deleted,
   refused or changed one has its task cancelled and its client closed;
3. the admitted objects whose last key check succeeded are published to the
   `AuthenticatorSet` in one swap, so the next login uses them;
4. each object's status (`authenticator_status`) is written through the
   status subresource, only when it differs from what the object holds,
   and only on the replica holding the Lease (`may_write_status`; `lease`):
   every replica still admits and uses the objects, so logins work on all
   of them. A replica that wins the Lease is woken (`wake`) and writes what
   it has computed at once. Our own writes come back as watch events, but yield an equal status, so
   nothing is written again: no loop. A write that loses a race (409) is
   dropped; the watch brings the newer object and the next pass decides.
   Someone else may write the status too (another concierge with another
   config, another tool): conditions of types we do not own are kept, and
   while the object's status is not the one we last wrote, we write it at
   most once per `FIGHT_DELAYS_SECONDS` step (1 s up to 30 s) and warn once,
   so two writers never spin the apiserver.

Key checks: each admitted object's task fetches discovery and the key set at
once, then every `keyRefreshIntervalSeconds` while it works and with backoff
(`backoff`: 1 s up to 30 s) while it fails, so an object whose IdP comes
up turns Ready within that time and one whose IdP breaks turns Error. An
object is used only while its last check succeeded: Ready means exactly
"logins use it". (A file authenticator instead keeps cached keys through an
outage of up to `maxKeyAgeSeconds`: it cannot be marked unusable anywhere a
person would see.)

While the watch reconnects, the last known objects stay in use. Until the
objects have been listed once, `readiness_problem` keeps the concierge not
ready: logins naming an object would otherwise fail after every restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import datetime as dt
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pinniped_apis.authentication import (
    JWTAuthenticatorFields,
    JWTAuthenticatorSpec,
    JWTAuthenticatorStatus,
)
from pinniped_concierge import backoff
from pinniped_concierge.authenticator_admission import (
    Candidate,
    admit,
    cache_key,
    read_object,
)
from pinniped_concierge.authenticator_set import Authenticator, AuthenticatorSet, TokenVerifier
from pinniped_concierge.authenticator_status import (
    KeysCheck,
    current_status,
    desired_status,
    same_status,
    why_not,
)
from pinniped_concierge.config import DEFAULT_MAX_TOKEN_BYTES
from pinniped_concierge.errors import ServerError, Unavailable
from pinniped_concierge.identity import IdentityMapper
from pinniped_concierge.jwt_authenticator import FetchError
from pinniped_concierge.kubeapi import JWT_AUTHENTICATORS, Conflict, KubeAPI, NotFound, Obj
from pinniped_concierge.object_watch import WatchSource, new_watch_client

log = logging.getLogger("concierge.authenticators")

RESYNC_SECONDS = 30.0
#: Objects per list page; the CRD allows 64 KiB of CA data in each.
LIST_PAGE_SIZE = 100
#: The least time between two status writes to an object whose status someone else
#: keeps changing, by how many such writes came before.
FIGHT_DELAYS_SECONDS = backoff.DELAYS_SECONDS


class CheckedVerifier(TokenVerifier, Protocol):
    async def refresh_keys(self) -> None:
        """Fetch discovery and keys now; raise `FetchError` (its stage's subclass) if not."""


@dataclass(frozen=True)
class Built:
    """A verifier for one object, and how to release what it holds (its https client)."""

    verifier: CheckedVerifier
    close: Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class ObjectSettings:
    """A JWTAuthenticator object as `jwt_authenticator.VerifierSettings`."""

    name: str
    spec: JWTAuthenticatorSpec
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES

    @property
    def issuer(self) -> str:
        return self.spec.issuer

    @property
    def audience(self) -> str:
        return self.spec.audience

    @property
    def algorithms(self) -> Sequence[str]:
        return self.spec.algorithms

    def ca_pem(self) -> str | None:
        tls = self.spec.tls
        return base64.b64decode(tls.certificate_authority_data).decode("ascii") if tls else None


VerifierFactory = Callable[[ObjectSettings], Built]


def https_verifiers(*, clock_skew_seconds: int, min_refresh_interval_seconds: float,
                    max_key_age_seconds: float) -> VerifierFactory:
    """Real verifiers: an `HttpsFetcher` of their own and a `JWTAuthenticator`."""
    from pinniped_concierge.jwt_authenticator import HttpsFetcher, JWTAuthenticator

    def build(settings: ObjectSettings) -> Built:
        fetcher = HttpsFetcher(None, ca_pem=settings.ca_pem())
        verifier = JWTAuthenticator(settings, fetcher, clock_skew_seconds=clock_skew_seconds,
                                    min_refresh_interval_seconds=min_refresh_interval_seconds,
                                    max_key_age_seconds=max_key_age_seconds)
        return Built(verifier, fetcher.aclose)

    return build


class ObjectMirror:
    """The watched objects by name, fed from the watch thread (a `WatchTarget`)."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, Obj] = {}
        self._changed = changed
        self.listed = threading.Event()

    def reset(self, objects: list[Obj]) -> None:
        with self._lock:
            self._objects = {name: obj for obj in objects
                             if (name := (obj.get("metadata") or {}).get("name"))}
        self.listed.set()
        self._changed()

    def apply(self, event_type: str, obj: Obj) -> None:
        name = (obj.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            return
        with self._lock:
            if event_type == "DELETED":
                self._objects.pop(name, None)
            else:
                self._objects[name] = obj
        self._changed()

    def lost(self) -> None:
        """Keep the last known objects: better than dropping every login while reconnecting."""

    def snapshot(self) -> list[Obj]:
        with self._lock:
            return list(self._objects.values())


@dataclass
class _Entry:
    uid: str
    spec: JWTAuthenticatorSpec
    built: Built
    authenticator: Authenticator
    check: KeysCheck | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass
class _Written:
    """What we last wrote to one object's status, to tell our writes from another's."""

    uid: str
    status: JWTAuthenticatorStatus
    #: The resourceVersion the write was based on: a mirror still holding it has not
    #: seen the write yet.
    over_version: object
    at: float
    #: Writes in a row made over someone else's status.
    fights: int = 0


class ClusterAuthenticators:
    """Turns the JWTAuthenticator objects into authenticators and their status.

    One object owns the whole lifecycle (watch mirror, admission, verifiers and
    their key checks, the usable set, status writes) because each step needs
    the previous one's result for the same object, and reconciling the whole
    set at once is what keeps the decisions consistent; the pure decisions
    live in `authenticator_admission` and `authenticator_status`.
    """

    def __init__(self, kube: KubeAPI, authenticators: AuthenticatorSet,
                 file: Mapping[str, JWTAuthenticatorFields], build: VerifierFactory, *,
                 max_objects: int, refresh_interval_seconds: float,
                 retry_delays_seconds: Sequence[float] = backoff.DELAYS_SECONDS,
                 clock: Callable[[], float] = time.time,
                 may_write_status: Callable[[], bool] = lambda: True) -> None:
        self._kube = kube
        self._set = authenticators
        self._file = dict(file)
        self._build = build
        self._max = max_objects
        self._refresh_interval = refresh_interval_seconds
        self._retry_delays = tuple(retry_delays_seconds)
        self._clock = clock
        self._may_write_status = may_write_status
        self.mirror = ObjectMirror(self._changed_from_any_thread)
        self._entries: dict[str, _Entry] = {}
        self._parsed: dict[tuple[str, object], Candidate] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._write_failures: dict[str, str] = {}
        self._written: dict[str, _Written] = {}
        self._warned: set[str] = set()  # uids whose status fight was logged
        #: When (self._clock) a write held back by the fight backoff is due.
        self._due: float | None = None

    def watch_source(self, api_client: Any, label_selector: str) -> WatchSource:
        """The list-then-watch of JWTAuthenticator objects that feeds `mirror`."""
        from kubernetes import client

        custom = client.CustomObjectsApi(new_watch_client(api_client))
        return WatchSource(
            "JWTAuthenticators", custom.list_cluster_custom_object,
            {"group": JWT_AUTHENTICATORS.group, "version": JWT_AUTHENTICATORS.version,
             "plural": JWT_AUTHENTICATORS.plural}, label_selector, self.mirror,
            meanwhile="the last known JWTAuthenticators stay in use",
            page_size=LIST_PAGE_SIZE)

    async def readiness_problem(self) -> str | None:
        if self.mirror.listed.is_set():
            return None
        return ("JWTAuthenticator objects not listed yet (is deploy/crds.yaml applied, does "
                "the concierge's ClusterRole allow list and watch on jwtauthenticators, and is "
                "jwtAuthenticators.labelSelector a valid selector? The watch's warnings say "
                "which; without objects, set jwtAuthenticators.watch: false)")

    # --- waking up ------------------------------------------------------------------

    def _changed_from_any_thread(self) -> None:
        loop = self._loop
        if loop is None:
            return  # `run` reconciles first thing anyway
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(self._wake.set)

    def wake(self) -> None:
        """Reconcile soon (from the event loop), e.g. when this replica may now write status."""
        self._wake.set()

    async def run(self) -> None:
        """Reconcile on every change, and every RESYNC_SECONDS, until cancelled."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                self._wake.clear()
                try:
                    await self.reconcile()
                except Exception as exc:  # a bug must not end reconciling for good
                    log.error("reconciling JWTAuthenticators failed: %s: %s",
                              type(exc).__name__, str(exc)[:300])
                wait = RESYNC_SECONDS
                if self._due is not None:
                    wait = min(wait, max(self._due - self._clock(), 0.0) + 0.01)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            await self.close()

    # --- reconciling --------------------------------------------------------------

    async def reconcile(self) -> None:
        """Bring verifiers, the usable set and every status in line with the objects."""
        if not self.mirror.listed.is_set():
            return
        candidates = [c for obj in self.mirror.snapshot()
                      if (c := read_object(obj, self._parsed)) is not None]
        current = {cache_key(c.obj) for c in candidates}  # one generation per object
        self._parsed = {key: c for key, c in self._parsed.items() if key in current}
        names = {c.name for c in candidates}
        self._write_failures = {n: e for n, e in self._write_failures.items() if n in names}
        self._written = {n: w for n, w in self._written.items() if n in names}
        self._warned &= {c.uid for c in candidates}
        verdicts = admit(candidates, self._file, self._max,
                         {entry.uid: entry.spec for entry in self._entries.values()})
        admitted = {c.name: c for c in candidates if verdicts[c.name].admitted}

        for name in list(self._entries):
            entry, wanted = self._entries[name], admitted.get(name)
            if wanted is None or (wanted.uid, wanted.spec) != (entry.uid, entry.spec):
                await self._stop(name)
        for name, candidate in admitted.items():
            if name not in self._entries:
                self._start(candidate)

        now = dt.datetime.fromtimestamp(self._clock(), dt.UTC)
        statuses = {c.name: desired_status(c, verdicts[c.name], self._check_of(c), now)
                    for c in candidates}
        usable = {name: entry.authenticator for name, entry in self._entries.items()
                  if entry.check is not None and entry.check.ok}
        self._set.publish(usable, {c.name: why_not(statuses[c.name]) for c in candidates
                                   if c.name not in usable})
        if not self._may_write_status():
            return  # another replica holds the Lease and writes status
        self._due = None
        for candidate in candidates:
            if not self._may_write_status():
                return  # the Lease was lost while writing: the new holder writes the rest
            status = statuses[candidate.name]
            if status is not None and self._may_write_now(candidate, status):
                await self._write_status(candidate, status)

    def _may_write_now(self, candidate: Candidate, status: JWTAuthenticatorStatus) -> bool:
        """Whether to write `status` now: it differs from the object's, and we are not
        fighting another writer faster than `FIGHT_DELAYS_SECONDS` allow."""
        held = current_status(candidate.obj)
        if same_status(held, status):
            return False
        written = self._written.get(candidate.name)
        if written is None or written.uid != candidate.uid:
            return True
        if candidate.obj.get("metadata", {}).get("resourceVersion") == written.over_version:
            return False  # our write has not come back through the watch yet
        if same_status(held, written.status):
            written.fights = 0  # the object holds what we wrote: ours alone to change
            return True
        if candidate.uid not in self._warned:
            self._warned.add(candidate.uid)
            log.warning("JWTAuthenticator %s: someone else keeps writing its status (another "
                        "concierge selecting it with another config, or another tool); "
                        "writing ours at most every %.0f s. Give each concierge its own "
                        "objects (jwtAuthenticators.labelSelector)", candidate.name,
                        FIGHT_DELAYS_SECONDS[-1])
        due = written.at + backoff.delay(written.fights, FIGHT_DELAYS_SECONDS)
        if self._clock() >= due:
            return True
        self._due = due if self._due is None else min(self._due, due)
        return False

    def _check_of(self, candidate: Candidate) -> KeysCheck | None:
        entry = self._entries.get(candidate.name)
        return entry.check if entry is not None else None

    def _start(self, candidate: Candidate) -> None:
        assert candidate.spec is not None
        spec = candidate.spec
        built = self._build(ObjectSettings(candidate.name, spec))
        entry = _Entry(candidate.uid, spec, built, Authenticator(
            built.verifier, IdentityMapper.from_config(spec), issuer=spec.issuer,
            audience=spec.audience, source="cluster",
            issuer_ca_data=spec.tls.certificate_authority_data if spec.tls else None))
        entry.task = asyncio.create_task(self._keep_checking(candidate.name, entry),
                                         name=f"jwtauthenticator-{candidate.name}")
        self._entries[candidate.name] = entry
        log.info("JWTAuthenticator %s: checking issuer %s", candidate.name, spec.issuer)

    async def _stop(self, name: str) -> None:
        entry = self._entries.pop(name)
        if entry.task is not None:
            entry.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await entry.task
        with contextlib.suppress(Exception):
            await entry.built.close()
        log.info("JWTAuthenticator %s: no longer used", name)

    async def _keep_checking(self, name: str, entry: _Entry) -> None:
        """Fetch discovery and keys, now and then again; each new outcome wakes `run`."""
        failures = 0
        while True:
            try:
                await entry.built.verifier.refresh_keys()
                check, delay, failures = KeysCheck(), self._refresh_interval, 0
            except Exception as exc:  # anything else too: the task must live on
                check = (KeysCheck.of(exc) if isinstance(exc, FetchError)
                         else KeysCheck("discovery", f"{type(exc).__name__}: {str(exc)[:200]}"))
                delay = min(backoff.delay(failures, self._retry_delays),
                            self._refresh_interval)
                failures += 1
            if check != entry.check:
                if check.ok:
                    log.info("JWTAuthenticator %s: keys fetched; logins use it", name)
                else:
                    log.warning("JWTAuthenticator %s: not usable: %s", name, check.detail)
                entry.check = check
                self._wake.set()
            await asyncio.sleep(delay)

    async def _write_status(self, candidate: Candidate, status: JWTAuthenticatorStatus) -> None:
        body = copy.deepcopy(candidate.obj)
        body["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
        written = self._written.get(candidate.name)
        fighting = (written is not None and written.uid == candidate.uid
                    and not same_status(current_status(candidate.obj), written.status))
        fights = written.fights + 1 if written is not None and fighting else 0
        try:
            await self._kube.replace_custom_status(JWT_AUTHENTICATORS, candidate.name, body)
        except (Conflict, NotFound):
            return  # changed or deleted meanwhile: the watch brings the news
        except (Unavailable, ServerError) as exc:
            if self._write_failures.get(candidate.name) != str(exc):
                log.warning("JWTAuthenticator %s: cannot write its status (retried every "
                            "%.0f s): %s", candidate.name, RESYNC_SECONDS, exc)
            self._write_failures[candidate.name] = str(exc)
            return
        self._write_failures.pop(candidate.name, None)
        self._written[candidate.name] = _Written(
            candidate.uid, status, candidate.obj.get("metadata", {}).get("resourceVersion"),
            self._clock(), fights)

    async def close(self) -> None:
        """Stop every key check and close every client (server shutdown)."""
        for name in list(self._entries):
            await self._stop(name)
