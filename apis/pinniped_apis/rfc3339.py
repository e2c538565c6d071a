"""RFC 3339 timestamps, the one definition shared by the wire types and the CLI's cached path.

`pinniped_apis.wire` builds dataclasses, and importing `dataclasses` (with
`inspect`) costs more than everything else a cached kubectl call does, so the
CLI's hot path cannot import it for two small functions. They live here
instead, with nothing but `datetime` imported, and `wire` builds its strict,
field-naming parser on top.
"""

from __future__ import annotations

import datetime as dt


def format_time(when: dt.datetime) -> str:
    """RFC 3339 in UTC with a `Z` and whole seconds, the form Kubernetes uses for timestamps."""
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: object) -> dt.datetime | None:
    """The UTC time in `value`, or None unless it is an RFC 3339 timestamp with a time zone.

    None rather than an exception: caches treat a bad timestamp as a miss, and
    `wire.parse_time` turns it into an error naming the field.
    """
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            return None
        return parsed.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # OverflowError: year 9999 at a negative offset
        return None
