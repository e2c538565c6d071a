"""Revoked users: the markers `revoke-user` leaves, and the login's check against them.

Deleting a user's objects and sessions (`revoke_user`) ends the credentials
they hold, but not the ID tokens and refresh tokens on their laptops: the
next login would make everything again. So a revocation also leaves a
marker, and from then on a login of that user is refused (`USER_REVOKED`)
unless the person authenticated at the IdP after it. "Authenticated" is the
token's `auth_time` when it has one, because a refresh keeps the original
`auth_time`: a refresh token taken with a laptop cannot undo a revocation.
Without `auth_time` it is `iat`, which a refresh does renew, so there only
the IdP ending the grant helps; a token with neither is refused outright.
A token authenticated up to `clockSkewSeconds` after the marker was made is
refused too: the IdP's clock may run ahead of the apiserver's, and a token
from just before the revocation must not pass for one from after it.

The marker is an Opaque Secret without data in the concierge's namespace,
named `pinniped-revoked-<user key>-<random>`, labelled like the user's
objects plus `concierge.pinniped.dev/revoked: "true"`, with the username and
the time in annotations (for people). The time that counts is the Secret's
`creationTimestamp`, which the apiserver sets: the clock of whatever machine
ran `revoke-user` does not matter. A new revocation of the same user makes a
new marker (and removes the older ones), so the time only ever moves
forward; a marker is never rewritten in place, which would need `update` on
Secrets and would leave a moment with none. Secrets need no RBAC beyond
what sessions already have. Markers are made only by administrators, so
there are few; the leader deletes those older than
`revocationRetentionSeconds` (`sweep_expired`).

Logins learn about markers without an API call: `RevocationMirror` is fed
by a list-then-watch (`object_watch.ListWatch`) of the marker label. Only
while that watch is down does a login list the user's markers itself (one
call). A marker counts only when it is ours in every respect (managed-by,
this namespace, the revoked label, and the user label, name and username
annotation all agreeing), so a stray Secret cannot refuse someone else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from pinniped_apis import rfc3339, wire
from pinniped_concierge import naming
from pinniped_concierge.errors import Reason, Rejected
from pinniped_concierge.kubeapi import Conflict, Kind, KubeAPI, NotFound, Obj, pages
from pinniped_concierge.object_watch import Mirror, WatchSource, new_watch_client

log = logging.getLogger("concierge.revocations")

MARKER_PREFIX = "pinniped-revoked-"
REVOKED_LABEL = "concierge.pinniped.dev/revoked"
#: On a marker: when `revoke-user` ran, by its own clock (RFC 3339; for people).
REVOKED_AT_ANNOTATION = "concierge.pinniped.dev/revoked-at"
#: On a marker: who ran it (the local user name; for people).
REVOKED_BY_ANNOTATION = "concierge.pinniped.dev/revoked-by"
PAGE_SIZE = 250


def marker_selector(namespace: str) -> str:
    """Every revocation marker of the concierge in `namespace`."""
    return f"{naming.owned_selector(namespace)},{REVOKED_LABEL}=true"


def user_marker_selector(username: str, namespace: str) -> str:
    key = naming.user_key(username, namespace)
    return f"{marker_selector(namespace)},{naming.USER_LABEL}={key}"


def new_marker(username: str, namespace: str, now: float, revoked_by: str) -> Obj:
    key = naming.user_key(username, namespace)
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": f"{MARKER_PREFIX}{key}-{secrets.token_hex(4)}",
            "namespace": namespace,
            "labels": naming.user_labels(username, namespace) | {REVOKED_LABEL: "true"},
            "annotations": {
                naming.USERNAME_ANNOTATION: username,
                REVOKED_AT_ANNOTATION: wire.format_time(dt.datetime.fromtimestamp(now, dt.UTC)),
                REVOKED_BY_ANNOTATION: revoked_by[:253],
            },
        },
    }


#: (user key, marker name, revoked at), as `read_marker` reads it.
Marker = tuple[str, str, float]


def read_marker(obj: Mapping[str, Any], namespace: str) -> Marker | None:
    """(user key, name, revoked at) of a marker that is ours in every respect, else None.

    The time is the apiserver's `creationTimestamp`; a marker without one
    (no apiserver leaves it out) counts from the beginning of time onwards,
    i.e. refuses every token of the user until it is deleted.
    """
    name = naming.metadata_field(obj, "name")
    username = naming.annotation(obj, naming.USERNAME_ANNOTATION)
    if name is None or username is None or not naming.is_owned(obj, namespace):
        return None
    key = naming.user_key(username, namespace)
    if (naming.label(obj, REVOKED_LABEL) != "true" or naming.label(obj, naming.USER_LABEL) != key
            or not name.startswith(f"{MARKER_PREFIX}{key}-")):
        return None
    created = rfc3339.parse_time(naming.metadata_field(obj, "creationTimestamp"))
    return key, name, created.timestamp() if created is not None else math.inf


def authenticated_at(claims: Mapping[str, object]) -> float | None:
    """When the person last authenticated at the IdP: `auth_time`, else `iat`, else None.

    A claim that is there but is not a finite number makes the time unknown
    (None), so such a token is refused for a revoked user.
    """
    for claim in ("auth_time", "iat"):
        value = claims.get(claim)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value) if math.isfinite(value) else None
    return None


class RevocationMirror(Mirror[Marker]):
    """The markers, fed by a watch, grouped by user key for the login's lookup."""

    def __init__(self, namespace: str) -> None:
        super().__init__(lambda obj: read_marker(obj, namespace), group_by=lambda m: m[0])
        self._namespace = namespace

    def lookup(self, username: str) -> tuple[bool, float | None]:
        """(known, revoked at): known is False while the watch is down."""
        markers = self.group(naming.user_key(username, self._namespace))
        if markers is None:
            return False, None
        return True, max((m[2] for m in markers), default=None)

    def watch_source(self, api_client: Any) -> WatchSource:
        """The list-then-watch of the markers that feeds this mirror."""
        from kubernetes import client

        core = client.CoreV1Api(new_watch_client(api_client))
        return WatchSource(
            "revocation markers", core.list_namespaced_secret, {"namespace": self._namespace},
            marker_selector(self._namespace), self,
            meanwhile="each login lists its user's revocation markers until it is back")


