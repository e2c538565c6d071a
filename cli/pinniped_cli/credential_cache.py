"""The cluster-credential cache: what spares kubectl calls a login.

kubectl runs the plugin for each command, so a still-valid credential from
the concierge is kept in a 0600 JSON file, keyed by the login options and the
cluster (`pinniped_cli.cache_keys`), and handed back without any network. An
unreadable or corrupt file is treated as empty and replaced on the next
write: a cache must never be the reason a login fails. A cache hit from
kubectl is normally served by `pinniped_cli.cached_path` before any of this
is imported; this module is the full command's reading and all the writing.

There are two kinds of file, holding the same entries (`pinniped_cli.credential_entry`):

- in the runtime directory (`$XDG_RUNTIME_DIR/pinniped/credentials.json`, when
  it is private): entries as they are, since that directory is what protects
  them, and sealing there would add nothing (see `pinniped_cli.runtime_cache`);
- anywhere else (`~/.config/pinniped/credentials.json`, or --credential-cache):
  each entry sealed whole (token, expiry and identity) with
  `pinniped_cli.sealing`, so the file holds no token in plain text: a backup,
  a synced dotfile or an accidental `cat` shows only ciphertext, while the key
  stays elsewhere. Sealing the identity as well means nobody can edit whom a
  cached credential acts as. An entry that does not open (key lost, say at a
  reboot, or the entry tampered with or moved) is a miss, and dropped at the
  next write; so are entries in plain text.

File format (JSON, `pinniped_cli.map_file`)::

    {"apiVersion": "cli.pinniped.dev/v1", "kind": "CredentialCache",
     "credentials": {"<sha256 of key fields>": <entry> or "aesgcm1:<sealed entry>"}}
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from pinniped_apis.rfc3339 import format_time, parse_time
from pinniped_cli import credential_entry
from pinniped_cli.cache_keys import cache_key
from pinniped_cli.runtime_cache import PlainMapFile
from pinniped_cli.sealed_file import SealedMapFile
from pinniped_cli.sealing import CacheKey, KeyUnavailable

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from pinniped_apis.identity import ClusterCredential, Identity

__all__ = ["KIND", "MIN_REMAINING", "Credential", "CredentialCache", "cache_key"]

KIND, FIELD = credential_entry.KIND, credential_entry.FIELD
MIN_REMAINING = dt.timedelta(seconds=credential_entry.MIN_REMAINING_SECONDS)


class Credential:
    """A cluster credential as the CLI keeps it: what `wire.ClusterCredential` carries."""

    __slots__ = ("check_elevation", "elevated_groups", "expiration", "groups", "token",
                 "username")

    def __init__(self, token: str, expiration: dt.datetime, username: str,
                 groups: tuple[str, ...], *, elevated_groups: tuple[str, ...] = (),
                 check_elevation: bool = False) -> None:
        self.token = token
        self.expiration = expiration
        self.username = username
        self.groups = groups
        #: Groups an approved elevation grants (`pinniped_apis.elevation`).
        self.elevated_groups = elevated_groups
        #: Ask the concierge for the elevation state before handing this out again.
        self.check_elevation = check_elevation

    @classmethod
    def from_wire(cls, credential: ClusterCredential) -> Credential:
        return cls(credential.token, credential.expiration, credential.identity.username,
                   tuple(credential.identity.groups),
                   elevated_groups=tuple(credential.elevated_groups),
                   check_elevation=credential.check_elevation)

    def elevation_hint(self) -> tuple[str, ...] | None:
        """The elevated groups when this is checked before use, else None (the cache
        entry's `elevation` field: `credential_entry`)."""
        return self.elevated_groups if self.check_elevation else None

    def checking(self, check: bool) -> Credential:
        """This credential, with the elevation check turned on or off."""
        return Credential(self.token, self.expiration, self.username, self.groups,
                          elevated_groups=self.elevated_groups, check_elevation=check)

    def identity(self) -> Identity:
        from pinniped_apis.identity import Identity

        return Identity(username=self.username, groups=self.groups)

    def __repr__(self) -> str:  # never the token
        return (f"Credential(username={self.username!r}, groups={self.groups!r}, "
                f"expiration={format_time(self.expiration)!r}, "
                f"elevated_groups={self.elevated_groups!r}, "
                f"check_elevation={self.check_elevation!r})")


class CredentialCache:
    """The cache in the file at `path`, sealed with `key` (or the runtime directory's,
    unsealed: `in_runtime_dir`)."""

    def __init__(self, path: Path, key: CacheKey, warn: Callable[[str], None],
                 tighten_dir: bool = False) -> None:
        self._setup(path, key, warn, SealedMapFile(
            path, kind=KIND, field=FIELD, key=key, warn=warn, what="credential cache",
            lost="the next kubectl call will log in again.", tighten_dir=tighten_dir))

    @classmethod
    def in_runtime_dir(cls, path: Path, warn: Callable[[str], None]) -> CredentialCache:
        """The unsealed cache: only for the path `runtime_cache.cache_path` gives (its
        directory is what protects it), so no key is passed by mistake as None."""
        cache = cls.__new__(cls)
        cache._setup(path, None, warn, PlainMapFile(path, kind=KIND, field=FIELD, warn=warn))
        return cache

    def _setup(self, path: Path, key: CacheKey | None, warn: Callable[[str], None],
               file: SealedMapFile | PlainMapFile) -> None:
        self.path = path
        #: The key sealing the entries; None in the runtime directory.
        self.key = key
        self._warn = warn
        self._file = file

    def get(self, key: str, now: dt.datetime,
            min_remaining: dt.timedelta | None = None) -> Credential | None:
        """The cached credential for `key` if it is still good for `min_remaining` (by
        default the cached path's margin for it: `credential_entry.min_remaining_seconds`,
        so that both paths agree on what is a hit)."""
        credential = self._open(key, self._file.read().get(key))
        if credential is None:
            return None
        if min_remaining is None:
            min_remaining = dt.timedelta(seconds=credential_entry.min_remaining_seconds(
                credential.elevation_hint()))
        if credential.expiration - now < min_remaining:
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

    def _open(self, key: str, sealed: object) -> Credential | None:
        return _parse_entry(self._file.open(key, sealed))


def _encode(credential: Credential) -> bytes:
    return json.dumps(credential_entry.entry(
        credential.token, format_time(credential.expiration), credential.username,
        credential.groups, credential.elevation_hint()),
        separators=(",", ":")).encode()


def _parse_entry(entry: object) -> Credential | None:
    """A Credential from one opened cache entry, or None for anything malformed (never fatal)."""
    found = credential_entry.fields(entry)
    if found is None:
        return None
    token, timestamp, username, groups, elevated = found
    expiration = parse_time(timestamp)
    if expiration is None:
        return None
    return Credential(token, expiration, username, groups, elevated_groups=elevated or (),
                      check_elevation=elevated is not None)
