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
annotation), so they do not pile up in the namespace.
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

from concierge import naming, wire
from concierge.errors import Reason, ServerError, Unavailable
from concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj
from concierge.userobjects import UserRef

log = logging.getLogger("concierge.sessions")

SWEEP_PAGE_SIZE = 250


class ServiceAccountGone(Exception):
    """The user's ServiceAccount vanished (TokenRequest said NotFound): reconcile and retry."""


@dataclass(frozen=True)
class Session:
    id: str
    token: str
    expiration: dt.datetime


class Sessions:
    def __init__(self, kube: KubeAPI, namespace: str, ttl_seconds: int,
                 clock_skew_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._kube = kube
        self._namespace = namespace
        self._ttl = ttl_seconds
        self._skew = clock_skew_seconds
        self._clock = clock

    async def start(self, user: UserRef) -> Session:
        """Create the session Secret and mint a token bound to it (two API calls)."""
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
        except NotFound:
            with contextlib.suppress(NotFound, Conflict, Unavailable, ServerError):
                await self._kube.delete(Kind.SECRET, name, self._namespace, uid=secret_uid)
            raise ServiceAccountGone(user.service_account) from None
        status = issued.get("status") or {}
        token = status.get("token")
        if not isinstance(token, str) or not token:
            raise ServerError(Reason.KUBERNETES_ERROR, "TokenRequest returned no token")
        try:
            expiration = wire.parse_time(status.get("expirationTimestamp"),
                                         "status.expirationTimestamp")
        except wire.WireError:
            expiration = expires
        return Session(session_id, token, expiration)

    def _secret(self, session_id: str, user: UserRef, expires: dt.datetime) -> Obj:
        labels = naming.user_labels(user.username) | {naming.SESSION_LABEL: "true"}
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
