"""Start and stop the local processes, and never leave one behind.

Every process is started in its own session, asked to die with its parent
(PR_SET_PDEATHSIG) and recorded here, so it is stopped by PID when a fixture
finalises, when Python exits, or when pytest itself is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_running: dict[int, ManagedProcess] = {}


def _die_with_parent() -> None:
    """Runs in the child before exec: ask the kernel to SIGTERM it when we die."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A port that is free right now on 127.0.0.1 (the OS picks it, so runs cannot collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             proc: ManagedProcess | None = None) -> None:
    """Poll `check` until it is true; fail with the process's log tail if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.exited():
            raise RuntimeError(f"{what}: {proc.name} exited early\n{proc.log_tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    tail = proc.log_tail() if proc is not None else ""
    raise TimeoutError(f"{what}: not ready after {timeout:.0f}s\n{tail}")


class ManagedProcess:
    """A child process with its output in a log file, stopped by PID on any exit path."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path,
                 env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self._popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None, cwd=cwd,
                start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509
            )
        _running[self.pid] = self

    @property
    def pid(self) -> int:
        return self._popen.pid

    def exited(self) -> bool:
        return self._popen.poll() is not None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole process group, then SIGKILL what is left after `grace`."""
        _running.pop(self.pid, None)
        if self.exited():
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self._popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self._popen.wait(timeout=grace)


def stop_all() -> None:
    for proc in list(_running.values()):
        with contextlib.suppress(Exception):
            proc.stop(grace=3.0)


def _on_signal(signum: int, _frame: object) -> None:
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


atexit.register(stop_all)
for _sig in (signal.SIGTERM, signal.SIGHUP):
    with contextlib.suppress(ValueError):  # not the main thread
        if signal.getsignal(_sig) in (signal.SIG_DFL, None):
            signal.signal(_sig, _on_signal)
