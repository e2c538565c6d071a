"""Session Secrets this replica created or deleted that the watch may not show yet.

Why: the per-user session cap counts a user's sessions from the watch
mirror (`object_watch`), which lags the writes by a little; under a storm of
logins by one user, by more. Counting from the mirror alone, every login in
that window sees the same stale number: the user ends up far over the cap,
and then every login deletes the same oversized set again. So each replica
notes what it has just written itself, and the count is the mirror plus
what this replica created and minus what it deleted, until the mirror shows
the same. Together with the per-user lock around counting and creating,
the count is exact on one replica. Other replicas' writes are known only
through the mirror; the sweeper trims what that lets through.

A created Secret's note goes once the mirror shows it, or once the watch
reports it deleted (another replica may end it before we look again: counted
until the note expired, it cost the user an ordinary session at the cap). A
deleted one's note stays for `PENDING_SECONDS`, because the mirror may not
even have shown the Secret yet when it was deleted (its ADDED event still to
come). Notes older than that are dropped in any case: far longer than a
healthy watch lags, and the memory they take is bounded by the logins of
that window.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pinniped_concierge.object_watch import Seen

PENDING_SECONDS = 60.0
#: Users with notes at once; beyond it the least recently touched are forgotten.
MAX_TRACKED_USERS = 100_000

#: One live session as the cap sees it: (when it started, Secret name, uid); sorts oldest
#: first (`naming.session_started`).
LiveSession = tuple[str, str, str | None]


@dataclass
class _Notes:
    created: dict[str, tuple[LiveSession, float]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    touched: float = 0.0


class SessionLedger:
    """Per user (by `naming.user_key`): this replica's session writes the mirror may lack."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 pending_seconds: float = PENDING_SECONDS) -> None:
        self._monotonic = monotonic
        self._pending = pending_seconds
        self._users: OrderedDict[str, _Notes] = OrderedDict()

    def __len__(self) -> int:
        """Users with notes (what bounds the memory)."""
        return len(self._users)

    def created(self, user: str, session: LiveSession) -> None:
        notes = self._touch(user)
        notes.created[session[1]] = (session, notes.touched)

    def deleted(self, user: str, name: str) -> None:
        notes = self._touch(user)
        notes.created.pop(name, None)
        notes.deleted[name] = notes.touched

    def listed(self, user: str) -> None:
        """The user's sessions were just listed from the API: that list is the truth."""
        self._users.pop(user, None)

    def live(self, user: str, mirrored: Mapping[str, Seen],
             deleted: Callable[[str, str | None], bool] = lambda _name, _uid: False
             ) -> list[LiveSession]:
        """The user's live sessions, oldest first: the mirror's, corrected by our notes.
        `deleted(name, uid)` says whether the watch has reported that Secret deleted (by
        anyone, e.g. another replica): one we created that has come and gone is not live."""
        sessions = {name: (seen.created, name, seen.uid) for name, seen in mirrored.items()}
        notes = self._users.get(user)
        if notes is None:
            return sorted(sessions.values())
        self._expire(notes, self._monotonic())
        for name in notes.deleted:
            sessions.pop(name, None)
        for name, (session, _) in list(notes.created.items()):
            if name in mirrored or deleted(name, session[2]):
                del notes.created[name]  # the watch has caught up with this one
            elif name not in notes.deleted:
                sessions[name] = session
        if not notes.created and not notes.deleted:
            self._users.pop(user, None)
        return sorted(sessions.values())

    def _touch(self, user: str) -> _Notes:
        now = self._monotonic()
        notes = self._users.get(user)
        if notes is None:
            notes = self._users[user] = _Notes()
        notes.touched = now
        self._expire(notes, now)
        self._users.move_to_end(user)
        # The front was touched longest ago: drop users whose notes have all expired.
        while self._users:
            first_user, first = next(iter(self._users.items()))
            if first is notes or (now - first.touched < self._pending
                                  and len(self._users) <= MAX_TRACKED_USERS):
                break
            del self._users[first_user]
        return notes

    def _expire(self, notes: _Notes, now: float) -> None:
        for name in [n for n, (_, at) in notes.created.items() if now - at >= self._pending]:
            del notes.created[name]
        for name in [n for n, at in notes.deleted.items() if now - at >= self._pending]:
            del notes.deleted[name]
