"""RFC 3339 timestamps for the cached path, without importing `concierge.wire`.

`concierge.wire` is the one place wire types live, but it builds dataclasses,
and importing `dataclasses` (with `inspect`) costs more than everything else
the cached kubectl path does. These two functions match `wire.format_time` and
`wire.parse_time` exactly (a unit test holds them to it).
"""

from __future__ import annotations

import datetime as dt


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> dt.datetime | None:
    """The UTC time in `value`, or None when it is not an RFC 3339 timestamp with a zone."""
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(dt.UTC)
