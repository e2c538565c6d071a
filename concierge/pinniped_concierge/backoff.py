"""How long a background loop waits before trying again after failures in a row.

Short at first, so that a blip is over in a second, then longer, so that an
apiserver or IdP that is down is not hammered; capped, so that recovery is
noticed within the last delay.
"""

from __future__ import annotations

from collections.abc import Sequence

DELAYS_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


def delay(failures: int, delays: Sequence[float] = DELAYS_SECONDS) -> float:
    """The wait after `failures` failures in a row (0: the first one just happened)."""
    return delays[min(failures, len(delays) - 1)]
