"""A TokenCredentialRequest, start to finish: ID token in, cluster credential out.

    verify the ID token (the named authenticator)  ->  claims
    map claims to an identity (prefixes, no system:) ->  username, groups
    refuse a revoked user's older tokens             ->  (`revocations`, from memory)
    make the user's objects match that identity      ->  ServiceAccount (cached), the
                                                        groups granted
    start a session                                  ->  bound token
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
and the user's active elevations add theirs (`userobjects.ElevationInput`).
They are read under the user's lock, just before the role is decided, so the
role reflects the elevations as they stand then. Until the policies are
known, every login is refused (503): a login cannot tell which of its
token's groups to withhold.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from pinniped_apis import wire
from pinniped_concierge import naming
from pinniped_concierge.audit import AuditEvent
from pinniped_concierge.authenticator_set import Authenticator, AuthenticatorSet, TokenVerifier
from pinniped_concierge.elevation_store import ElevationStore
from pinniped_concierge.errors import Reason, Rejected, ServerError, Unavailable
from pinniped_concierge.kubeapi import Conflict
from pinniped_concierge.naming import session_secret_name
from pinniped_concierge.ratelimit import RateLimiter
from pinniped_concierge.revocations import RevocationCheck
from pinniped_concierge.sessions import ServiceAccountGone, Session, Sessions
from pinniped_concierge.userobjects import ElevationInput, UserObjects

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

        session = await self._start_session(identity, claims)
        event.session = session.id
        # What the session was granted: a token older than the one that last set the
        # user's groups gets fewer (`group_history`), and the audit line says which.
        granted = session.user.identity
        event.groups = granted.groups
        event.extra.update(session.user.audit_fields())
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

    async def _start_session(self, identity: wire.Identity,
                             claims: Mapping[str, object]) -> Session:
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
                return await self._sessions.start(user)
            except ServiceAccountGone:
                # Our cache outlived the ServiceAccount: rebuild the objects and try once more.
                self._user_objects.forget(identity.username)
                user = await self._user_objects.ensure(identity, issued_at, elevation)
                return await self._sessions.start(user)

    async def _elevation(self, username: str) -> ElevationInput | None:
        """The governed groups and the user's elevations now (raises `Unavailable` while the
        policies are unknown)."""
        if self._elevations is None:
            return None
        now = self._clock()
        return ElevationInput(await self._elevations.governed(),
                              await self._elevations.active_for(username, now),
                              await self._elevations.open_for(username, now))


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


#: Users whose login rate is remembered at once (the least recently seen are forgotten).
MAX_TRACKED_USERS = 10_000
#: However small `maxSessionsPerUser` is, a person may log in this many times at once.
MIN_LOGIN_BURST = 10
