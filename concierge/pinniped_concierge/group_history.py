"""Which groups a login gets, given what the user's ClusterRole says about the past.

The ClusterRole allows impersonating exactly one set of groups for all of a
user's credentials, and it records (`naming.GROUPS_ISSUED_AT_ANNOTATION`) the
`iat` of the ID token that set them. An ID token stays valid for a while
after the IdP has changed the user's groups, and the CLI reuses its cached
one, so logins do not arrive in the order their tokens were issued. Hence:

- a token issued at or after the recorded time speaks for the present: the
  role's groups become the token's groups (widened or narrowed);
- an older token (or one without `iat`, which counts as oldest) speaks for
  the past: it changes nothing in the role, and its login gets only the
  groups that are both in the token and in the role. A removed group can
  therefore never come back from a replayed token, and a group added since
  is not taken away from the user's newer credentials by a laptop still
  holding an old token (which would make the role flap between the two).

The recorded time advances with a newer token of the same groups only when
the role is written anyway (a change of groups, or the hourly last-login
write, `LAST_LOGIN_INTERVAL_SECONDS`), never with a write of its own. The
hole that leaves: if the IdP added a group and removed it again after the
last recorded time, a token issued in between, not yet presented, can still
widen the role (until a login with a newer token of other groups narrows it
again, or the token expires). It is at most the last-login interval wide.

Equal times count as the present: two tokens issued within the same second
with different groups are not told apart, and the later login wins.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pinniped_apis import rfc3339, wire
from pinniped_concierge import naming

#: "Last seen" is written at most this often per user; so is the recorded time advanced.
LAST_LOGIN_INTERVAL_SECONDS = 3600


@dataclass(frozen=True)
class RoleRecord:
    """What a user's ClusterRole says: the groups it allows and the two times it records."""

    groups: frozenset[str]
    #: `iat` (whole seconds) of the token that last set `groups`; None: nothing recorded.
    groups_issued_at: int | None
    #: When the user was last seen logging in (Unix seconds); None: never recorded.
    last_login_at: float | None

    @classmethod
    def of(cls, role: Mapping[str, object], groups: Sequence[str]) -> RoleRecord:
        """Read the record from a ClusterRole of ours whose rules allow `groups`.

        An unreadable time counts as none recorded: only someone who may edit
        ClusterRoles can make it so, and they could edit the rules themselves.
        """
        issued = _timestamp(naming.annotation(role, naming.GROUPS_ISSUED_AT_ANNOTATION))
        seen = _timestamp(naming.annotation(role, naming.LAST_LOGIN_ANNOTATION))
        return cls(frozenset(groups), int(issued) if issued is not None else None, seen)

    def last_login_due(self, now: float) -> bool:
        """Whether a login now should (re)write "last seen" (also when it is in the future)."""
        return (self.last_login_at is None
                or abs(now - self.last_login_at) >= LAST_LOGIN_INTERVAL_SECONDS)


@dataclass(frozen=True)
class Grant:
    """The outcome of one login for the user's groups."""

    #: What this login may impersonate, in the token's order.
    groups: tuple[str, ...]
    #: Groups in the token that this login does not get (the token is older than the role's).
    withheld: tuple[str, ...]
    #: What the role must allow after this login.
    role_groups: frozenset[str]
    #: The time to record when the role is written.
    groups_issued_at: int | None

    def changes(self, record: RoleRecord | None) -> bool:
        """Whether the role's groups must be written for this login."""
        return record is None or self.role_groups != record.groups


def grant(token_groups: Sequence[str], issued_at: float | None,
          record: RoleRecord | None) -> Grant:
    """The groups a login with these token groups and `iat` gets; `record` None: a new role."""
    iat = None if issued_at is None or not math.isfinite(issued_at) else math.floor(issued_at)
    recorded = record.groups_issued_at if record is not None else None
    if record is None or recorded is None or (iat is not None and iat >= recorded):
        newest = iat if recorded is None or (iat is not None and iat > recorded) else recorded
        return Grant(tuple(token_groups), (), frozenset(token_groups), newest)
    allowed = record.groups
    return Grant(tuple(g for g in token_groups if g in allowed),
                 tuple(g for g in token_groups if g not in allowed), allowed, recorded)


def role_annotations(grant: Grant, now: float) -> dict[str, str]:
    """The ClusterRole annotations a write for this login carries (besides the username)."""
    written = {naming.LAST_LOGIN_ANNOTATION: _format(now)}
    if grant.groups_issued_at is not None:
        written[naming.GROUPS_ISSUED_AT_ANNOTATION] = _format(grant.groups_issued_at)
    return written


def _format(when: float) -> str:
    return wire.format_time(dt.datetime.fromtimestamp(when, dt.UTC))


def _timestamp(value: str | None) -> float | None:
    parsed = rfc3339.parse_time(value)
    return parsed.timestamp() if parsed is not None else None
