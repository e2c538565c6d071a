""""20,000 people who log in once a day": how many users' objects exist at once, and what
that costs an unrelated request, worked out from the scale figure.

A user's objects exist from their first login until they have had no live
session for `identityIdleTimeoutSeconds`; a session lives as long as its
credential (`credentialTTLSeconds`). So a person whose kubectl use fits in
one credential lifetime holds objects for TTL + idle timeout after logging
in. With logins spread evenly over a window of W seconds, Little's law gives
the number present at once: people x (TTL + idle) / W (capped at people).
The cost per user is the least-squares slope of the scale figure's p50
against N.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PEOPLE = 20_000
CREDENTIAL_TTL_SECONDS = 600
IDLE_TIMEOUT_SECONDS = 3600
GOAL_MS = 1.0
OTHER_IDLE_TIMEOUTS = (600, 1800)
#: Login windows: logins spread over a whole day, over an 8-hour working day, and a
#: 9 a.m. storm in which everybody logs in within one hour.
WINDOWS = (("spread over 24 h", 86_400), ("spread over an 8 h working day", 28_800),
           ("all within one hour (9 a.m. storm)", 3_600))


def slope(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y against x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if not spread:
        return mean_y, 0.0
    gradient = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - gradient * mean_x, gradient


def work_out(steps: Sequence[dict[str, Any]], *, people: int = PEOPLE,
             ttl: int = CREDENTIAL_TTL_SECONDS, idle: int = IDLE_TIMEOUT_SECONDS
             ) -> dict[str, Any]:
    fits = {kind: slope([(s["users"], s[f"{kind}_ms"]["median"]) for s in steps])
            for kind in ("unrelated", "impersonating")}
    held = ttl + idle

    def cases_for(held_seconds: int) -> list[dict[str, Any]]:
        found = []
        for label, window in WINDOWS:
            present = min(people, round(people * held_seconds / window))
            added = {kind: round(fit[1] * present, 2) for kind, fit in fits.items()}
            found.append({"logins": label, "window_seconds": window, "users_present": present,
                          "added_p50_ms": added,
                          "verdict": "met" if added["unrelated"] <= GOAL_MS else "missed"})
        return found

    cases = cases_for(held)
    # Without the idle clean-up, everyone who ever logged in keeps their objects.
    everyone = {kind: round(fit[1] * people, 2) for kind, fit in fits.items()}
    return {"people": people, "credential_ttl_seconds": ttl, "idle_timeout_seconds": idle,
            "objects_held_seconds_per_login": held,
            "p50_ms_per_1000_users": {kind: round(fit[1] * 1000, 3)
                                      for kind, fit in fits.items()},
            "p50_ms_at_0_users_fit": {kind: round(fit[0], 2) for kind, fit in fits.items()},
            "cases": cases, "without_idle_cleanup_added_p50_ms": everyone,
            # The same windows with other idle timeouts (the key's range starts at 600 s).
            "other_idle_timeouts": {str(other): cases_for(ttl + other)
                                    for other in OTHER_IDLE_TIMEOUTS if other != idle},
            "goal": f"unrelated requests pay <= {GOAL_MS:g} ms at p50"}
