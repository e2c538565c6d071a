"""The OIDC session (ID token, refresh token): in the OS keyring, else in a 0600 file.

Refresh tokens are long-lived secrets, so they go to the OS keyring through
`keyring` (imported only when a login needs it: it costs ~200 ms). Keyring
backends cap entry sizes (Windows' Credential Manager at about 2.5 KB) while
ID tokens with many groups are larger, so long values are split into chunks
and reassembled with a checksum. Where no backend works (a headless server,
CI), sessions go to a 0600 file instead, and the person is told once, when
that file is first created.

In that file each session is sealed whole with `cli.sealing` (AES-256-GCM,
bound to its entry), so it holds no token in plain text: backups, dotfile
sync or an accidental `cat` do not leak a refresh token, and the key lives in
the memory-backed runtime directory when there is one. A session that does
not open (the key was lost, say at a reboot, or the entry was tampered with)
is a miss: the person logs in again, and is told why. The keyring path is not
sealed: the OS keyring protects its entries itself.

File format (JSON, read and written by `cli.sealed_file`)::

    {"apiVersion": "cli.pinniped.dev/v1", "kind": "SessionCache",
     "sessions": {"<key>": "aesgcm1:<sealed JSON session>"}}

where a sealed session is ``{"idToken": "...", "idTokenExpiry": "...Z",
"refreshToken": "..."}``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pinniped_apis.rfc3339 import format_time, parse_time
from pinniped_cli.errors import CLIError
from pinniped_cli.sealed_file import SealedMapFile
from pinniped_cli.sealing import CacheKey, KeyUnavailable

KIND = "SessionCache"
KEYRING_SERVICE = "pinniped"
#: Characters per keyring entry; below Windows' 2560-byte UTF-16 blob limit.
KEYRING_CHUNK = 1000
_CHUNK_HEADER = "pinniped-chunked:v1:"

_T = TypeVar("_T")
#: What to do about the fallback file, when no keyring answers at start...
INSTALL_A_KEYRING = ("Install or start an OS keyring (e.g. gnome-keyring or KWallet) to keep "
                     "it there instead.")
#: ...and when there is one that stopped working (locked, or its daemon gone).
REVIVE_THE_KEYRING = ("Unlock your OS keyring, or start it again, and the next login keeps "
                      "the session there.")


@dataclass(frozen=True)
class Session:
    id_token: str = field(repr=False)
    id_token_expiry: dt.datetime
    refresh_token: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"idToken": self.id_token,
                               "idTokenExpiry": format_time(self.id_token_expiry)}
        if self.refresh_token:
            out["refreshToken"] = self.refresh_token
        return out

    @classmethod
    def from_json(cls, value: object) -> Session | None:
        """A Session, or None for anything that does not look like one (never fatal)."""
        if not isinstance(value, dict):
            return None
        id_token, refresh = value.get("idToken"), value.get("refreshToken")
        if not isinstance(id_token, str) or not (refresh is None or isinstance(refresh, str)):
            return None
        expiry = parse_time(value.get("idTokenExpiry"))
        if expiry is None:
            return None
        return cls(id_token=id_token, id_token_expiry=expiry, refresh_token=refresh or None)


class SessionStore(Protocol):
    def load(self, key: str) -> Session | None: ...
    def save(self, key: str, session: Session) -> None: ...
    def delete(self, key: str) -> None: ...


class KeyringLike(Protocol):
    """The three calls of a `keyring` backend that we use."""

    def get_password(self, service: str, username: str) -> str | None: ...
    def set_password(self, service: str, username: str, password: str) -> None: ...
    def delete_password(self, service: str, username: str) -> None: ...


class FileSessionStore:
    def __init__(self, path: Path, key: CacheKey, warn: Callable[[str], None],
                 reason: str = "", advice: str = INSTALL_A_KEYRING) -> None:
        self.path = path
        self.key = key
        self._warn = warn
        self._reason = reason
        self._advice = advice
        self._file = SealedMapFile(
            path, kind=KIND, field="sessions", key=key, warn=warn, what="session cache",
            lost="your login session was not kept, so the next login asks you again.")

    def load(self, key: str) -> Session | None:
        sealed = self._file.read().get(key)
        if sealed is None:
            return None
        session = self._open(key, sealed)
        if session is None:
            self._warn(f"the login session saved in {self.path} cannot be opened with the cache "
                       f"key {self.key.path} (the key was replaced or lost, as at a reboot, or "
                       "the file was changed); you need to log in again.")
        return session

    def save(self, key: str, session: Session) -> None:
        if self._reason and not self.path.exists():
            self._warn(f"no working OS keyring ({self._reason}); keeping your login session in "
                       f"{self.path} (readable only by you, encrypted with a key kept in "
                       f"{self.key.path.parent}). {self._advice}")
        # Sessions that no longer open are of no use to anyone: drop them.
        sessions = {k: v for k, v in self._file.read().items()
                    if k != key and self._open(k, v) is not None}
        plaintext = json.dumps(session.to_json(), separators=(",", ":")).encode()
        try:
            sessions[key] = self._file.seal(key, plaintext)
        except KeyUnavailable as exc:
            raise CLIError(f"could not save your login session: {exc}") from exc
        self._file.write(sessions)

    def delete(self, key: str) -> None:
        sessions = self._file.read()
        if sessions.pop(key, None) is not None:
            self._file.write(sessions)

    def _open(self, key: str, sealed: str) -> Session | None:
        return Session.from_json(self._file.open(key, sealed))


class KeyringSessionStore:
    """Sessions as keyring entries, split into chunks of `chunk` characters when long."""

    def __init__(self, backend: KeyringLike, chunk: int = KEYRING_CHUNK) -> None:
        self._backend = backend
        self._chunk = chunk

    def load(self, key: str) -> Session | None:
        value = self._get(key)
        if value is None:
            return None
        try:
            return Session.from_json(json.loads(value))
        except ValueError:
            return None

    def save(self, key: str, session: Session) -> None:
        self._put(key, json.dumps(session.to_json(), separators=(",", ":")))

    def delete(self, key: str) -> None:
        count = self._chunk_count(self._raw(key))
        for index in range(count):
            self._delete(f"{key}#{index}")
        self._delete(key)

    def _get(self, key: str) -> str | None:
        head = self._raw(key)
        count = self._chunk_count(head)
        if head is None or not count:
            return head
        digest = head.rsplit(":", 1)[-1]
        parts = [self._raw(f"{key}#{index}") for index in range(count)]
        if any(part is None for part in parts):
            return None
        value = "".join(part for part in parts if part is not None)
        if hashlib.sha256(value.encode()).hexdigest() != digest:
            return None  # a half-written or tampered session: log in again rather than fail
        return value

    def _put(self, key: str, value: str) -> None:
        old_count = self._chunk_count(self._raw(key))
        if len(value) <= self._chunk:
            self._backend.set_password(KEYRING_SERVICE, key, value)
            count = 0
        else:
            pieces = [value[i:i + self._chunk] for i in range(0, len(value), self._chunk)]
            for index, piece in enumerate(pieces):
                self._backend.set_password(KEYRING_SERVICE, f"{key}#{index}", piece)
            count = len(pieces)
            digest = hashlib.sha256(value.encode()).hexdigest()
            # The head goes last, so a reader never assembles a mix of old and new chunks.
            self._backend.set_password(KEYRING_SERVICE, key, f"{_CHUNK_HEADER}{count}:{digest}")
        for index in range(count, old_count):
            self._delete(f"{key}#{index}")

    def _raw(self, key: str) -> str | None:
        return self._backend.get_password(KEYRING_SERVICE, key)

    def _delete(self, key: str) -> None:
        try:
            self._backend.delete_password(KEYRING_SERVICE, key)
        except Exception as exc:
            if type(exc).__name__ != "PasswordDeleteError":  # already gone is fine
                raise

    @staticmethod
    def _chunk_count(head: str | None) -> int:
        if head is None or not head.startswith(_CHUNK_HEADER):
            return 0
        try:
            return int(head[len(_CHUNK_HEADER):].split(":", 1)[0])
        except ValueError:
            return 0


class FallbackSessionStore:
    """The keyring, switching to the file for the rest of the run if the keyring errors.

    On the switch, the keyring's entry for that session is deleted (best
    effort): the file is about to hold a newer refresh token, and one left
    behind in the keyring would be found first by a later run whose keyring
    works, and replayed; this IdP, like many, then revokes the whole grant.

    That delete fails when the keyring is locked or gone, the usual reasons
    for the switch. So while the keyring works, a session in the file
    (`leftovers`: put there by an earlier run whose keyring failed) is the
    newer one and is used first, until the keyring holds a newer one or the
    session is deleted; then it is dropped from the file, so a logout leaves
    no session behind for a later run whose keyring fails.
    """

    def __init__(self, primary: SessionStore, fallback: Callable[[str], SessionStore],
                 leftovers: SessionStore) -> None:
        self._store = primary
        self._fallback = fallback
        self._leftovers = leftovers
        self._fell_back = False

    def load(self, key: str) -> Session | None:
        session = self._call(key, lambda store: store.load(key))
        return session if self._fell_back else self._leftovers.load(key) or session

    def save(self, key: str, session: Session) -> None:
        self._call(key, lambda store: store.save(key, session))
        self._drop_leftover(key)

    def delete(self, key: str) -> None:
        self._call(key, lambda store: store.delete(key))
        self._drop_leftover(key)

    def _drop_leftover(self, key: str) -> None:
        if not self._fell_back:
            self._leftovers.delete(key)

    def _call(self, key: str, action: Callable[[SessionStore], _T]) -> _T:
        try:
            return action(self._store)
        except Exception as exc:
            if self._fell_back:
                raise
            reason = f"the keyring failed: {type(exc).__name__}"
            self._fell_back = True
            failed, self._store = self._store, self._fallback(reason)
            with contextlib.suppress(Exception):
                failed.delete(key)
            return action(self._store)


def open_store(path: Path, key: CacheKey, warn: Callable[[str], None],
               load_backend: Callable[[], KeyringLike | str] | None = None) -> SessionStore:
    """The keyring if a backend works, else the file at `path`, sealed with `key`."""
    backend = (load_backend or _system_keyring)()
    if isinstance(backend, str):
        return FileSessionStore(path, key, warn, reason=backend)
    return FallbackSessionStore(KeyringSessionStore(backend),
                                lambda reason: FileSessionStore(path, key, warn, reason=reason,
                                                                advice=REVIVE_THE_KEYRING),
                                leftovers=FileSessionStore(path, key, warn))


def _system_keyring() -> KeyringLike | str:
    """The configured keyring backend, or the reason none is usable."""
    try:
        import keyring
    except ImportError:
        return "the keyring package is not installed"
    try:
        backend = keyring.get_keyring()
    except Exception as exc:
        return f"keyring failed to load: {type(exc).__name__}"
    return usable_backend(backend)


#: keyrings.alt modules whose backends keep secrets in a file of their own, in plain text
#: or behind a password prompt that a kubectl plugin cannot answer.
_FILE_BACKEND_MODULES = ("keyrings.alt.file", "keyrings.alt.pyfs")


def usable_backend(backend: Any) -> KeyringLike | str:
    """`backend` if it keeps secrets safely, else the reason it is not used.

    Backends that keep secrets readably in a file (keyrings.alt's plaintext or
    obfuscated ones, or any whose name says plaintext) are worse than the
    sealed file, so they count as no keyring. keyring's chainer tries its
    members in turn, so one that holds such a backend is replaced by its best
    safe member.
    """
    cls = type(backend)
    name = f"{cls.__module__}.{cls.__qualname__}"
    members = getattr(backend, "backends", None)
    if isinstance(members, list | tuple) and members:
        safe = [m for m in members if not isinstance(usable_backend(m), str)]
        if len(safe) == len(members):
            result: KeyringLike = backend
            return result
        return safe[0] if safe else f"{name} chains only unsafe backends"
    lowered = name.lower()
    if "plaintext" in lowered or "obfuscat" in lowered \
            or cls.__module__.startswith(_FILE_BACKEND_MODULES):
        return f"{name} keeps secrets in a plain file"
    if getattr(backend, "priority", 0) <= 0:
        return f"only {name}, which stores nothing"
    result = backend
    return result
