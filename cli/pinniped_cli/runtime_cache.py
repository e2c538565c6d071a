"""The credential cache in `$XDG_RUNTIME_DIR`: plain JSON, because the directory protects it.

Why no sealing here: the sealed files' key (`pinniped_cli.sealing`) lives in
this very directory, so whoever can read a file here can read the key too, and
sealing adds nothing. It would still cost every kubectl call the import of
`cryptography` (some 9 ms, as much as Python's whole start). What sealing
guards against is copies of a file: backups, dotfile sync, a support bundle.
`$XDG_RUNTIME_DIR` is made for exactly this: per user, 0700, memory-backed
(a tmpfs on systemd systems), never backed up or synced, and emptied at logout
and reboot. So where it exists and is really private, credentials are kept in
`$XDG_RUNTIME_DIR/pinniped/credentials.json` as they are. Everywhere else (no
runtime directory, as for cron jobs, or one that is not ours alone, as after
`su`), they stay sealed in `~/.config/pinniped` (`pinniped_cli.credential_cache`).

Private means: `$XDG_RUNTIME_DIR` is an absolute path to a real directory
(not a symlink) owned by us, with no permissions for group or others, and so
is the `pinniped` directory in it (created 0700). A runtime directory that is
not private is refused: the credential cache is the sealed file then. The
file must be ours, 0600, a regular file and no symlink, or it is a miss; it
is replaced atomically (`pinniped_cli.securefile`). An unreadable file is a
miss, never an error. Entries in another form (sealed ones, say) are misses.

Reading imports only `os`, `stat` and `json`: this runs on every kubectl call.
"""

from __future__ import annotations

import os
import stat

from pinniped_cli import map_file
from pinniped_cli.credential_entry import FILE_NAME
from pinniped_cli.securefile import read_private

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

RUNTIME_DIR_VAR = "XDG_RUNTIME_DIR"
DIR_NAME = "pinniped"


def private_dir(path: str) -> bool:
    """Whether `path` is a real directory (no symlink) of ours that nobody else may even enter."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & 0o077)


def cache_path(env: Mapping[str, str]) -> str | None:
    """The runtime directory's credential cache, or None when there is no private one."""
    runtime = env.get(RUNTIME_DIR_VAR) or ""
    if not os.path.isabs(runtime) or not private_dir(runtime):
        return None
    directory = os.path.join(runtime, DIR_NAME)
    if os.path.lexists(directory) and not private_dir(directory):
        return None
    return os.path.join(directory, FILE_NAME)


def read(path: str | os.PathLike[str], kind: str, field: str) -> dict[str, object] | None:
    """The entries of the file at `path`: {} when it is missing or not private and ours,
    None when it is corrupt."""
    raw = read_private(path, private_mode=True)
    return {} if raw is None else map_file.load(raw, kind, field)


class PlainMapFile:
    """The runtime directory's file, with the interface of `sealed_file.SealedMapFile`.

    Values are JSON objects kept as they are: `seal` and `open` only check that
    they are objects, so the credential cache reads and writes both files alike.
    Writing refuses a directory that is not private (said, like a failed write).
    """

    __slots__ = ("_warn", "field", "kind", "path")

    def __init__(self, path: Path, *, kind: str, field: str,
                 warn: Callable[[str], None]) -> None:
        self.path = path
        self.kind = kind
        self.field = field
        self._warn = warn

    def read(self) -> dict[str, object]:
        values = read(self.path, self.kind, self.field)
        if values is None:
            self._warn(f"ignoring the unreadable credential cache {self.path}; it will be "
                       "replaced at the next login")
            return {}
        return {k: v for k, v in values.items() if isinstance(v, dict)}

    def seal(self, slot: str, plaintext: bytes) -> object:
        """`plaintext` (a JSON object) as it is stored here: as it is."""
        import json

        return json.loads(plaintext)

    def open(self, slot: str, stored: object) -> object:
        return stored if isinstance(stored, dict) else None

    def write(self, values: Mapping[str, object]) -> bool:
        """Replace the file with `values`; on failure say what to check and return False."""
        from pinniped_cli.securefile import write_private

        problem = ""
        try:
            write_private(self.path, map_file.dump(self.kind, self.field, dict(values)),
                          tighten_dir=True, check_dir=private_dir)
        except OSError as exc:
            problem = exc.strerror or type(exc).__name__
        if problem:
            self._warn(f"could not write the credential cache {self.path} ({problem}); the "
                       f"next kubectl call will log in again. Check that {self.path.parent} "
                       "is a directory of yours that only you can open (mode 0700).")
            return False
        return True
