"""One cached cluster credential as JSON: the entry both credential cache files hold.

An entry is ``{"token": "...", "expirationTimestamp": "2024-01-01T00:00:00Z",
"identity": {"username": "...", "groups": ["..."]}}``, sealed whole in the
sealed file and as it is in the runtime directory's. While the user has an
elevation pending or active (`pinniped_apis.elevation`), it also holds
``"elevation": {"groups": [...]}``: the groups of the identity an approved
elevation grants, and the sign that each use asks the concierge first
(`pinniped_cli.elevation_check`). Entries without it (all of those written
before) are read as they always were. Reading one needs no
`datetime`: the cached path (`pinniped_cli.cached_path`) compares the
timestamp as text, which is exact for the one form pinniped writes (UTC,
whole seconds, four-digit year: text order is time order), and leaves any
other form to the full command, which parses it.
"""

from __future__ import annotations

import time

#: The kind of both credential cache files, and their field holding the entries
#: (`pinniped_cli.map_file`).
KIND, FIELD = "CredentialCache", "credentials"
#: Both files' name (in the runtime directory, and in the config directory).
FILE_NAME = "credentials.json"
#: Hand out a cached credential only if it outlives this margin, so a kubectl
#: command that starts now does not see it expire halfway.
MIN_REMAINING_SECONDS = 60
#: The margin for a credential with elevated groups (`min_remaining_seconds` says why).
ELEVATED_MIN_REMAINING_SECONDS = 5
#: The form `pinniped_apis.rfc3339.format_time` writes, for `time.strftime`.
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DIGITS = (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18)
_PUNCTUATION = {4: "-", 7: "-", 10: "T", 13: ":", 16: ":", 19: "Z"}
#: The field of an entry the plugin checks before handing it out.
ELEVATION = "elevation"


def entry(token: str, expiration_timestamp: str, username: str, groups: tuple[str, ...],
          elevated: tuple[str, ...] | None = None) -> dict[str, object]:
    """An entry; with `elevated` (not None), one the plugin checks before each use."""
    value: dict[str, object] = {"token": token, "expirationTimestamp": expiration_timestamp,
                                "identity": {"username": username, "groups": list(groups)}}
    if elevated is not None:
        value[ELEVATION] = {"groups": list(elevated)}
    return value


def fields(value: object
           ) -> tuple[str, str, str, tuple[str, ...], tuple[str, ...] | None] | None:
    """Token, expiration timestamp (as written), username, groups and elevation hint's groups
    (None without a hint) of an entry, or None for anything malformed (never an exception: a
    bad entry is a cache miss)."""
    if not isinstance(value, dict):
        return None
    token, expiration, identity = (value.get("token"), value.get("expirationTimestamp"),
                                   value.get("identity"))
    if not isinstance(token, str) or not token or not isinstance(expiration, str) \
            or not isinstance(identity, dict):
        return None
    username, groups = identity.get("username"), identity.get("groups", [])
    if not isinstance(username, str) or not username or not isinstance(groups, list) \
            or not all(isinstance(g, str) for g in groups):
        return None
    elevated = _elevated_groups(value)
    if ELEVATION in value and elevated is None:
        return None
    return token, expiration, username, tuple(groups), elevated


def _elevated_groups(value: dict[str, object]) -> tuple[str, ...] | None:
    """The elevation hint's groups of an entry, or None when it has none or a malformed one."""
    hint = value.get(ELEVATION)
    groups = hint.get("groups", []) if isinstance(hint, dict) else None
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        return None
    return tuple(groups)


def min_remaining_seconds(elevated: tuple[str, ...] | None) -> int:
    """How long a credential whose elevation hint has the groups `elevated` (None: no hint)
    must still last to be handed out.

    The concierge ends a credential with elevated groups no later than the
    elevation (its session ends then, whatever the TTL), so in an elevation's
    last minute every new login gets a credential that also ends within the
    minute: with the usual 60 s margin each kubectl call would be a miss and a
    full login (two API writes at the concierge, an IdP refresh once the ID
    token has expired, another session for the user), all of a short
    elevation too, and nothing gained: the margin cannot make the access last
    longer than the elevation. Such a credential is checked against the
    concierge's state on each use anyway (`pinniped_cli.elevation_check`), and
    when it does expire during a command, client-go sees its
    expirationTimestamp pass (or gets a 401) and runs the plugin again, which
    then logs in. So it is handed out until a few seconds before its end, the
    few covering this call and clock skew. The one cost: when the TTL, not the
    elevation, ends such a credential, a long command may log in halfway
    rather than before it starts. Without elevated groups (no hint, or only
    something pending) the expiry is the TTL's, and the usual margin holds.
    """
    return ELEVATED_MIN_REMAINING_SECONDS if elevated else MIN_REMAINING_SECONDS


def is_canonical(timestamp: str) -> bool:
    """Whether `timestamp` has exactly the form pinniped writes (`TIME_FORMAT`)."""
    return (len(timestamp) == 20 and timestamp.isascii()
            and all(timestamp[i].isdigit() for i in _DIGITS)
            and all(timestamp[i] == c for i, c in _PUNCTUATION.items()))


def lasts_until(timestamp: str, when: float) -> bool:
    """Whether a canonical `timestamp` is at or after the Unix time `when`.

    The timestamp is in whole seconds, so it is at or after `when` exactly when
    it is at or after `when` rounded up.
    """
    return timestamp >= time.strftime(TIME_FORMAT, time.gmtime(-(-when // 1)))
