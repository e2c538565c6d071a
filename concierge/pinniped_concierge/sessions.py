"""Login sessions: one Secret per login, and a bound token that lives and dies with it.

Design choice (per-login sessions): every successful login creates its own
session Secret in the concierge namespace, owned by the user's ServiceAccount,
and the minted token is bound to it (TokenRequest `boundObjectRef`).
Deleting that Secret revokes exactly that login's token, within the
apiserver's authentication cache window (about 10 s), so `pinniped logout`
on a laptop does not also sign the user out of their CI job. The price is one
extra API write per login; a returning user still costs only two calls (this
Secret and the TokenRequest). Deleting the user's ServiceAccount revokes all
of their sessions at once, and the owner reference lets the garbage collector
clean up the Secrets after it.

The Secret is of type Opaque and holds no data. It must never be of type
`kubernetes.io/service-account-token`: the token controller would fill such a
Secret with a non-expiring legacy token for the ServiceAccount.

Expired session Secrets are swept periodically (their expiry is in an
annotation), so they do not pile up in the namespace; only the replica holding
the Lease sweeps (`lease`), so replicas do not list and delete the same
Secrets. A user may hold at most
`maxSessionsPerUser` live sessions: when a login would exceed that, their
oldest sessions are ended first, so one person (or a stolen IdP login in a
loop) cannot fill etcd with Secrets. The count comes from the
`object_watch` mirror, so the normal login pays no extra API call for it;
only while that watch is down (or without one) are the user's sessions
listed, and only a user over the limit pays for the deletions. The namespace's ResourceQuota on
`count/secrets` (deploy/concierge.yaml) is the hard backstop for all users
together.

If minting the token fails for any reason after the Secret was created, the
Secret is deleted again (best effort; the sweeper catches what that misses).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.userobjects import UserRef

log = logging.getLogger("concierge.sessions")

SWEEP_PAGE_SIZE = 250
DEFAULT_MAX_SESSIONS_PER_USER = 50


class ServiceAccountGone(Exception):
    """The user's ServiceAccount vanished (TokenRequest said NotFound): reconcile and retry."""


@dataclass(frozen=True)
class Session:
    id: str
    token: str
    expiration: dt.datetime


