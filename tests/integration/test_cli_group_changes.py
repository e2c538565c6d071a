"""A group change at the real IdP reaches the cluster at the next cluster credential.

The CLI refreshes its session for every new cluster credential, even while its
cached ID token is valid, and uses the cached ID token only when the IdP cannot
answer (`pinniped_cli.oidc.login` says why). Each test here keeps the cached ID
token valid (only the cluster credential is made to look expired), so a CLI
that reused it would carry the old groups and fail. Each runs its own IdP (the
users file is re-read at every lookup, so groups change while it runs) and
concierge, for a user no other test logs in as.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import CLIWorld, concierge_logins, new_world, team_namespace
from localenv.idp import LocalIdP, TestUser
from pinniped_cli.redact import fingerprint

pytestmark = pytest.mark.integration

START_GROUPS = ["devs", "readers"]


@dataclass(frozen=True)
class Private:
    """A user no other test logs in as, with an IdP and a concierge of this test's own."""

    user: str
    idp: LocalIdP
    concierge: LocalConcierge


@pytest.fixture
def private(idp_factory: Callable[..., LocalIdP],
            concierge_factory: Callable[..., LocalConcierge]) -> Private:
    user = f"gail-{secrets.token_hex(3)}"
    idp = idp_factory(users=[TestUser(user, secrets.token_urlsafe(12), f"{user}@example.com",
                                      START_GROUPS)])
    return Private(user, idp, concierge_factory(idp))


def _laptop(home: Path, cluster: LocalCluster, private: Private) -> CLIWorld:
    """One machine of the user: its own HOME and kubeconfig, logged in with the password once."""
    home.mkdir()
    world = new_world(home, cluster, private.idp, private.concierge)
    world.as_ci_job(private.user)
    world.get_kubeconfig(env=world.password_env(private.user))
    return world


def _reads_hello(world: CLIWorld, namespace: str) -> str:
    got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                        "jsonpath={.data.who}")
    assert got.returncode == 0, got.stderr
    assert got.stdout == "world"
    return got.stderr


def _groups(world: CLIWorld) -> list[str]:
    (entry,) = world.cached_credentials().values()
    return list(entry["identity"]["groups"])


def _expire_only_the_credential(world: CLIWorld) -> str:
    """Make the cluster credential look expired, after checking that the cached ID token is
    valid for minutes yet (the premise of these tests); returns the refresh token's digest."""
    (session,) = world.stored_sessions().values()
    assert session.id_token_expiry > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    world.expire_cached_credentials()
    return fingerprint(session.refresh_token or "")


def _refreshed_since(world: CLIWorld, digest: str) -> bool:
    """Whether the session's refresh token changed (this IdP rotates it at every refresh)."""
    (session,) = world.stored_sessions().values()
    return fingerprint(session.refresh_token or "") != digest


def test_the_next_credential_after_a_group_change_carries_the_new_groups_on_every_laptop(
        tmp_path: Path, cluster: LocalCluster, private: Private) -> None:
    ops_only = team_namespace(cluster, "corp:ops")
    laptop = _laptop(tmp_path / "laptop", cluster, private)
    other = _laptop(tmp_path / "other-laptop", cluster, private)
    assert _groups(laptop) == _groups(other) == ["corp:devs", "corp:readers"]
    refused = laptop.kubectl("get", "configmaps", "-n", ops_only)
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()

    private.idp.set_groups(private.user, ["devs", "ops"])  # ops added, readers removed
    for world in (laptop, other):
        logins = concierge_logins(private.concierge)
        # The cached ID tokens (from the logins above, 300 s long) are still valid; only the
        # cluster credentials go. kubectl read the old as-groups before running the plugin,
        # and the concierge no longer lets the account impersonate corp:readers, so this one
        # call may be refused; it leaves the new credential and kubeconfig behind.
        digest = _expire_only_the_credential(world)
        first = world.kubectl("get", "configmaps", "-n", ops_only)
        assert "could not refresh" not in first.stderr
        assert concierge_logins(private.concierge) == logins + 1
        assert _groups(world) == ["corp:devs", "corp:ops"], first.stderr
        assert world.kubeconfig_user()["as-groups"] == ["corp:devs", "corp:ops"]
        _reads_hello(world, ops_only)
        assert _refreshed_since(world, digest)


def test_during_an_idp_outage_the_cached_id_token_keeps_kubectl_working(
        tmp_path: Path, cluster: LocalCluster, private: Private) -> None:
    namespace = team_namespace(cluster, "corp:devs")
    world = _laptop(tmp_path / "laptop", cluster, private)
    assert world.kubectl("get", "configmaps", "-n", namespace).returncode == 0

    private.idp.stop()
    digest = _expire_only_the_credential(world)
    logins = concierge_logins(private.concierge)
    stderr = _reads_hello(world, namespace)
    assert concierge_logins(private.concierge) == logins + 1  # from the cached ID token
    assert "could not refresh your session at the identity provider" in stderr
    assert "cannot reach the identity provider" in stderr
    assert "using the ID token of your last login" in stderr
    assert not _refreshed_since(world, digest)

    # Once the cached ID token is gone as well, nothing can be done without the IdP; the
    # session is kept for when it is back.
    world.expire_cached_credentials()
    world.expire_cached_id_tokens()
    refused = world.kubectl("get", "configmaps", "-n", namespace)
    assert refused.returncode != 0
    assert "Your login session was kept" in refused.stderr
    assert len(world.stored_sessions()) == 1


def test_a_session_the_idp_ended_never_falls_back_to_the_cached_id_token(
        tmp_path: Path, cluster: LocalCluster, private: Private) -> None:
    namespace = team_namespace(cluster, "corp:devs")
    world = _laptop(tmp_path / "laptop", cluster, private)
    # A restart forgets every grant (they live in the server's memory), as when an admin
    # ends a person's sessions; the old signing key stays published, so the cached ID
    # token would still verify, at the CLI and at the concierge.
    private.idp.rotate_keys()
    _expire_only_the_credential(world)
    logins = concierge_logins(private.concierge)
    refused = world.kubectl_fails_fast("get", "configmaps", "-n", namespace)
    assert "session at the identity provider has ended (invalid_grant" in refused
    assert concierge_logins(private.concierge) == logins  # the valid cached token went nowhere
    assert world.stored_sessions() == {}
