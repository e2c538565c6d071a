"""The session ledger keeps notes only while the mirror lacks them: its memory is what lags."""

from __future__ import annotations

from localenv.fixtures_concierge import ManualClock
from pinniped_concierge.object_watch import Seen
from pinniped_concierge.session_ledger import SessionLedger


def test_a_user_whose_writes_the_mirror_shows_leaves_the_ledger(clock: ManualClock) -> None:
    ledger = SessionLedger(monotonic=clock, pending_seconds=60)
    ledger.created("u", ("2024-01-01T00:00:01Z", "s1", "uid-s1"))
    assert len(ledger) == 1
    mirrored = {"s1": Seen("1", "uid-s1", "u", "2024-01-01T00:00:01Z")}
    assert [name for _, name, _ in ledger.live("u", mirrored)] == ["s1"]
    assert len(ledger) == 0  # nothing left to correct: the note is gone, and so is the user
