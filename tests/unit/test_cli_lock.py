"""The login lock: one holder at a time, waiters told once, and a bounded wait."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from localenv.fixtures_cli import owned_by_another_user
from pinniped_cli import lock
from pinniped_cli.errors import CLIError


def test_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    path = tmp_path / "d" / "credentials.json.lock"
    order: list[str] = []
    waited: list[str] = []
    first_has_it = threading.Event()

    def first() -> None:
        with lock.held(path, timeout=5, on_wait=lambda: waited.append("first")):
            order.append("first in")
            first_has_it.set()
            time.sleep(0.3)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    first_has_it.wait(5)
    with lock.held(path, timeout=5, on_wait=lambda: waited.append("second")):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]
    assert waited == ["second"]
    assert (path.parent.stat().st_mode & 0o777) == 0o700


def test_gives_up_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    with lock.held(path, timeout=1, on_wait=lambda: None), \
            pytest.raises(CLIError, match="waiting for another pinniped login"), \
            lock.held(path, timeout=0.2, on_wait=lambda: None):
        pass


def test_released_on_error(tmp_path: Path) -> None:
    path = tmp_path / "l.lock"
    with pytest.raises(RuntimeError), lock.held(path, timeout=1, on_wait=lambda: None):
        raise RuntimeError("boom")
    waited: list[int] = []
    with lock.held(path, timeout=1, on_wait=lambda: waited.append(1)):
        pass
    assert waited == []


def test_a_symlinked_lock_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("not a lock")
    path = tmp_path / "l.lock"
    path.symlink_to(target)
    with pytest.raises(CLIError, match="remove the lock if it is a symlink"), \
            lock.held(path, timeout=1, on_wait=lambda: None):
        pass
    assert target.read_text() == "not a lock"


def test_a_lock_of_another_user_is_refused(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone else's lock file could be held (flocked) by them forever."""
    path = tmp_path / "l.lock"
    with lock.held(path, timeout=1, on_wait=lambda: None):
        pass  # ours: taken
    owned_by_another_user(monkeypatch, path)
    with pytest.raises(CLIError, match="is not a file of yours"), \
            lock.held(path, timeout=1, on_wait=lambda: None):
        pass

