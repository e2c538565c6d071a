"""Everything the commands take from the outside world, in one object tests can replace.

Pinniped's Go commands receive their dependencies as arguments; this is the
Python equivalent. The defaults reach the real environment, streams, clock,
browser, network and keyring, importing the heavy ones only when called.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from typing import TextIO

    import httpx

    from pinniped_cli.sealing import CacheKey
    from pinniped_cli.session_cache import SessionStore


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _open_browser(url: str) -> bool:
    import webbrowser

    return webbrowser.open(url)


def _new_http(ca_pem: str | None) -> httpx.Client:
    from pinniped_cli.httpclient import new_client

    return new_client(ca_pem)


def _open_session_store(path: Path, key: CacheKey, warn: Callable[[str], None]
                        ) -> SessionStore:
    from pinniped_cli.session_cache import open_store

    return open_store(path, key, warn)


class Runtime:
    """The process's environment, streams, clock, browser, network and keyring.

    A plain class, not a dataclass: it is built on every kubectl call the cached path
    (`pinniped_cli.cached_path`) cannot answer; see `pinniped_apis.rfc3339`.
    """

    def __init__(self, *, env: Mapping[str, str], stdout: TextIO, stderr: TextIO,
                 stdin_is_tty: bool, stdout_is_tty: bool, argv: list[str],
                 platform: str = sys.platform,
                 now: Callable[[], dt.datetime] = _utcnow,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 open_browser: Callable[[str], bool] = _open_browser,
                 new_http: Callable[[str | None], httpx.Client] = _new_http,
                 open_session_store: Callable[[Path, CacheKey, Callable[[str], None]],
                                              SessionStore] = _open_session_store,
                 real_stdout: bool = False) -> None:
        self.env = env
        self.stdout = stdout
        self.stderr = stderr
        self.stdin_is_tty = stdin_is_tty
        self.stdout_is_tty = stdout_is_tty
        self.argv = argv
        self.platform = platform
        self.now = now
        self.sleep = sleep
        self.clock = clock
        self.open_browser = open_browser
        self.new_http = new_http
        self.open_session_store = open_session_store
        #: True when stdout is this process's fd 1 (so child processes could write to it).
        self.real_stdout = real_stdout
        self._said: set[str] = set()
        self._cache_key: CacheKey | None = None

    def cache_key(self) -> CacheKey:
        """The key sealing this user's cache files, found from `env` (read at most once)."""
        if self._cache_key is None:
            from pinniped_cli.sealing import CacheKey

            self._cache_key = CacheKey.for_env(self.env)
        return self._cache_key

    def say(self, message: str) -> None:
        """A line for the person, on stderr (stdout is kubectl's)."""
        self.stderr.write(f"pinniped: {message}\n")
        self.stderr.flush()

    def say_once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self.say(message)

    @contextlib.contextmanager
    def stdout_to_stderr(self) -> Iterator[None]:
        """While logging in, point fd 1 at stderr so a browser's chatter cannot corrupt stdout.

        Python's webbrowser starts the browser with our stdout; anything it
        printed would land in the ExecCredential kubectl is about to parse.
        """
        if not self.real_stdout:
            yield
            return
        self.stdout.flush()
        saved = os.dup(1)
        try:
            os.dup2(2, 1)
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


def default_runtime() -> Runtime:
    return Runtime(
        env=os.environ,
        stdout=sys.stdout,
        stderr=sys.stderr,
        stdin_is_tty=_isatty(sys.stdin),
        stdout_is_tty=_isatty(sys.stdout),
        argv=list(sys.argv),
        real_stdout=True,
    )


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False
