"""No process outlives the test run that started it: not after a failing test, not after SIGKILL.

Each case runs an inner pytest session that starts the real etcd and
kube-apiserver through the `cluster` fixture and records their PIDs, then
fails (or is killed), and checks from outside that those PIDs are gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localenv import SOURCE_PATH

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]

INNER_TEST = """
import os, time
from pathlib import Path

def test_starts_a_cluster_then_{mode}(cluster):
    pids = [str(p.pid) for p in cluster._processes]
    Path(os.environ["PIDS_FILE"]).write_text(" ".join(pids))
    if "{mode}" == "hangs":
        time.sleep(120)
    assert False, "this inner test fails on purpose"
"""


def _alive(pid: int) -> bool:
    """A PID counts as alive unless it is gone or a zombie (no reaper runs in some sandboxes)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _inner_pytest(tmp_path: Path, mode: str) -> tuple[list[str], dict[str, str]]:
    test_file = tmp_path / f"test_inner_{mode}.py"
    test_file.write_text(INNER_TEST.format(mode=mode))
    env = {**os.environ, "PIDS_FILE": str(tmp_path / "pids"),
           "PYTHONPATH": f"{REPO_ROOT / 'hack'}{os.pathsep}{SOURCE_PATH}"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
            "--rootdir", str(tmp_path), "-p", "localenv.fixtures_cluster", str(test_file)]
    return argv, env


def _wait_until_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return []
        time.sleep(0.2)
    return [pid for pid in pids if _alive(pid)]


def _recorded_pids(tmp_path: Path) -> list[int]:
    text = (tmp_path / "pids").read_text().split()
    pids = [int(pid) for pid in text]
    assert len(pids) == 2, f"expected etcd and kube-apiserver PIDs, got {text}"
    return pids


def test_a_failing_test_leaves_no_process_behind(tmp_path: Path) -> None:
    argv, env = _inner_pytest(tmp_path, "fails")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180,
                            check=False)
    assert result.returncode == 1, result.stdout[-2000:]
    assert "fails on purpose" in result.stdout
    pids = _recorded_pids(tmp_path)
    # The fixture stops both by PID before the inner session ends: nothing may be left.
    assert [pid for pid in pids if _alive(pid)] == []


def test_a_killed_test_run_leaves_no_process_behind(tmp_path: Path) -> None:
    argv, env = _inner_pytest(tmp_path, "hangs")
    inner = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "pids").exists():
            assert inner.poll() is None, "the inner run ended before starting its cluster"
            assert time.monotonic() < deadline, "the inner run never started its cluster"
            time.sleep(0.2)
        pids = _recorded_pids(tmp_path)
        assert all(_alive(pid) for pid in pids)
        inner.send_signal(signal.SIGKILL)  # no finalizer, no atexit: only PR_SET_PDEATHSIG is left
        inner.wait(timeout=10)
        # kube-apiserver shuts down gracefully on SIGTERM, which takes a few seconds.
        assert _wait_until_gone(pids, 30) == []
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
