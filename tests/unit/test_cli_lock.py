"""The login lock: one holder at a time, waiters told once, and a bounded wait."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cli import lock
from cli.errors import CLIError


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
