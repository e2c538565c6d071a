"""The real CLI against a real hostile HTTPS server: what it reads is bounded in bytes and time.

A malicious IdP once took the CLI to 855 MB resident with a 400 MB discovery
document, because the size limit was checked after the whole body was read.
Here the CLI runs as its own process (the console script, nothing else in it)
started by a small measuring process whose `os.wait4` reports that very
process's peak RSS, so the figure is the CLI's, not the test runner's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localenv import pki
from localenv.fixtures_cli import pinniped_command
from localenv.hostile_http import HUGE_BYTES, HostileServer
from pinniped_cli.httpclient import DEADLINE_SECONDS, MAX_RESPONSE_BYTES

pytestmark = pytest.mark.integration

#: Peak RSS the CLI may reach while refusing a huge answer (about 46 MiB here)...
MAX_RSS_KIB = 60 * 1024
#: ...and how much more than the same login refused at once (a 404) it may take: the bound
#: (1 MiB), the chunk being read, and TLS buffers. Reading the whole document took 750 MiB more.
MAX_EXTRA_RSS_KIB = 8 * 1024
PASSWORD = "hostile-test-password-7f3a"


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str
    peak_rss_kib: int
    seconds: float


@pytest.fixture
def hostile(local_ca: pki.CA, tmp_path: Path) -> Iterator[HostileServer]:
    with HostileServer(local_ca.issue(tmp_path, "hostile")) as server:
        yield server


#: Runs argv[1:] and prints its exit code and peak RSS. A child's ru_maxrss counts the memory
#: of the process it was forked from (Linux carries the old address space's high-water mark
#: across exec), so the CLI is started from this small process, not from the test runner.
_MEASURE = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _login(cli_home: dict[str, str], local_ca: pki.CA, issuer: str, timeout: float) -> Run:
    """`pinniped login oidc` by the password flow against `issuer`, as a process of its own."""
    argv = [*pinniped_command(), "login", "oidc", "--issuer", issuer,
            "--client-id", "pinniped-cli", "--ca-bundle", str(local_ca.cert_path),
            "--concierge-endpoint", "https://127.0.0.1:9",
            "--concierge-ca-bundle", str(local_ca.cert_path),
            "--concierge-authenticator", "corp"]
    env = {**cli_home, "PINNIPED_USERNAME": "alice", "PINNIPED_PASSWORD": PASSWORD}
    started = time.monotonic()
    code, peak, stderr = _measured(argv, env, timeout)
    return Run(code, stderr, peak, time.monotonic() - started)


def _measured(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, int, str]:
    """(exit code, peak RSS in KiB, stderr) of `argv`, run under `_MEASURE`.

    Both run in a session of their own, killed whole on timeout, so a CLI that never
    stops cannot outlive the test.
    """
    proc = subprocess.Popen([sys.executable, "-c", _MEASURE, *argv], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 0, err
    code, peak = (int(word) for word in out.split())
    return code, peak, err


def _assert_clean_failure(run: Run, server: HostileServer) -> None:
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith("pinniped: error: "), run.stderr
    assert "Traceback" not in run.stderr
    assert f"127.0.0.1:{server.port}" in run.stderr  # the host that misbehaved
    assert PASSWORD not in run.stderr


def test_a_400_mb_discovery_document_is_refused_within_bounded_memory(
        hostile: HostileServer, cli_home: dict[str, str], local_ca: pki.CA) -> None:
    control = _login(cli_home, local_ca, f"{hostile.url}/none", timeout=50)
    assert "failed with HTTP 404" in control.stderr, control.stderr
    run = _login(cli_home, local_ca, f"{hostile.url}/huge", timeout=50)
    print(f"peak RSS {run.peak_rss_kib / 1024:.1f} MiB (refused at once: "
          f"{control.peak_rss_kib / 1024:.1f} MiB), {run.seconds:.1f} s: {run.stderr}")
    _assert_clean_failure(run, hostile)
    assert f"more than {MAX_RESPONSE_BYTES // 1024} KiB" in run.stderr
    assert "OIDC discovery" in run.stderr
    assert run.peak_rss_kib < MAX_RSS_KIB, f"peak RSS {run.peak_rss_kib} KiB"
    assert run.peak_rss_kib - control.peak_rss_kib < MAX_EXTRA_RSS_KIB
    # It stopped reading near the limit: the server got nowhere near sending all of it.
    # (TLS and socket buffers hold a few MB in flight.)
    assert hostile.sent.get("huge", 0) < HUGE_BYTES // 10
    assert run.seconds < 20


@pytest.mark.parametrize("attack", ["drip", "drip-headers"])
def test_a_slow_drip_answer_is_cut_off_at_the_deadline(
        hostile: HostileServer, cli_home: dict[str, str], local_ca: pki.CA,
        attack: str) -> None:
    """One byte every half second never trips a per-read timeout; only a total deadline helps."""
    run = _login(cli_home, local_ca, f"{hostile.url}/{attack}", timeout=DEADLINE_SECONDS + 25)
    print(f"peak RSS {run.peak_rss_kib / 1024:.1f} MiB, {run.seconds:.1f} s: {run.stderr}")
    _assert_clean_failure(run, hostile)
    assert f"did not finish answering within {DEADLINE_SECONDS:g} s" in run.stderr
    assert hostile.sent.get(attack, 0) > 10  # it really was dripping, not stalled
    assert DEADLINE_SECONDS - 1 < run.seconds < DEADLINE_SECONDS + 10
    assert run.peak_rss_kib < MAX_RSS_KIB


def test_the_rss_figure_is_the_childs_own() -> None:
    """The measure sees a 100 MiB child as such, and a small one as small: neither the test
    runner's memory nor the measuring process's is counted in."""
    big = "b = bytearray(100 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    code, peak, _ = _measured([sys.executable, "-c", big], dict(os.environ), 30)
    assert code == 0
    assert 100 * 1024 < peak < 130 * 1024
    code, peak, _ = _measured([sys.executable, "-S", "-c", "pass"], dict(os.environ), 30)
    assert code == 0
    assert peak < 20 * 1024