class Sessions:
    def __init__(self, kube: KubeAPI, namespace: str, ttl_seconds: int,
                 clock_skew_seconds: int, clock: Callable[[], float] = time.time, *,
                 max_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
                 versions: ObjectVersions | None = None) -> None:
        self._kube = kube
        self._namespace = namespace
        self._ttl = ttl_seconds
        self._skew = clock_skew_seconds
        self._clock = clock
        self._max_per_user = max_per_user
        self._versions = versions

    async def start(self, user: UserRef) -> Session:
        """Create the session Secret and mint a token bound to it (two API calls)."""
        await self._make_room(user)
        session_id = secrets.token_hex(8)
        expires = dt.datetime.fromtimestamp(self._clock() + self._ttl, dt.UTC)
        secret = await self._kube.create(Kind.SECRET, self._secret(session_id, user, expires),
                                         self._namespace)
        secret_uid = naming.metadata_field(secret, "uid")
        name = naming.session_secret_name(session_id)
        try:
            issued = await self._kube.create_token(self._namespace, user.service_account, {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {
                    "expirationSeconds": self._ttl,
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Secret",
                                       "name": name, "uid": secret_uid},
                },
            })
            status = issued.get("status") or {}
            token = status.get("token")
            if not isinstance(token, str) or not token:
                raise ServerError(Reason.KUBERNETES_ERROR, "TokenRequest returned no token")
        except BaseException as exc:  # incl. cancellation: no Secret without a token
            await self._discard(name, secret_uid)
            if isinstance(exc, NotFound):
                raise ServiceAccountGone(user.service_account) from None
            raise
        try:
            expiration = wire.parse_time(status.get("expirationTimestamp"),
                                         "status.expirationTimestamp")
        except wire.WireError:
            expiration = expires
        return Session(session_id, token, expiration)

    async def _discard(self, name: str, uid: str | None) -> None:
        try:
            await self._kube.delete(Kind.SECRET, name, self._namespace, uid=uid)
        except (NotFound, Conflict):
            pass
        except Exception as exc:  # the sweeper deletes it once it has expired
            log.warning("could not delete session Secret %s after a failed TokenRequest "
                        "(%s); the sweeper will", name, type(exc).__name__)

    async def _make_room(self, user: UserRef) -> None:
        """End the user's oldest sessions so that this login keeps them within the limit."""
        key = naming.user_key(user.username, self._namespace)
        mirrored = self._versions.of_user(Kind.SECRET, key) if self._versions else None
        if mirrored is not None:
            if len(mirrored) < self._max_per_user:
                return  # the normal case: no API call
            live = [(seen.created, name, seen.uid) for name, seen in mirrored.items()]
        else:
            live = await self._list_user_sessions(user)
        excess = len(live) - self._max_per_user + 1
        if excess <= 0:
            return
        for _, name, uid in sorted(live)[:excess]:
            with contextlib.suppress(NotFound, Conflict):
                await self._kube.delete(Kind.SECRET, name, self._namespace, uid=uid)
        log.info("user %s reached maxSessionsPerUser (%d): ended their %d oldest session(s)",
                 user.username, self._max_per_user, excess)

    async def _list_user_sessions(self, user: UserRef) -> list[tuple[str, str, str | None]]:
        """The user's sessions straight from the API (only while the watch is down)."""
        live: list[tuple[str, str, str | None]] = []
        selector = naming.user_session_selector(user.username, self._namespace)
        continue_token: str | None = None
        while True:
            items, continue_token = await self._kube.list(
                Kind.SECRET, self._namespace, selector, SWEEP_PAGE_SIZE, continue_token)
            for item in items:
                name = naming.metadata_field(item, "name")
                if name is not None and naming.is_managed(item):
                    live.append((naming.metadata_field(item, "creationTimestamp") or "",
                                 name, naming.metadata_field(item, "uid")))
            if not continue_token:
                return live

    def _secret(self, session_id: str, user: UserRef, expires: dt.datetime) -> Obj:
        labels = naming.user_labels(user.username, self._namespace) | {
            naming.SESSION_LABEL: "true"}
        return {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {
                "name": naming.session_secret_name(session_id),
                "namespace": self._namespace,
                "labels": labels,
                "annotations": {naming.USERNAME_ANNOTATION: user.username,
                                naming.EXPIRES_ANNOTATION: wire.format_time(expires)},
                "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount",
                                     "name": user.service_account, "uid": user.uid}],
            },
        }

    async def end(self, secret_name: str, secret_uid: str | None) -> bool:
        """Delete a session's Secret if it is ours; False if it was already gone."""
        if not secret_name.startswith(naming.SESSION_PREFIX):
            return False
        try:
            secret = await self._kube.read(Kind.SECRET, secret_name, self._namespace)
        except NotFound:
            return False
        uid = naming.metadata_field(secret, "uid")
        if not naming.is_managed(secret) or (secret_uid is not None and uid != secret_uid):
            return False
        try:
            await self._kube.delete(Kind.SECRET, secret_name, self._namespace, uid=uid)
        except (NotFound, Conflict):
            return False
        return True

    async def sweep(self) -> int:
        """Delete session Secrets whose tokens have expired; returns how many."""
        now = self._clock()
        expired: list[tuple[str, str | None]] = []
        continue_token: str | None = None
        while True:  # list everything first: deleting while paging is asking for trouble
            items, continue_token = await self._kube.list(
                Kind.SECRET, self._namespace, naming.session_selector(), SWEEP_PAGE_SIZE,
                continue_token)
            for item in items:
                name = naming.metadata_field(item, "name")
                if name is not None and naming.is_managed(item) and self._expired(item, now):
                    expired.append((name, naming.metadata_field(item, "uid")))
            if not continue_token:
                break
        deleted = 0
        for name, uid in expired:
            with contextlib.suppress(NotFound, Conflict):
                await self._kube.delete(Kind.SECRET, name, self._namespace, uid=uid)
                deleted += 1
        return deleted

    def _expired(self, secret: Obj, now: float) -> bool:
        raw = naming.annotation(secret, naming.EXPIRES_ANNOTATION)
        try:
            expires = wire.parse_time(raw, naming.EXPIRES_ANNOTATION)
        except wire.WireError:
            return True  # ours but unreadable: it cannot be told apart from an expired one
        return expires.timestamp() + self._skew < now

    async def run_sweeper(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            try:
                deleted = await self.sweep()
            except (Unavailable, ServerError) as exc:
                log.warning("session sweep failed, will retry: %s", exc)
            else:
                if deleted:
                    log.info("session sweep: deleted %d expired session Secret(s)", deleted)
