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
Secrets.

A user may hold at most `maxSessionsPerUser` live sessions: when a login
would exceed that, their oldest sessions are ended first, so one person (or a
stolen ID token replayed in a loop) cannot fill etcd with Secrets. The count
must be exact while hundreds of logins of one user arrive at once:

- it comes from the `object_watch` mirror (no API call for it), corrected by
  the `session_ledger`, which knows the Secrets this replica created or
  deleted that the mirror does not show yet; only while the watch is down
  (or without one) are the user's sessions listed;
- counting, making room and creating the Secret happen under the user's
  lock (`user_locks`, one per user in flight), so concurrent logins of one
  user take turns, each sees the previous one's Secret, and an excess
  session is deleted by exactly one of them;
- one login deletes at most `MAX_DELETIONS_PER_LOGIN` sessions. A replica
  that crashed, or several replicas logging one user in at once (each knows
  only its own writes before the mirror catches up), may leave a user over
  the cap; the sweeper ends those sessions too, oldest first, so no login
  pays for that.

The namespace's ResourceQuota on `count/secrets` (deploy/concierge.yaml) is
the hard backstop for all users together.

If minting the token fails for any reason after the Secret was created, the
Secret is deleted again (best effort; the sweeper catches what that misses).

A session of a login granted elevated groups (`UserRef.grants`) is marked
(`naming.ELEVATED_LABEL`, and the request ids in `naming.ELEVATIONS_ANNOTATION`),
so that the end of an elevation ends exactly the sessions minted during it,
and its expiry (annotation and credential) is at most the earliest
elevation's end. The TokenRequest still asks for the full TTL: the apiserver
refuses less than 600 s, and deleting the Secret at the elevation's end is
what ends the token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, ServerError, Unavailable
from pinniped_concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj, pages
from pinniped_concierge.object_watch import ObjectVersions
from pinniped_concierge.session_ledger import LiveSession, SessionLedger
from pinniped_concierge.user_locks import UserLocks
from pinniped_concierge.userobjects import UserRef

log = logging.getLogger("concierge.sessions")

SWEEP_PAGE_SIZE = 250
DEFAULT_MAX_SESSIONS_PER_USER = 50
#: The most sessions one login ends to stay within the cap (the sweeper ends the rest).
MAX_DELETIONS_PER_LOGIN = 3


class ServiceAccountGone(Exception):
    """The user's ServiceAccount vanished (TokenRequest said NotFound): reconcile and retry."""


@dataclass(frozen=True)
class Session:
    id: str
    token: str = field(repr=False)
    expiration: dt.datetime
    #: Whose session, and the identity it was granted (`UserRef.identity`).
    user: UserRef


