"""Sealing cached secrets with AES-256-GCM, under a per-user key kept apart from the caches.

Why: the credential cache in ~/.config and the no-keyring session file are
0600, but files travel further than their permissions: backups, dotfile sync,
a support bundle, a `cat` pasted into a chat. Sealed, a copy of them carries
only ciphertext; the key that opens it is kept elsewhere (a credential cache in
the runtime directory itself is not sealed: see `pinniped_cli.runtime_cache`):

- `$XDG_RUNTIME_DIR/pinniped/cache.key` when XDG_RUNTIME_DIR names a directory
  of ours that nobody else can write to. That is a per-user tmpfs on systemd
  systems: memory-backed, never backed up or synced, and gone at logout or
  reboot, which costs no more than logging in again.
- `${XDG_STATE_HOME:-~/.local/state}/pinniped/cache.key` otherwise: still out
  of `~/.config`, the directory people sync and publish.

The key is 32 random bytes in a 0600 file in a 0700 directory. It is
published with link(2), which like O_EXCL fails when the file exists but only
ever exposes a complete key, so processes racing to create it agree on one:
the loser reads the winner's. Symlinks and files or directories of other users
are refused (see `pinniped_cli.securefile`).

Each value gets a fresh random 96-bit nonce, and the associated data names
the file kind and the entry's key, so ciphertext copied into another entry or
another file does not authenticate. Whatever does not open (no key, a corrupt
key, a tampered or moved entry, an entry sealed under a key since lost) is a
cache miss, never an error: the caller logs in again and seals a fresh entry.

This guards copies of the files, not the account: anything running as the
user can read the key as easily as the cache (the OS keyring, when there is
one, is what holds the session then). Note that a process without
XDG_RUNTIME_DIR (cron, some `su` sessions) uses the state-directory key, so
its entries are misses for the desktop session and the other way round.

A sealed value is `aesgcm1:` and the URL-safe base64 of nonce, ciphertext and
tag. AESGCM comes from `cryptography` (~15 ms to import, so only once a value
is really sealed or opened); everything else here is the standard library.
"""

from __future__ import annotations

import base64
import os

from pinniped_cli.securefile import PRIVATE_FILE, ensure_private_dir, owned_dir, read_private

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_NAME = "cache.key"
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size
TAG_BYTES = 16
PREFIX = "aesgcm1:"
_AAD_PREFIX = b"pinniped-sealed-v1\x00"


class KeyUnavailable(Exception):
    """No cache key could be made; the message says where, and what to check."""


def key_path(env: Mapping[str, str]) -> Path:
    """Where the cache key lives for this environment (see the module docstring)."""
    from pathlib import Path

    return Path(key_file(env))


def key_file(env: Mapping[str, str]) -> str:
    """`key_path` as a string, found without pathlib (the cached path opens a sealed entry)."""
    runtime = env.get("XDG_RUNTIME_DIR") or ""
    if os.path.isabs(runtime) and owned_dir(runtime):
        return os.path.join(runtime, "pinniped", KEY_NAME)
    state = env.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(state):  # the XDG spec says relative paths are to be ignored
        state = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "pinniped", KEY_NAME)


def read_key(path: str | os.PathLike[str]) -> bytes | None:
    """The key in `path`, or None if it is missing, malformed, or not safely ours."""
    if not owned_dir(os.path.dirname(os.fspath(path))):
        return None
    raw = read_private(path, private_mode=True)
    return raw if raw is not None and len(raw) == KEY_BYTES else None


def open_once(path: str, kind: str, slot: str, sealed: object) -> bytes | None:
    """`CacheKey(path).open(kind, slot, sealed)` for one value, without pathlib."""
    blob = _blob(sealed)
    if blob is None:
        return None
    key = read_key(path)
    return None if key is None else _decrypt(_aesgcm(key), kind, slot, blob)


class CacheKey:
    """Seals and opens the cache entries of one user, with the key in the file at `path`.

    The key is read once per process and created only when something is
    sealed, so reading a cache never leaves a key file behind.
    """

    __slots__ = ("_aead", "path")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._aead: AESGCM | None = None

    @classmethod
    def for_env(cls, env: Mapping[str, str]) -> CacheKey:
        return cls(key_path(env))

    def seal(self, kind: str, slot: str, plaintext: bytes) -> str:
        """`plaintext` sealed for entry `slot` of a `kind` file; raises KeyUnavailable."""
        aead = self._aead or self._load() or self._create()
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + aead.encrypt(nonce, plaintext, _aad(kind, slot))
        return PREFIX + base64.urlsafe_b64encode(sealed).decode("ascii")

    def open(self, kind: str, slot: str, sealed: object) -> bytes | None:
        """The plaintext sealed for exactly this kind and slot, or None (never an exception)."""
        blob = _blob(sealed)
        if blob is None:
            return None
        aead = self._aead or self._load()
        return None if aead is None else _decrypt(aead, kind, slot, blob)

    def _load(self) -> AESGCM | None:
        """The existing key, or None if it is missing, malformed, or not safely ours."""
        raw = read_key(self.path)
        if raw is None:
            return None
        self._aead = _aesgcm(raw)
        return self._aead

    def _create(self) -> AESGCM:
        import contextlib  # only for writing, so not loaded on the cached path
        import tempfile

        directory = self.path.parent
        if directory.is_symlink() or (directory.exists() and not owned_dir(directory, 0)):
            raise KeyUnavailable(
                f"{directory} is not a directory of yours (it is a symlink, a file or another "
                "user's), so pinniped will not keep its cache key there; remove it and pinniped "
                "creates it again.")
        key = os.urandom(KEY_BYTES)
        tmp = ""
        try:
            ensure_private_dir(directory, tighten=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{KEY_NAME}.", dir=directory)
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), PRIVATE_FILE)
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                if (existing := self._load()) is not None:
                    return existing  # another process won the race: use its key
                os.replace(tmp, self.path)  # a corrupt or unsafe key file: replace it
        except OSError as exc:
            raise KeyUnavailable(
                f"cannot create the cache key {self.path} ({exc.strerror or exc}); check the "
                "permissions of that directory.") from exc
        finally:
            if tmp:
                with contextlib.suppress(OSError):  # already linked or replaced away
                    os.unlink(tmp)
        self._aead = _aesgcm(key)
        return self._aead


def _blob(sealed: object) -> bytes | None:
    """Nonce, ciphertext and tag of a sealed value, or None when it cannot be one."""
    if not isinstance(sealed, str) or not sealed.startswith(PREFIX):
        return None
    try:
        blob = base64.urlsafe_b64decode(sealed[len(PREFIX):])
    except ValueError:  # binascii.Error, and non-ASCII text
        return None
    return blob if len(blob) >= NONCE_BYTES + TAG_BYTES else None


def _decrypt(aead: AESGCM, kind: str, slot: str, blob: bytes) -> bytes | None:
    from cryptography.exceptions import InvalidTag

    try:
        return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(kind, slot))
    except InvalidTag:
        return None


def _aad(kind: str, slot: str) -> bytes:
    return b"%s%s\x00%s" % (_AAD_PREFIX, kind.encode(), slot.encode())


def _aesgcm(key: bytes) -> AESGCM:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)
