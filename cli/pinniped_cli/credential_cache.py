"""The cluster-credential cache: the hot path of every kubectl call.

kubectl runs the plugin for each command, so a still-valid credential from
the concierge is kept in a 0600 JSON file, keyed by the login options and the
cluster, and handed back without any network or heavy import. An unreadable
or corrupt file is treated as empty and replaced on the next write: a cache
must never be the reason a login fails. Stdlib only apart from AESGCM, and no
dataclasses (see `pinniped_apis.rfc3339` for why).

Each entry is sealed whole (token, expiry and identity) with `pinniped_cli.sealing`,
so the file holds no token in plain text: a backup, a synced dotfile or an
accidental `cat` shows only ciphertext, while the key stays in the runtime
(memory-backed) directory when there is one. Sealing the identity as well
means nobody can edit whom a cached credential acts as. An entry that does
not open (key lost, say at a reboot, or the entry tampered with or moved) is
a miss, and dropped at the next write; so are entries in plain text from
older versions.

File format (JSON, read and written by `pinniped_cli.sealed_file`)::

    {"apiVersion": "cli.pinniped.dev/v1", "kind": "CredentialCache",
     "credentials": {"<sha256 of key fields>": "aesgcm1:<sealed JSON entry>"}}

where a sealed entry is ``{"token": "...", "expirationTimestamp":
"2024-01-01T00:00:00Z", "identity": {"username": "...", "groups": ["..."]}}``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path

from pinniped_apis.rfc3339 import format_time, parse_time
from pinniped_cli.sealed_file import SealedMapFile
from pinniped_cli.sealing import CacheKey, KeyUnavailable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from pinniped_apis.identity import ClusterCredential, Identity

KIND = "CredentialCache"
#: Hand out a cached credential only if it outlives this margin, so a kubectl
#: command that starts now does not see it expire halfway.
MIN_REMAINING = dt.timedelta(seconds=60)


class Credential:
    """A cluster credential as the CLI keeps it: what `wire.ClusterCredential` carries."""

    __slots__ = ("expiration", "groups", "token", "username")

    def __init__(self, token: str, expiration: dt.datetime, username: str,
                 groups: tuple[str, ...]) -> None:
        self.token = token
        self.expiration = expiration
        self.username = username
        self.groups = groups

    @classmethod
    def from_wire(cls, credential: ClusterCredential) -> Credential:
        return cls(credential.token, credential.expiration, credential.identity.username,
                   tuple(credential.identity.groups))

    def identity(self) -> Identity:
        from pinniped_apis.identity import Identity

        return Identity(username=self.username, groups=self.groups)

    def __repr__(self) -> str:  # never the token
        return (f"Credential(username={self.username!r}, groups={self.groups!r}, "
                f"expiration={format_time(self.expiration)!r})")


def cache_key(fields: Mapping[str, object]) -> str:
    """A stable digest of what identifies a credential (login options plus cluster)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class CredentialCache:
    def __init__(self, path: Path, key: CacheKey, warn: Callable[[str], None],
                 tighten_dir: bool = False) -> None:
        self.path = path
        self.key = key
        self._warn = warn
        self._file = SealedMapFile(
            path, kind=KIND, field="credentials", key=key, warn=warn, what="credential cache",
            lost="the next kubectl call will log in again.", tighten_dir=tighten_dir)

    def get(self, key: str, now: dt.datetime,
            min_remaining: dt.timedelta = MIN_REMAINING) -> Credential | None:
        """The cached credential for `key` if it is still good for `min_remaining`."""
        credential = self._open(key, self._file.read().get(key))
        if credential is None or credential.expiration - now < min_remaining:
            return None
        return credential

    def put(self, key: str, credential: Credential, now: dt.datetime) -> None:
        """Cache `credential`, dropping entries that expired by `now` or no longer open."""
        entries = {k: c for k, c in self.entries().items() if c.expiration > now}
        entries[key] = credential
        try:
            sealed = {k: self._file.seal(k, _encode(c)) for k, c in entries.items()}
        except KeyUnavailable as exc:
            self._warn(f"could not write the credential cache: {exc} Until then, each kubectl "
                       "call asks the concierge for a new credential.")
            return
        self._file.write(sealed)

    def entries(self) -> dict[str, Credential]:
        """Every entry that opens with the current key, expired or not."""
        return {k: c for k, v in self._file.read().items() if (c := self._open(k, v)) is not None}

    def remove(self, keys: set[str] | None = None) -> int:
        """Forget `keys` (all entries when None); returns how many were dropped."""
        entries = self._file.read()
        kept = {} if keys is None else {k: v for k, v in entries.items() if k not in keys}
        dropped = len(entries) - len(kept)
        if dropped:
            self._file.write(kept)
        return dropped

    def _open(self, key: str, sealed: str | None) -> Credential | None:
        return _parse_entry(self._file.open(key, sealed))


def _encode(credential: Credential) -> bytes:
    return json.dumps({
        "token": credential.token,
        "expirationTimestamp": format_time(credential.expiration),
        "identity": {"username": credential.username, "groups": list(credential.groups)},
    }, separators=(",", ":")).encode()


def _parse_entry(entry: object) -> Credential | None:
    """A Credential from one opened cache entry, or None for anything malformed (never fatal)."""
    if not isinstance(entry, dict):
        return None
    token, identity = entry.get("token"), entry.get("identity")
    expiration = parse_time(entry.get("expirationTimestamp"))
    if not isinstance(token, str) or not token or expiration is None \
            or not isinstance(identity, dict):
        return None
    username, groups = identity.get("username"), identity.get("groups", [])
    if not isinstance(username, str) or not username or not isinstance(groups, list) \
            or not all(isinstance(g, str) for g in groups):
        return None
    return Credential(token, expiration, username, tuple(groups))