class Sessions:
    def __init__(self, kube: KubeAPI, namespace: str, ttl_seconds: int,
                 clock_skew_seconds: int, clock: Callable[[], float] = time.time, *,
                 max_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
                 versions: ObjectVersions | None = None,
                 ledger: SessionLedger | None = None) -> None:
        self._kube = kube
        self._namespace = namespace
        self._ttl = ttl_seconds
        self._skew = clock_skew_seconds
        self._clock = clock
        self._max_per_user = max_per_user
        self._versions = versions
        self._ledger = ledger or SessionLedger()
        self._locks = UserLocks()

    async def start(self, user: UserRef) -> Session:
        """Create the session Secret and mint a token bound to it (two API calls, plus one
        per session ended to stay within the cap)."""
        key = naming.user_key(user.username, self._namespace)
        async with self._locks.hold(key):
            await self._make_room(user, key)
            return await self._create(user, key)

    async def _create(self, user: UserRef, key: str) -> Session:
        session_id = secrets.token_hex(8)
        now = self._clock()
        expires = dt.datetime.fromtimestamp(
            min([now + self._ttl, *(g.expires_at for g in user.grants)]), dt.UTC)
        try:
            secret = await self._kube.create(
                Kind.SECRET, self._secret(session_id, user,
                                          dt.datetime.fromtimestamp(now, dt.UTC), expires),
                self._namespace)
        except Conflict:
            # The name is 64 random bits: only our own create, resent after the apiserver
            # died answering it (`kube_http`), can have taken it. The sweeper ends that one.
            raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "the Kubernetes API failed "
                              "while starting the session; try again", 1) from None
        secret_uid = naming.metadata_field(secret, "uid")
        name = naming.session_secret_name(session_id)
        self._ledger.created(key, (naming.session_started(secret), name, secret_uid))
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
            await self._discard(key, name, secret_uid)
            if isinstance(exc, NotFound):
                raise ServiceAccountGone(user.service_account) from None
            raise
        try:
            expiration = wire.parse_time(status.get("expirationTimestamp"),
                                         "status.expirationTimestamp")
        except wire.WireError:
            expiration = expires
        if user.grants:  # the token outlives the elevation; the credential must not
            expiration = min(expiration, expires)
        return Session(session_id, token, expiration, user)

    async def _discard(self, key: str, name: str, uid: str | None) -> None:
        try:
            await self._delete(key, name, uid)
        except Exception as exc:  # the sweeper deletes it once it has expired
            log.warning("could not delete session Secret %s after a failed TokenRequest "
                        "(%s); the sweeper will", name, type(exc).__name__)

    async def _delete(self, key: str, name: str, uid: str | None) -> bool:
        """Delete one session Secret of user `key`, and note it; False if it was gone."""
        try:
            await self._kube.delete(Kind.SECRET, name, self._namespace, uid=uid)
        except (NotFound, Conflict):  # Conflict: the name now holds another Secret
            self._ledger.deleted(key, name)
            return False
        self._ledger.deleted(key, name)
        return True

    async def _make_room(self, user: UserRef, key: str) -> None:
        """End the user's oldest sessions so that this login keeps them within the limit
        (called with the user's lock held, so the count includes every earlier login)."""
        live = await self._live(key)
        excess = len(live) - self._max_per_user + 1
        if excess <= 0:
            return  # the normal case: no API call
        ending = live[:min(excess, MAX_DELETIONS_PER_LOGIN)]
        for _, name, uid in ending:
            await self._delete(key, name, uid)
        if excess > len(ending):
            log.warning("user %s is %d session(s) over maxSessionsPerUser (%d): ended the %d "
                        "oldest; the sweeper ends the rest", user.username, excess - 1,
                        self._max_per_user, len(ending))
        else:
            log.info("user %s reached maxSessionsPerUser (%d): ended their %d oldest "
                     "session(s)", user.username, self._max_per_user, len(ending))

    async def _live(self, key: str) -> list[LiveSession]:
        """User `key`'s sessions, oldest first: the mirror corrected by our own recent writes,
        or (while the watch is down) a list from the API."""
        versions = self._versions
        if versions is not None and (mirrored := versions.of_user(Kind.SECRET, key)) is not None:
            return self._ledger.live(key, mirrored, versions.secret_deleted)
        live = await self._list_user_sessions(key)
        self._ledger.listed(key)
        return sorted(live)

    async def _list_user_sessions(self, key: str) -> list[LiveSession]:
        """The user's sessions straight from the API (only while the watch is down)."""
        live: list[LiveSession] = []
        selector = naming.user_key_session_selector(key)
        async for items in pages(lambda token: self._kube.list(
                Kind.SECRET, self._namespace, selector, SWEEP_PAGE_SIZE, token)):
            for item in items:
                name = naming.metadata_field(item, "name")
                if name is not None and naming.is_managed(item):
                    live.append((naming.session_started(item), name,
                                 naming.metadata_field(item, "uid")))
        return live

    def _secret(self, session_id: str, user: UserRef, started: dt.datetime,
                expires: dt.datetime) -> Obj:
        labels = naming.user_labels(user.username, self._namespace) | {
            naming.SESSION_LABEL: "true"}
        annotations = {naming.USERNAME_ANNOTATION: user.username,
                       naming.STARTED_ANNOTATION: started.strftime(naming.STARTED_FORMAT),
                       naming.EXPIRES_ANNOTATION: wire.format_time(expires)}
        if user.grants:
            labels[naming.ELEVATED_LABEL] = "true"
            annotations[naming.ELEVATIONS_ANNOTATION] = ",".join(
                sorted({g.id for g in user.grants}))
        return {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {
                "name": naming.session_secret_name(session_id),
                "namespace": self._namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount",
                                     "name": user.service_account, "uid": user.uid}],
            },
        }

    async def end(self, secret_name: str, secret_uid: str | None) -> bool:
        """Delete a session's Secret if it is ours; False if it was already gone.

        `secret_uid` is the uid a reviewed token is bound to (logout): the apiserver has
        tied that token to exactly this Secret, so it is deleted even if its labels were
        edited by hand; leaving it would leave the token working after the logout said it
        ended. Without a uid (a login undoing itself), only a Secret labelled ours is."""
        if not secret_name.startswith(naming.SESSION_PREFIX):
            return False
        try:
            secret = await self._kube.read(Kind.SECRET, secret_name, self._namespace)
        except NotFound:
            return False
        uid = naming.metadata_field(secret, "uid")
        if secret_uid is not None:
            if uid != secret_uid:
                return False
        elif not naming.is_managed(secret):
            return False
        return await self._end_one(naming.label(secret, naming.USER_LABEL), secret_name, uid)

    async def _end_one(self, key: str | None, name: str, uid: str | None) -> bool:
        """Delete a session Secret of user `key` under their lock and note it in the ledger,
        so that their cap stops counting it at once; `key` None (a Secret relabelled by hand:
        no cap counts it) only deletes it. False if it was gone."""
        if key is None:
            try:
                await self._kube.delete(Kind.SECRET, name, self._namespace, uid=uid)
            except (NotFound, Conflict):
                return False
            return True
        async with self._locks.hold(key):
            return await self._delete(key, name, uid)

    async def end_elevated(self, username: str, request_id: str) -> int:
        """End the user's sessions minted during elevation `request_id` (the ids in
        `naming.ELEVATIONS_ANNOTATION`); returns how many. Listed from the API, not the
        mirror, which may not show a session minted a moment ago."""
        key = naming.user_key(username, self._namespace)
        ending: list[tuple[str, str | None]] = []
        selector = f"{naming.user_key_session_selector(key)},{naming.ELEVATED_LABEL}=true"
        # A user has at most maxSessionsPerUser sessions: a page at most, usually empty.
        async for items in pages(lambda token: self._kube.list(
                Kind.SECRET, self._namespace, selector, SWEEP_PAGE_SIZE, token)):
            for item in items:
                name = naming.metadata_field(item, "name")
                ids = (naming.annotation(item, naming.ELEVATIONS_ANNOTATION) or "").split(",")
                if name is not None and naming.is_managed(item) and request_id in ids:
                    ending.append((name, naming.metadata_field(item, "uid")))
        ended = 0
        for name, uid in ending:
            ended += await self._end_one(key, name, uid)
        return ended

    async def sweep(self) -> int:
        """Delete session Secrets whose tokens have expired, then end the oldest sessions of
        users over the cap (left by a crash or by concurrent replicas); returns how many."""
        now = self._clock()
        expired: list[tuple[str | None, str, str | None]] = []
        live_per_user: dict[str, int] = {}
        selector = naming.session_selector()
        # List everything first: deleting while paging is asking for trouble.
        async for items in pages(lambda token: self._kube.list(
                Kind.SECRET, self._namespace, selector, SWEEP_PAGE_SIZE, token)):
            for item in items:
                name = naming.metadata_field(item, "name")
                if name is None or not naming.is_managed(item):
                    continue
                key = naming.label(item, naming.USER_LABEL)
                if self._expired(item, now):
                    expired.append((key, name, naming.metadata_field(item, "uid")))
                elif key is not None:
                    live_per_user[key] = live_per_user.get(key, 0) + 1
        deleted = 0
        for key, name, uid in expired:
            deleted += await self._end_one(key, name, uid)
        trimmed = 0
        for key, count in live_per_user.items():
            if count > self._max_per_user:
                trimmed += await self._trim(key)
        if trimmed:
            log.warning("session sweep: ended %d session(s) of users over maxSessionsPerUser "
                        "(%d)", trimmed, self._max_per_user)
        return deleted + trimmed

    async def _trim(self, key: str) -> int:
        """End user `key`'s oldest sessions beyond the cap, as this replica sees them now."""
        async with self._locks.hold(key):
            live = await self._live(key)
            ended = 0
            for _, name, uid in live[:max(0, len(live) - self._max_per_user)]:
                ended += await self._delete(key, name, uid)
            return ended

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
