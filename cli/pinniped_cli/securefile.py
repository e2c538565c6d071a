"""Reading and writing files that hold secrets: 0600 files in 0700 directories, atomically.

The credential cache, the session fallback file, the cache key and the lock
all go through here so that the permission rules are written once. Stdlib
only, and reading imports nothing beyond `os` and `stat` (which every Python
start loads anyway): the credential cache is read on every kubectl call, and
`pathlib` alone would cost it some 3 ms.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def config_dir(env: Mapping[str, str]) -> Path:
    """pinniped's own directory: $XDG_CONFIG_HOME/pinniped, else ~/.config/pinniped."""
    from pathlib import Path

    return Path(config_dir_name(env))


def config_dir_name(env: Mapping[str, str]) -> str:
    """`config_dir` as a string, found without pathlib (for the cached path)."""
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"),
                                                      ".config")
    return os.path.join(base, "pinniped")


def ensure_private_dir(directory: Path, tighten: bool = False) -> None:
    """Create `directory` as 0700; with `tighten`, also fix an existing one we own.

    Only pinniped's own directory is tightened: a cache placed by flag in a
    shared directory (say, a home directory) must not have its mode changed.
    """
    if not directory.exists():
        directory.mkdir(parents=True, mode=PRIVATE_DIR, exist_ok=True)
        # mkdir honours the umask; make sure the leaf really is 0700.
        directory.chmod(PRIVATE_DIR)
        return
    if tighten:
        info = directory.stat()
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) != PRIVATE_DIR:
            directory.chmod(PRIVATE_DIR)


def owned_dir(directory: str | os.PathLike[str], forbidden_mode: int = 0o022) -> bool:
    """Whether `directory` is a real directory (no symlink) of ours without `forbidden_mode` bits.

    By default: nobody else may add, swap or remove files in it.
    """
    try:
        info = os.lstat(directory)
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & forbidden_mode)


def read_private(path: str | os.PathLike[str], private_mode: bool = False) -> bytes | None:
    """The file's bytes, or None when it is missing or not ours (never trust another's cache).

    With `private_mode`, also None when others may read or write it (for keys:
    one that others could read protects nothing).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode) \
                or (private_mode and info.st_mode & 0o077):
            return None
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, tighten_dir: bool = False,
                  check_dir: Callable[[str], bool] | None = None) -> None:
    """Replace `path` atomically with a 0600 file, so readers see the old or the new, never half.

    With `check_dir`, the directory (once made or tightened) must pass it, or
    nothing is written and PermissionError is raised.
    """
    ensure_private_dir(path.parent, tighten=tighten_dir)
    if check_dir is not None and not check_dir(str(path.parent)):
        import errno

        raise PermissionError(errno.EPERM, "not a directory that only you can open",
                              str(path.parent))
    replace_file(path, data, PRIVATE_FILE)


def replace_file(path: Path, data: bytes, mode: int, group: int = -1) -> None:
    """Replace `path` atomically with a file of `mode` (and `group`, when not -1).

    The data goes to a new file beside it that is renamed over `path`, so a
    reader sees the old file or the new one, never half of one.
    """
    import contextlib  # not needed to read, so not loaded on the cached path
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(fd, mode)
            if group != -1:
                with contextlib.suppress(OSError):  # not one of our groups: keep ours
                    os.fchown(fd, -1, group)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
