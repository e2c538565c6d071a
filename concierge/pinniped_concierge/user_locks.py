"""One lock per user, held only while that user has a request in flight.

Why per user and not striped: a fixed set of stripes serializes unrelated
users who happen to hash alike, so one user's storm of logins would stall
others. Why refcounted: a lock per user ever seen would grow without bound;
here an entry exists only while some task holds or waits for it, so the table
is bounded by the requests in flight (`maxConcurrentRequests`).

The lock is reentrant within one asyncio task, so a caller may hold it across
several steps (reconcile the user's objects, make room, start the session)
that each also take it on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Tasks holding or waiting for the lock; the entry goes when this reaches 0.
    users: int = 0
    owner: asyncio.Task[object] | None = None
    depth: int = 0


class UserLocks:
    """Per-key asyncio locks, created on first use and dropped when nobody holds or waits."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

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