class RevocationCheck:
    """The login's gate: is this user revoked, and does this token predate it?"""

    def __init__(self, kube: KubeAPI, namespace: str, mirror: RevocationMirror | None,
                 clock_skew_seconds: float) -> None:
        self._kube = kube
        self._namespace = namespace
        self._mirror = mirror
        self._skew = clock_skew_seconds

    async def revoked_at(self, username: str) -> float | None:
        """The user's latest revocation, from the mirror, or (watch down) from one list."""
        if self._mirror is not None:
            known, revoked_at = self._mirror.lookup(username)
            if known:
                return revoked_at
        items, _ = await self._kube.list(Kind.SECRET, self._namespace,
                                         user_marker_selector(username, self._namespace),
                                         PAGE_SIZE)
        times = [m[2] for item in items if (m := read_marker(item, self._namespace))]
        return max(times, default=None)

    def _refused(self, revoked_at: float | None, claims: Mapping[str, object]) -> str | None:
        if revoked_at is None:
            return None
        authenticated = authenticated_at(claims)
        if authenticated is None:
            return "the user was revoked, and the token has neither auth_time nor iat"
        if authenticated <= revoked_at + self._skew:
            return (f"the user was revoked at {_when(revoked_at)}; the token's authentication "
                    f"({_when(authenticated)}) predates it: sign in at the IdP again")
        return None

    async def check(self, username: str, claims: Mapping[str, object]) -> None:
        """Raise `Rejected(USER_REVOKED)` if the token's authentication predates a revocation."""
        why = self._refused(await self.revoked_at(username), claims)
        if why is not None:
            raise Rejected(Reason.USER_REVOKED, why)

    async def revoked_meanwhile(self, username: str, claims: Mapping[str, object]) -> bool:
        """The same question again, later in a login: a revocation that landed while the
        login was under way must not leave it a credential or objects. From the mirror, or,
        while its watch is down, from one more list (only then does it cost a call)."""
        return self._refused(await self.revoked_at(username), claims) is not None


def _when(timestamp: float) -> str:
    if not math.isfinite(timestamp):
        return "an unknown time"
    return wire.format_time(dt.datetime.fromtimestamp(timestamp, dt.UTC))


async def sweep_expired(kube: KubeAPI, namespace: str, retention_seconds: float,
                        clock: Callable[[], float] = time.time) -> int:
    """Delete markers older than `retention_seconds`; returns how many (the leader runs it)."""
    expired: list[tuple[str, str | None]] = []
    now = clock()
    selector = marker_selector(namespace)
    async for items in pages(lambda token: kube.list(  # list everything first, then delete
            Kind.SECRET, namespace, selector, PAGE_SIZE, token)):
        for item in items:
            marker = read_marker(item, namespace)
            if marker is not None and marker[2] + retention_seconds < now:
                expired.append((marker[1], naming.metadata_field(item, "uid")))
    deleted = 0
    for name, uid in expired:
        with contextlib.suppress(NotFound, Conflict):
            await kube.delete(Kind.SECRET, name, namespace, uid=uid)
            deleted += 1
    if deleted:
        log.info("deleted %d revocation marker(s) older than revocationRetentionSeconds (%d s)",
                 deleted, retention_seconds)
    return deleted


