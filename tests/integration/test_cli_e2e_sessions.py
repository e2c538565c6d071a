"""Caching, refresh, one login for many kubectl calls, group changes and logout, end to end.

Tests that stop servers or change users run their own IdP and concierge
(`idp_factory`, `concierge_factory`) so the shared ones stay as every other
test expects them.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import stat
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import (
    CLIWorld,
    assert_not_stored,
    concierge_logins,
    idp_password_grants,
    new_world,
    team_namespace,
)
from localenv.idp import LocalIdP, TestUser
from pinniped_cli.redact import fingerprint

pytestmark = pytest.mark.integration

#: The one user of each private IdP: a name no other test logs in as, so a private world's
#: logins and group changes cannot touch any per-user object other tests rely on.
USER = "dana"


def _private_world(tmp_path: Path, cluster: LocalCluster,
                   idp_factory: Callable[..., LocalIdP],
                   concierge_factory: Callable[..., LocalConcierge]) -> CLIWorld:
    name = f"{USER}-{secrets.token_hex(3)}"
    idp = idp_factory(users=[TestUser(name, secrets.token_urlsafe(12), f"{name}@example.com",
                                      ["devs", "readers"])])
    world = new_world(tmp_path, cluster, idp, concierge_factory(idp))
    world.as_ci_job(name)
    return world


def _user(world: CLIWorld) -> str:
    return str(next(iter(world.idp.users)))


def test_cached_credential_works_with_idp_and_concierge_stopped(
        tmp_path: Path, cluster: LocalCluster, idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    world = _private_world(tmp_path, cluster, idp_factory, concierge_factory)
    namespace = team_namespace(cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env(_user(world)))
    assert stat.S_IMODE(world.credential_cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(world.pinniped_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(world.session_file.stat().st_mode) == 0o600
    world.concierge.stop()
    world.idp.stop()
    for _ in range(2):
        got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                            "jsonpath={.data.who}")
        assert got.returncode == 0, got.stderr
        assert got.stdout == "world"
        assert got.stderr == ""


def test_expired_credential_is_refreshed_without_a_browser(
        world_shared: CLIWorld, cluster: LocalCluster, concierge: LocalConcierge,
        tmp_path: Path) -> None:
    world = world_shared
    namespace = team_namespace(cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env("alice"))
    old_token = next(iter(world.cached_credentials().values()))["token"]
    old_session = world.stored_sessions()
    assert old_session  # the keyring is off: the session is in the (sealed) file
    world.expire_cached_credentials()
    world.expire_cached_id_tokens()
    marker = tmp_path / "browser-was-opened"
    # A browser that would leave a mark, no password, no terminal: only a refresh can work.
    browser = {"BROWSER": f"touch {marker} %s"}
    logins = concierge_logins(concierge)
    got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                        "jsonpath={.data.who}", env=browser)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "world"
    assert not marker.exists()
    assert "Log in" not in got.stderr
    assert "no working OS keyring" not in got.stderr  # said once, when the file was made
    assert concierge_logins(concierge) == logins + 1
    new_session = world.stored_sessions()
    assert new_session.keys() == old_session.keys()
    for key, session in new_session.items():
        # The IdP rotates refresh tokens: a new one means a refresh happened, and was kept.
        # (The ID token may be byte-identical if issued in the same second.) Compared by
        # digest so a failure never prints a token.
        assert session.refresh_token is not None
        old_refresh = old_session[key].refresh_token or ""
        assert fingerprint(session.refresh_token) != fingerprint(old_refresh)
    new_token = next(iter(world.cached_credentials().values()))["token"]
    assert fingerprint(new_token) != fingerprint(old_token)
    # On disk, the real files hold none of these tokens in any readable form.
    assert_not_stored([world.credential_cache, world.session_file], world.secrets_in_use())


def test_ten_parallel_kubectl_calls_cause_one_login(
        tmp_path: Path, cluster: LocalCluster, idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    world = _private_world(tmp_path, cluster, idp_factory, concierge_factory)
    namespace = team_namespace(cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env(_user(world)))
    # Forget everything: each of the ten would need a full login of its own.
    world.credential_cache.unlink()
    world.session_file.unlink()
    grants = idp_password_grants(world.idp, _user(world))
    logins = concierge_logins(world.concierge)
    assert (grants, logins) == (1, 1)

    def kubectl(_: int) -> subprocess.CompletedProcess[str]:
        return world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                             "jsonpath={.data.who}", env=world.password_env(_user(world)))

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(kubectl, range(10)))
    for result in results:
        assert result.returncode == 0, result.stderr
        assert result.stdout == "world"
    assert idp_password_grants(world.idp, _user(world)) == grants + 1
    assert concierge_logins(world.concierge) == logins + 1
    assert sum("waiting for another pinniped login" in r.stderr for r in results) >= 1


def test_group_change_at_the_idp_updates_the_kubeconfig(
        tmp_path: Path, cluster: LocalCluster, idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    world = _private_world(tmp_path, cluster, idp_factory, concierge_factory)
    ops_only = team_namespace(cluster, "corp:ops")
    world.get_kubeconfig(env=world.password_env(_user(world)))
    assert world.kubeconfig_user()["as-groups"] == ["corp:devs", "corp:readers"]
    refused = world.kubectl("get", "configmaps", "-n", ops_only)
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()

    world.idp.set_groups(_user(world), ["devs", "ops"])
    world.expire_cached_credentials()
    world.expire_cached_id_tokens()
    # This call refreshes (learning the new groups) and rewrites the kubeconfig. kubectl
    # read the old as-groups before running the plugin, and the concierge no longer lets
    # the account impersonate corp:readers, so this one call may be refused.
    first = world.kubectl("get", "configmaps", "-n", ops_only)
    assert f"updated {world.kubeconfig}" in first.stderr
    assert world.kubeconfig_user()["as-groups"] == ["corp:devs", "corp:ops"]
    got = world.kubectl("get", "configmap", "hello", "-n", ops_only, "-o",
                        "jsonpath={.data.who}")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "world"


def _token_kubeconfig(cluster: LocalCluster, path: Path, token: str,
                      identity: dict[str, Any]) -> Path:
    """A 0600 kubeconfig that uses `token` as `identity`, as the generated one does: the token
    stays off kubectl's command line, where `ps` would show it."""
    ca = base64.b64encode(cluster.ca_file.read_bytes()).decode()
    user = {"token": token, "as": identity["username"], "as-groups": identity["groups"]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "c",
            "clusters": [{"name": "c", "cluster": {"server": cluster.server,
                                                   "certificate-authority-data": ca}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}, handle)
    return path


def test_logout_makes_the_credential_unauthorized_until_a_new_login(
        world_shared: CLIWorld, cluster: LocalCluster, tmp_path: Path) -> None:
    world = world_shared
    namespace = team_namespace(cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env("alice"))
    assert world.kubectl("get", "configmaps", "-n", namespace).returncode == 0
    entry = next(iter(world.cached_credentials().values()))
    old_token = entry["token"]
    old = _token_kubeconfig(cluster, tmp_path / "old-token.kubeconfig", old_token,
                            entry["identity"])

    def with_old_token() -> subprocess.CompletedProcess[str]:
        return cluster.kubectl("get", "configmaps", "-n", namespace, kubeconfig=old,
                               check=False)

    assert with_old_token().returncode == 0

    out = world.pinniped("logout", "--kubeconfig", str(world.kubeconfig))
    assert out.returncode == 0, out.stderr
    assert "stops working within about 10 s" in out.stderr
    assert old_token not in out.stderr
    assert world.cached_credentials() == {}
    assert world.stored_sessions() == {}

    deadline = time.monotonic() + 25
    while True:
        result = with_old_token()
        if result.returncode != 0 and "Unauthorized" in result.stderr:
            break
        assert time.monotonic() < deadline, f"still accepted after 25 s: {result.stderr}"
        time.sleep(1)

    # kubectl (no terminal, no password) cannot log in again by itself: it fails fast.
    assert "login oidc --issuer" in world.kubectl_fails_fast("get", "configmaps", "-n",
                                                             namespace)

    # A new login works, and the logged-out token stays dead.
    again = world.kubectl("get", "configmaps", "-n", namespace, env=world.password_env("alice"))
    assert again.returncode == 0, again.stderr
    assert "Unauthorized" in with_old_token().stderr


@pytest.fixture
def world_shared(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP,
                 concierge: LocalConcierge) -> CLIWorld:
    world = new_world(tmp_path, cluster, idp, concierge)
    world.as_ci_job("alice")
    return world
