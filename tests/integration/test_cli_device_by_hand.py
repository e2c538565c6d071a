"""A device login run by hand with no terminal (a CI log, `ssh host cmd`): it goes ahead.

The real `pinniped login oidc --flow device`, with stdin from /dev/null and no
KUBERNETES_EXEC_INFO, against the real oidc-provider and concierge: the link
and code appear on stderr, where someone reads them, and the login completes
once that someone approves the code at the IdP.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import CLIWorld, concierge_logins, new_world, pinniped_command
from localenv.idp import LocalIdP

pytestmark = pytest.mark.integration

T = TypeVar("T")
DEVICE_PROMPT = re.compile(r"open (https://\S+) on any device and enter the code: (\S+)")


@pytest.fixture
def world(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP,
          concierge: LocalConcierge) -> CLIWorld:
    return new_world(tmp_path, cluster, idp, concierge)


def _wait_until(condition: Callable[[], T | None], what: str,
                process: subprocess.Popen[str], stderr: Path, timeout: float = 60) -> T:
    """What `condition` returns once it is truthy, while `process` (stderr in a file) runs."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert process.poll() is None, f"pinniped exited early:\n{stderr.read_text()}"
        assert time.monotonic() < deadline, f"{what}:\n{stderr.read_text()}"
        time.sleep(0.2)
    return result


def test_device_login_by_hand_without_a_terminal(world: CLIWorld, tmp_path: Path,
                                                  idp: LocalIdP,
                                                  concierge: LocalConcierge) -> None:
    assert "KUBERNETES_EXEC_INFO" not in world.env  # by hand, not from kubectl
    logins = concierge_logins(concierge)
    pending = world.idp_log_count("authorization_pending")
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [*pinniped_command(), "login", "oidc", *world.login_flags(), "--flow", "device"],
            env=world.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            text=True)
    try:
        match = _wait_until(lambda: DEVICE_PROMPT.search(stderr.read_text()),
                            "no device prompt on stderr", process, stderr)
        assert match.group(1).startswith(idp.issuer)
        # It polls while nobody has approved yet, hearing "authorization_pending".
        _wait_until(lambda: world.idp_log_count("authorization_pending") > pending,
                    "the CLI never polled the IdP", process, stderr)
        idp.approve_device(match.group(2), "bob")
        stdout, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    messages = stderr.read_text()
    assert process.returncode == 0, messages
    credential = json.loads(stdout)  # stdout is no terminal, so the ExecCredential is printed
    assert credential["kind"] == "ExecCredential"
    assert credential["status"]["token"]
    assert concierge_logins(concierge) == logins + 1
    assert "kubectl" not in messages.lower()
    assert "terminal" not in messages
    assert [s.refresh_token is not None for s in world.stored_sessions().values()] == [True]
    for secret in (credential["status"]["token"], *world.secrets_in_use()):
        assert secret not in messages
