"""A TokenCredentialRequest, start to finish: ID token in, cluster credential out.

    verify the ID token (the named authenticator)  ->  claims
    map claims to an identity (prefixes, no system:) ->  username, groups
    refuse a revoked user's older tokens             ->  (`revocations`, from memory)
    make the user's objects match that identity      ->  ServiceAccount (cached), the
                                                        groups granted
    start a session                                  ->  bound token
    confirm its elevations from the API              ->  (one ended meanwhile ends it)
    ask the revocation question again                ->  (a revocation meanwhile ends it)

Whatever is learnt along the way is written into the request's audit event,
so a failure late in the chain is still attributed to a user.

The revocation check comes before any user object is touched, so a revoked
user's replayed token cannot make their objects again. It is asked once more
at the end, from memory only: `revoke-user` may have run while this login
was under way (after the first check, before its session existed), and its
deletions would then have been undone by this login; the session is ended
and the login refused instead.

With temporary elevated access (`elevations`, an `elevation_store` read from
memory), the groups ElevationPolicies govern are withheld from the token's,
and the user's active elevations add theirs (`elevation_store.ElevationInput`).
They are read under the user's lock, just before the role is decided, so the
role reflects the elevations as they stand then. Until the policies are
known, every login is refused (503): a login cannot tell which of its
token's groups to withhold.

The store is a mirror, and may be a moment behind: a revoke served by
another replica may not have reached it yet, and this login would then write
the revoked group back into the role after the revoker took it out. So a
login that was granted elevations reads each granting ElevationRequest from
the API once its session exists (`_confirm_elevations`; one GET per grant,
and only such logins pay), and undoes itself if one has ended
(`_undo_elevations`): it ends the session, withdraws the groups no other
active grant covers, and is refused (503, retry after 1 s).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping

from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.authenticator_set import Authenticator, AuthenticatorSet, TokenVerifier
from pinniped_concierge.elevation_store import ElevationInput, ElevationStore, Grant
from pinniped_concierge.errors import Reason, Rejected, ServerError, Unavailable
from pinniped_concierge.kubeapi import Conflict
from pinniped_concierge.naming import session_secret_name
from pinniped_concierge.ratelimit import RateLimiter
from pinniped_concierge.revocations import RevocationCheck
from pinniped_concierge.sessions import ServiceAccountGone, Session, Sessions
from pinniped_concierge.userobjects import UserObjects

__all__ = ["Authenticator", "LoginService", "TokenVerifier"]

log = logging.getLogger("concierge.login")


class LoginService:
    def __init__(self, authenticators: AuthenticatorSet | Mapping[str, Authenticator],
                 user_objects: UserObjects, sessions: Sessions, *,
                 revocations: RevocationCheck | None = None,
                 max_token_age_seconds: float | None = None,
                 user_rate: RateLimiter | None = None,
                 elevations: ElevationStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """Without `revocations` no user is ever refused as revoked (unit tests of the rest).

        `max_token_age_seconds` (the idle clean-up's timeout): an ID token issued longer ago
        is refused. The record that keeps an older token from bringing back a group removed
        at the IdP (`group_history`) lives on the user's ClusterRole, which the idle
        clean-up deletes; a token that outlives it could otherwise widen the role again.
        """
        self._max_token_age = max_token_age_seconds
        #: Logins per user (by `naming.user_key`): each costs writes in etcd and may end one
        #: of the user's older sessions, so one stolen ID token replayed from many addresses
        #: must not churn through them (`per_user_login_rate`).
        self._user_rate = user_rate
        self._clock = clock
        self.authenticator_set = (authenticators if isinstance(authenticators, AuthenticatorSet)
                                  else AuthenticatorSet(authenticators))
        self._user_objects = user_objects
        self._sessions = sessions
        self._revocations = revocations
        #: None: no group is governed (unit tests of the rest).
        self._elevations = elevations

    @property
    def authenticators(self) -> Mapping[str, Authenticator]:
        """The usable ones right now (read-only; the set swaps a new mapping in)."""
        return self.authenticator_set.usable

    async def login(self, request: wire.TokenCredentialRequest,
                    event: AuditEvent) -> wire.ClusterCredential:
        authenticator, why_not = self.authenticator_set.lookup(request.authenticator_name)
        if request.authenticator_kind != wire.JWT_AUTHENTICATOR_KIND:
            authenticator, why_not = None, None
        if authenticator is None:
            if why_not is not None:
                raise Rejected(Reason.AUTHENTICATOR_NOT_READY,
                               f"JWTAuthenticator is not used: {why_not}")
            raise Rejected(Reason.UNKNOWN_AUTHENTICATOR, "no such JWTAuthenticator")

        claims = await authenticator.verifier.verify(request.token)
        identity = authenticator.mapper.map(claims)
        event.username, event.groups = identity.username, identity.groups
        self._refuse_if_too_old(claims)
        self._within_user_rate(identity.username)
        if self._revocations is not None:
            await self._revocations.check(identity.username, claims)

        session = await self._start_session(identity, claims, event)
        granted = session.user.identity
        if await self._revoked_meanwhile(identity.username, claims):
            await self._undo(identity.username, session)
            raise Rejected(Reason.USER_REVOKED, "the user was revoked during this login; "
                           "its session is ended and the objects it made deleted")
        return wire.ClusterCredential(token=session.token, expiration=session.expiration,
                                      identity=granted,
                                      elevated_groups=session.user.elevated_groups,
                                      check_elevation=session.user.check_elevation)

    def _within_user_rate(self, username: str) -> None:
        if self._user_rate is None:
            return
        retry_after = self._user_rate.check(naming.user_key(username, self._user_objects.namespace))
        if retry_after is not None:
            raise Unavailable(Reason.RATE_LIMITED, "too many logins for this user; retry after "
                              f"{retry_after} s (Retry-After)", retry_after, http_status=429)

    def _refuse_if_too_old(self, claims: Mapping[str, object]) -> None:
        issued_at = _issued_at(claims)
        if self._max_token_age is None or issued_at is None:
            return
        age = self._clock() - issued_at
        if age > self._max_token_age:
            raise Rejected(Reason.TOKEN_TOO_OLD, f"issued {int(age)}s ago, more than "
                           f"identityIdleTimeoutSeconds ({int(self._max_token_age)}s)")

    async def _revoked_meanwhile(self, username: str, claims: Mapping[str, object]) -> bool:
        return self._revocations is not None and await self._revocations.revoked_meanwhile(
            username, claims)

    async def _undo(self, username: str, session: Session) -> None:
        """A revocation landed while this login was under way: end its session, and delete
        the objects it may have made again after `revoke-user` deleted them."""
        await self._sessions.end(session_secret_name(session.id), None)
        try:
            await self._user_objects.delete(username)
        except (Conflict, Unavailable, ServerError) as exc:  # the idle clean-up gets them later
            log.warning("could not delete the objects of a user revoked during a login (%s)",
                        type(exc).__name__)

    async def _start_session(self, identity: wire.Identity, claims: Mapping[str, object],
                             event: AuditEvent) -> Session:
        issued_at = _issued_at(claims)
        # One user's logins take turns from the role's decision to the session's Secret, so
        # the session count is exact and the excess is ended once (`sessions`).
        async with self._user_objects.exclusive(identity.username):
            # Asked again under the lock: a login that waited here while `revoke-user` ran
            # must not make the revoked user's objects again.
            if await self._revoked_meanwhile(identity.username, claims):
                raise Rejected(Reason.USER_REVOKED, "the user was revoked while this login "
                               "waited for their earlier ones")
            elevation = await self._elevation(identity.username)
            user = await self._user_objects.ensure(identity, issued_at, elevation)
            try:
                session = await self._sessions.start(user)
            except ServiceAccountGone:
                # Our cache outlived the ServiceAccount: rebuild the objects and try once more.
                self._user_objects.forget(identity.username)
                user = await self._user_objects.ensure(identity, issued_at, elevation)
                session = await self._sessions.start(user)
            event.session = session.id
            # What the session was granted: a token older than the one that last set the
            # user's groups gets fewer (`group_history`), and the audit line says which.
            event.groups = session.user.identity.groups
            event.extra.update(session.user.audit_fields())
            await self._confirm_elevations(session, event)
            return session

    async def _confirm_elevations(self, session: Session, event: AuditEvent) -> None:
        """Read each granting ElevationRequest from the API, now that the role allows its
        group and the session exists; undo the login if one has ended (or cannot be read).

        The grants came from the store's mirror, which may not have seen a revoke yet.
        Why one fresh read afterwards is enough: etcd orders every write, and a GET
        without a resourceVersion is a quorum read. A revoke written before our GET is
        seen by it, and we undo what we made. A revoke written after our GET comes after
        our role write and our session Secret too, and the revoker's own removal of
        access (`ElevationService.remove_access`: read the role, withdraw the group, end
        the sessions naming the request) runs after its revoke write, so it reads our
        role and our session and removes both. Either way nothing this login made
        outlives the elevation. An expiry is the same: `active` is judged now, after
        the writes, and the controller's removal comes after it. We hold the user's lock,
        so no other login of theirs on this replica writes in between.
        """
        grants = session.user.grants
        if not grants or self._elevations is None:
            return
        ended: list[Grant] = []
        unconfirmed = False
        for grant in grants:
            try:
                fresh = await self._elevations.read_fresh(grant.id)
            except (Unavailable, ServerError):  # cannot tell: as if it had ended
                fresh, unconfirmed = None, True
            if (fresh is None or not fresh.active(self._clock())
                    or fresh.spec.group != grant.group
                    or fresh.spec.requester.username != session.user.username):
                ended.append(grant)
        if not ended:
            return
        withdrawn = await self._undo_elevations(session, ended)
        ids = ", ".join(sorted(g.id for g in ended))
        event.extra["elevationsEndedDuringLogin"] = json.dumps(sorted(g.id for g in ended))
        if withdrawn:
            event.extra["groupsWithdrawn"] = json.dumps(withdrawn)
        if unconfirmed:
            raise Unavailable(Reason.KUBERNETES_UNAVAILABLE, "could not confirm that your "
                              f"elevated access ({ids}) is still active (the Kubernetes API "
                              "did not answer), so this login's session was ended; run the "
                              "command again", retry_after_seconds=ENDED_RETRY_AFTER_SECONDS)
        raise Unavailable(Reason.ELEVATION_ENDED, f"your elevated access ({ids}) ended during "
                          "this login, so its session was ended and the group taken back; "
                          "run the command again", retry_after_seconds=ENDED_RETRY_AFTER_SECONDS)

    async def _undo_elevations(self, session: Session, ended: list[Grant]) -> list[str]:
        """End the session and withdraw the ended grants' groups that no other active grant
        covers; returns the groups withdrawn. Failures are logged: the revoker's removal
        and the controller's re-check are behind us."""
        assert self._elevations is not None
        username = session.user.username
        ended_ids = {g.id for g in ended}
        covered = {g.group for g in session.user.grants if g.id not in ended_ids}
        with contextlib.suppress(Unavailable):  # else only this login's confirmed grants
            covered |= {g.group for g in await self._elevations.active_for(username,
                                                                           self._clock())
                        if g.id not in ended_ids}
        withdrawing = sorted({g.group for g in ended} - covered)
        withdrawn = False
        try:
            withdrawn = bool(withdrawing) and await self._user_objects.withdraw(username,
                                                                                withdrawing)
        except (Unavailable, ServerError) as exc:
            log.warning("could not withdraw %s from %s after their elevation ended during a "
                        "login (%s); the elevation controller will", withdrawing, username,
                        type(exc).__name__)
        try:
            await self._sessions.end(session_secret_name(session.id), None)
        except (Unavailable, ServerError) as exc:  # its token was never handed out
            log.warning("could not end the session of a login whose elevation ended "
                        "meanwhile (%s); it expires by itself", type(exc).__name__)
        return withdrawing if withdrawn else []

    async def _elevation(self, username: str) -> ElevationInput | None:
        """The governed groups and the user's elevations now (raises `Unavailable` while the
        policies are unknown)."""
        if self._elevations is None:
            return None
        return await self._elevations.for_login(username, self._clock())


def _issued_at(claims: Mapping[str, object]) -> float | None:
    """The token's `iat`; the verifier has already checked its type and that it is not ahead."""
    iat = claims.get("iat")
    return float(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None


def per_user_login_rate(max_sessions_per_user: int,
                        clock: Callable[[], float] = time.monotonic) -> RateLimiter:
    """A user may start `maxSessionsPerUser` sessions (at least `MIN_LOGIN_BURST`) at once, and a
    tenth of that a second after: far more than every laptop and CI job of one person needs (a
    credential lasts ten minutes), while one replayed ID token that drove 57 logins a second (3
    writes each) from 16 connections gets a tenth of that."""
    burst = max(max_sessions_per_user, MIN_LOGIN_BURST)
    return RateLimiter(burst / 10, burst=burst,
                       max_tracked=MAX_TRACKED_USERS, clock=clock)


#: A login undone because its elevation ended meanwhile: the retry may come at once.
ENDED_RETRY_AFTER_SECONDS = 1
#: Users whose login rate is remembered at once (the least recently seen are forgotten).
MAX_TRACKED_USERS = 10_000
#: However small `maxSessionsPerUser` is, a person may log in this many times at once.
MIN_LOGIN_BURST = 10
