"""`pinniped get kubeconfig`, then stock kubectl acts as the person, for each login flow.

Everything is real: kubectl 1.32, kube-apiserver, the oidc-provider IdP, the
concierge, and the `pinniped` console script that kubectl runs as its exec
plugin. Each test has its own HOME, so its caches are its own; sessions go to
the 0600 fallback file because the keyring is switched off
(PYTHON_KEYRING_BACKEND=keyring.backends.fail.Keyring).
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import CLIWorld, concierge_logins, new_world, team_namespace
from localenv.idp import LocalIdP

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP,
          concierge: LocalConcierge) -> CLIWorld:
    return new_world(tmp_path, cluster, idp, concierge)


def _assert_acts_as(world: CLIWorld, namespace: str, username: str,
                    env: dict[str, str] | None = None) -> None:
    """kubectl reads where the user's group may, and is refused elsewhere by the user's name."""
    can = world.kubectl("auth", "can-i", "--list", "-n", namespace, env=env)
    assert can.returncode == 0, can.stderr
    rows = [line.split() for line in can.stdout.splitlines()]
    assert ["configmaps", "[]", "[]", "[get", "list]"] in rows
    got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o", "json", env=env)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["data"] == {"who": "world"}
    refused = world.kubectl("get", "configmaps", "-n", "kube-system", env=env)
    assert refused.returncode != 0
    assert f'User "{username}" cannot list resource "configmaps"' in refused.stderr


def test_password_flow(world: CLIWorld, cluster: LocalCluster, idp: LocalIdP,
                       concierge: LocalConcierge) -> None:
    namespace = team_namespace(cluster, "corp:devs")
    world.as_ci_job("alice")
    result = world.get_kubeconfig(env=world.password_env("alice"))
    assert result.stdout == ""
    assert f"wrote {world.kubeconfig}" in result.stderr
    # No keyring backend works here: the session went to the 0600 file, and we said so once.
    assert result.stderr.count("no working OS keyring") == 1
    assert str(world.session_file) in result.stderr
    user = world.kubeconfig_user()
    assert user["as"] == "corp:alice@example.com"
    assert user["as-groups"] == ["corp:devs", "corp:readers"]
    assert user["exec"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert user["exec"]["provideClusterInfo"] is True
    assert user["exec"]["interactiveMode"] == "IfAvailable"
    assert os.path.isabs(user["exec"]["command"])
    logins = concierge_logins(concierge)

    # No password in kubectl's environment: everything below comes from the cache.
    _assert_acts_as(world, namespace, "corp:alice@example.com")
    assert concierge_logins(concierge) == logins

    # The apiserver's audit log names alice, carried by her concierge ServiceAccount.
    events = [json.loads(line) for line in cluster.audit_log.read_text().splitlines()
              if namespace in line and '"configmaps"' in line]
    reads = [e for e in events if e.get("verb") == "get"
             and e.get("impersonatedUser", {}).get("username") == "corp:alice@example.com"]
    assert reads
    assert reads[-1]["user"]["username"].startswith("system:serviceaccount:")

    whoami = world.pinniped("whoami", "--kubeconfig", str(world.kubeconfig))
    assert whoami.returncode == 0, whoami.stderr
    assert "Username: corp:alice@example.com" in whoami.stdout
    assert "corp:devs" in whoami.stdout
    for secret in (idp.user("alice").password, *world.secrets_in_use()):
        assert secret not in result.stderr + whoami.stdout + whoami.stderr


def test_device_flow(world: CLIWorld, cluster: LocalCluster, idp: LocalIdP) -> None:
    namespace = team_namespace(cluster, "corp:ops")
    pending = world.idp_log_count("authorization_pending")
    # A person at a terminal, as most are (test_cli_device_by_hand covers the run without one).
    leader, follower = pty.openpty()
    process = subprocess.Popen(world.get_kubeconfig_argv("--flow", "device"), env=world.env,
                               stdin=follower, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    os.close(follower)
    lines: list[str] = []
    code_seen = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "enter the code:" in line:
                code_seen.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert code_seen.wait(60), "".join(lines)
        match = re.search(r"open (https://\S+) on any device and enter the code: (\S+)",
                          "".join(lines))
        assert match is not None
        assert match.group(1).startswith(idp.issuer)
        # The CLI polls before anyone approves, and hears "authorization_pending".
        deadline = time.monotonic() + 30
        while world.idp_log_count("authorization_pending") == pending:
            assert time.monotonic() < deadline, "the CLI never polled the IdP"
            time.sleep(0.2)
        idp.approve_device(match.group(2), "bob")
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        os.close(leader)
    assert world.kubeconfig_user()["as"] == "corp:bob@example.com"
    assert "--flow" in world.kubeconfig_user()["exec"]["args"]
    _assert_acts_as(world, namespace, "corp:bob@example.com")
    # kubectl without a terminal runs that kubeconfig's `--flow device` only from the caches;
    # a new login fails fast, naming the command to run.
    world.credential_cache.unlink()
    world.session_file.unlink()
    assert "--flow device" in world.kubectl_fails_fast("get", "configmaps", "-n", namespace)


def _at_a_terminal(world: CLIWorld, argv: list[str], env: dict[str, str]
                   ) -> subprocess.CompletedProcess[str]:
    """Run with a pty on stdin: a person is there (kubectl tells its plugin so)."""
    leader, follower = pty.openpty()
    try:
        return world.run(argv, env, stdin=follower)
    finally:
        os.close(follower)
        os.close(leader)


def test_browser_flow(world: CLIWorld, cluster: LocalCluster, idp: LocalIdP,
                      concierge: LocalConcierge) -> None:
    namespace = team_namespace(cluster, "corp:readers")
    browser = idp.browser_env("alice")
    # At a terminal with a browser and no --flow, the browser flow is the one chosen.
    result = _at_a_terminal(world, world.get_kubeconfig_argv(), env=browser)
    assert result.returncode == 0, result.stderr
    assert "Log in by visiting this link" in result.stderr
    assert "--flow" not in world.kubeconfig_user()["exec"]["args"]
    assert world.kubeconfig_user()["as"] == "corp:alice@example.com"
    _assert_acts_as(world, namespace, "corp:alice@example.com")

    # Now kubectl itself logs in: caches gone, a terminal, a browser: the plugin picks the
    # browser flow again, and stdout (which kubectl parses) carries only the credential.
    world.credential_cache.unlink()
    world.session_file.unlink()
    logins = concierge_logins(concierge)
    got = _at_a_terminal(world, ["kubectl", "--kubeconfig", str(world.kubeconfig), "get",
                                 "configmap", "hello", "-n", namespace, "-o",
                                 "jsonpath={.data.who}"], env=browser)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "world"
    assert "Log in by visiting this link" in got.stderr
    assert concierge_logins(concierge) == logins + 1
