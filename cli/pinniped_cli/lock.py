"""One login at a time: an flock held from the cache re-check to the cache write.

Ten kubectl commands started together after the credential expired all miss
the cache; the first takes this lock and logs in, the others wait here and
then find the fresh credential (callers re-check the cache after acquiring).
So there is one login, one browser tab and one concierge request. The kernel
drops the lock when a process dies, so a crashed login never wedges the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pinniped_cli.errors import CLIError
from pinniped_cli.securefile import PRIVATE_FILE, ensure_private_dir

POLL_SECONDS = 0.05


@contextlib.contextmanager
def held(path: Path, timeout: float, on_wait: Callable[[], None],
         clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> Iterator[None]:
    """Hold an exclusive lock on `path`; call `on_wait` once if someone else holds it."""
    fd = _open(path)
    try:
        if not _try_lock(fd):
            on_wait()
            deadline = clock() + timeout
            while not _try_lock(fd):
                if clock() >= deadline:
                    raise CLIError(
                        f"gave up after {timeout:g}s waiting for another pinniped login to "
                        f"finish (lock {path}). Finish or cancel that login, then retry.")
                sleep(POLL_SECONDS)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _open(path: Path) -> int:
    """The lock file, refusing a symlink or a file of someone else (who could hold it forever)."""
    try:
        ensure_private_dir(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as exc:
        raise CLIError(f"cannot open the login lock {path} ({exc.strerror}); check that its "
                       "directory is yours, and remove the lock if it is a symlink.") from exc
    info = os.fstat(fd)
    if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CLIError(f"the login lock {path} is not a file of yours; remove it and retry.")
    return fd


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
