"""One lock per user, held only while that user has a request in flight.

Why per user and not striped: a fixed set of stripes serializes unrelated
users who happen to hash alike, so one user's storm of logins would stall
others. Why refcounted: a lock per user ever seen would grow without bound;
here an entry exists only while some task holds or waits for it, so the table
is bounded by the requests in flight (`maxConcurrentRequests`).

The lock is reentrant within one asyncio task, so a caller may hold it across
several steps (reconcile the user's objects, make room, start the session)
that each also take it on their own.

At most `max_per_key` tasks hold or wait for one key's lock; the next gets
429 at once. Without that bound, one identity's storm of logins (a leaked
token replayed, a fleet of CI jobs as one user) would queue here holding
request slots until every slot was theirs, and everyone else got 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pinniped_concierge.errors import Reason, Unavailable


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Tasks holding or waiting for the lock; the entry goes when this reaches 0.
    users: int = 0
    owner: asyncio.Task[object] | None = None
    depth: int = 0


class UserLocks:
    """Per-key asyncio locks, created on first use and dropped when nobody holds or waits."""

    def __init__(self, max_per_key: int | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        self._max_per_key = max_per_key

    def __len__(self) -> int:
        """Keys currently held or waited for (what bounds the table)."""
        return len(self._entries)

    def held(self, key: str) -> bool:
        """Whether the current task holds the lock for `key`."""
        entry = self._entries.get(key)
        return entry is not None and entry.owner is asyncio.current_task()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        task = asyncio.current_task()
        entry = self._entries.get(key)
        if entry is not None and task is not None and entry.owner is task:
            entry.depth += 1  # re-entered by the task that holds it
            try:
                yield
            finally:
                entry.depth -= 1
            return
        if entry is None:
            entry = self._entries[key] = _Entry()
        if self._max_per_key is not None and entry.users >= self._max_per_key:
            raise Unavailable(Reason.RATE_LIMITED, "too many requests for this user at once; "
                              "retry after 1 s (Retry-After)", 1, http_status=429)
        entry.users += 1
        try:
            async with entry.lock:
                entry.owner, entry.depth = task, 1
                try:
                    yield
                finally:
                    entry.owner, entry.depth = None, 0
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]
