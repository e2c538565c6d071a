"""The login session in the real OS keyring: a real gnome-keyring on a private D-Bus bus.

Every other CLI integration test turns the keyring off, so these are the ones
that show the real `pinniped` (run by the real kubectl, against the real IdP
and concierge) keeps its session in the Secret Service, splits a large one
into chunks there, and, when the keyring is locked or gone, falls back to the
sealed file, says so once, and keeps working. What the CLI stored is read back
over the test's own D-Bus connection (`SecretService.entries`), not through
the CLI.

A keyring that fails between two calls of one run cannot be timed from
outside a subprocess, so that case drives the CLI's session store in-process,
on the same real backend `keyring` picks (`SecretService.Keyring`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localenv import fixtures_cli
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import CLIWorld
from localenv.idp import LocalIdP, TestUser
from localenv.secret_service import SecretService
from pinniped_cli.redact import fingerprint
from pinniped_cli.sealing import CacheKey
from pinniped_cli.session_cache import (
    INSTALL_A_KEYRING,
    KEYRING_CHUNK,
    KEYRING_SERVICE,
    REVIVE_THE_KEYRING,
    FileSessionStore,
    Session,
    SessionStore,
    open_store,
    usable_backend,
)

pytestmark = pytest.mark.integration

#: What the CLI says, once, when it keeps the session in the file instead.
FALLBACK_NOTICE = "no working OS keyring"
#: The head entry of a chunked session (the format already in people's keyrings).
CHUNK_HEADER = "pinniped-chunked:v1:"
#: Enough groups that the ID token is several times one keyring entry, within the
#: concierge's limits (MAX_GROUPS, MAX_TOKEN_BYTES).
MANY_GROUPS = [f"team-{index:03d}-{secrets.token_hex(6)}" for index in range(150)]


def _keyring_world(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP,
                   concierge: LocalConcierge, secret_service: SecretService) -> CLIWorld:
    """An isolated HOME like every CLI test's, but with the real keyring on instead of off."""
    world = fixtures_cli.new_world(tmp_path, cluster, idp, concierge)
    del world.env["PYTHON_KEYRING_BACKEND"]
    world.env.update(secret_service.env)
    return world


@pytest.fixture
def alice(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP, concierge: LocalConcierge,
          secret_service: SecretService) -> CLIWorld:
    """alice's machine, with the shared servers and this test's keyring, as in CI."""
    world = _keyring_world(tmp_path, cluster, idp, concierge, secret_service)
    world.as_ci_job("alice")
    return world


def _stored(secret_service: SecretService) -> tuple[Session, int]:
    """The one session in the Secret Service, reassembled by the format it is written in, and how
    many chunk entries it took (0 when it fits in one)."""
    entries = secret_service.entries(KEYRING_SERVICE)
    heads = [name for name in entries if "#" not in name]
    assert len(heads) == 1, f"expected one session entry, found {len(heads)}"
    head = entries[heads[0]]
    chunks = sorted(name for name in entries if name.startswith(f"{heads[0]}#"))
    assert len(chunks) == len(entries) - 1, "entries that belong to no session"
    if head.startswith(CHUNK_HEADER):
        count, digest = head[len(CHUNK_HEADER):].split(":")
        assert int(count) == len(chunks)
        parts = [entries[f"{heads[0]}#{index}"] for index in range(len(chunks))]
        assert all(0 < len(part) <= KEYRING_CHUNK for part in parts)
        head = "".join(parts)
        assert hashlib.sha256(head.encode()).hexdigest() == digest
    else:
        assert not chunks
    session = Session.from_json(json.loads(head))
    assert session is not None
    assert session.refresh_token
    return session, len(chunks)


def _claims(id_token: str) -> dict[str, Any]:
    payload = id_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert isinstance(claims, dict)
    return claims


def _secrets(world: CLIWorld, password: str, *sessions: Session) -> list[str]:
    found = [password, *(str(entry["token"]) for entry in world.cached_credentials().values())]
    for session in sessions:
        found += [session.id_token, session.refresh_token or ""]
    return [secret for secret in found if secret]


def _assert_no_secret(outputs: list[str], found: list[str]) -> None:
    for secret in found:
        assert not any(secret in output for output in outputs), \
            f"secret {fingerprint(secret)} was printed"


def _reads_configmap(world: CLIWorld, namespace: str,
                     env: dict[str, str] | None = None) -> str:
    """kubectl, through the plugin, reads the ConfigMap; returns the plugin's stderr."""
    got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                        "jsonpath={.data.who}", env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout == "world"
    return got.stderr


def _assert_read_back_from_keyring(world: CLIWorld, secret_service: SecretService,
                                   namespace: str) -> str:
    """With the cluster credential expired and no password, the next kubectl call can only
    log in with the session in the keyring: it refreshes with the refresh token it read
    there (a new credential always gets a fresh ID token) and writes the rotated one back:
    one concierge login, no IdP login, and still no file. Returns the plugin's stderr."""
    saved, _ = _stored(secret_service)
    user = world.env["PINNIPED_USERNAME"]
    grants = fixtures_cli.idp_password_grants(world.idp, user)
    logins = fixtures_cli.concierge_logins(world.concierge)
    world.expire_cached_credentials()
    stderr = _reads_configmap(world, namespace)
    assert fixtures_cli.concierge_logins(world.concierge) == logins + 1
    assert fixtures_cli.idp_password_grants(world.idp, user) == grants
    again, _ = _stored(secret_service)
    assert again.refresh_token
    assert fingerprint(again.refresh_token) != fingerprint(saved.refresh_token or "")
    assert not world.session_file.exists()
    return stderr


def test_session_is_kept_in_the_secret_service_and_read_back(
        alice: CLIWorld, secret_service: SecretService) -> None:
    world = alice
    namespace = fixtures_cli.team_namespace(world.cluster, "corp:devs")
    login = world.get_kubeconfig(env=world.password_env("alice"))
    # The keyring worked: nothing announced, no session file, the session in gnome-keyring.
    assert FALLBACK_NOTICE not in login.stderr
    assert not world.session_file.exists()
    session, _ = _stored(secret_service)
    assert _claims(session.id_token)["email"] == "alice@example.com"
    assert secret_service.keyring_files, "gnome-keyring stored nothing on disk"

    read_back = _assert_read_back_from_keyring(world, secret_service, namespace)
    assert FALLBACK_NOTICE not in read_back
    found = _secrets(world, world.idp.user("alice").password, session)
    _assert_no_secret([login.stdout, login.stderr, read_back], found)
    # gnome-keyring keeps its collection encrypted with the login password.
    fixtures_cli.assert_not_stored(secret_service.keyring_files, found)


def test_large_session_is_chunked_across_entries(
        tmp_path: Path, cluster: LocalCluster, idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge],
        secret_service: SecretService) -> None:
    name = f"erin-{secrets.token_hex(3)}"
    private_idp = idp_factory(users=[TestUser(name, secrets.token_urlsafe(12),
                                              f"{name}@example.com", MANY_GROUPS)])
    world = _keyring_world(tmp_path, cluster, private_idp, concierge_factory(private_idp),
                           secret_service)
    world.as_ci_job(name)
    namespace = fixtures_cli.team_namespace(cluster, f"corp:{MANY_GROUPS[-1]}")
    login = world.get_kubeconfig(env=world.password_env(name))
    assert FALLBACK_NOTICE not in login.stderr
    assert not world.session_file.exists()
    session, chunks = _stored(secret_service)
    assert len(session.id_token) > 5 * KEYRING_CHUNK
    assert chunks >= 6
    assert _claims(session.id_token)["groups"] == MANY_GROUPS  # reassembled intact
    assert world.kubeconfig_user()["as-groups"] == [f"corp:{group}" for group in MANY_GROUPS]

    read_back = _assert_read_back_from_keyring(world, secret_service, namespace)
    assert FALLBACK_NOTICE not in read_back
    found = _secrets(world, private_idp.user(name).password, session)
    # Logging out forgets the session: its head entry and every chunk.
    logout = world.pinniped("logout", "--kubeconfig", str(world.kubeconfig))
    assert logout.returncode == 0, logout.stderr
    assert list(secret_service.entries(KEYRING_SERVICE)) == []
    _assert_no_secret([login.stdout, login.stderr, read_back, logout.stdout, logout.stderr],
                      found)


@pytest.mark.parametrize(("outage", "reason", "advice"), [
    ("locked", "the keyring failed: KeyringLocked", REVIVE_THE_KEYRING),
    ("stopped", "only keyring.backends.fail.Keyring, which stores nothing",
     INSTALL_A_KEYRING),
])
def test_keyring_lost_mid_session_falls_back_to_the_sealed_file_once(
        alice: CLIWorld, secret_service: SecretService, outage: str, reason: str,
        advice: str) -> None:
    world = alice
    namespace = fixtures_cli.team_namespace(world.cluster, "corp:devs")
    login = world.get_kubeconfig(env=world.password_env("alice"))
    assert FALLBACK_NOTICE not in login.stderr
    in_keyring, _ = _stored(secret_service)

    # The screen locks (a locked collection refuses every call), or the daemon dies (the bus
    # stays, the Secret Service is gone): the session in the keyring is out of reach.
    if outage == "locked":
        secret_service.lock()
    else:
        secret_service.stop_keyring()
    world.expire_cached_credentials()
    first = _reads_configmap(world, namespace, env=world.password_env("alice"))
    assert first.count(FALLBACK_NOTICE) == 1
    assert reason in first
    assert advice in " ".join(first.split())  # the notice may be wrapped
    assert str(world.session_file) in first
    assert stat.S_IMODE(world.session_file.stat().st_mode) == 0o600
    in_file = world.stored_sessions()
    assert len(in_file) == 1

    # Later calls keep working from the file, without a password, refreshing the session and
    # saving it there again (the IdP rotates refresh tokens), and say nothing more.
    grants = fixtures_cli.idp_password_grants(world.idp, "alice")
    outputs = [login.stderr, first]
    sessions = [*in_file.values()]
    for _ in range(2):
        world.expire_cached_credentials()
        world.expire_cached_id_tokens()
        outputs.append(_reads_configmap(world, namespace))
        (refreshed,) = world.stored_sessions().values()
        assert fingerprint(refreshed.refresh_token or "") != \
            fingerprint(sessions[-1].refresh_token or "")
        sessions.append(refreshed)
    assert fixtures_cli.idp_password_grants(world.idp, "alice") == grants
    assert "".join(outputs).count(FALLBACK_NOTICE) == 1
    found = _secrets(world, world.idp.user("alice").password, in_keyring, *sessions)
    _assert_no_secret(outputs, found)
    fixtures_cli.assert_not_stored([world.session_file], found)


def test_logout_after_a_fallback_forgets_the_session_in_the_file_too(
        alice: CLIWorld, secret_service: SecretService) -> None:
    world = alice
    namespace = fixtures_cli.team_namespace(world.cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env("alice"))
    secret_service.lock()
    world.expire_cached_credentials()
    _reads_configmap(world, namespace, env=world.password_env("alice"))
    assert len(world.stored_sessions()) == 1  # this login went to the file
    # The person unlocks the keyring again (it still holds the older session) and logs out.
    secret_service.restart_keyring()
    logout = world.pinniped("logout", "--kubeconfig", str(world.kubeconfig))
    assert logout.returncode == 0, logout.stderr
    assert list(secret_service.entries(KEYRING_SERVICE)) == []
    assert world.stored_sessions() == {}
    # Logged out means logged out, whichever store the next run finds working.
    secret_service.lock()
    assert "login oidc --issuer" in world.kubectl_fails_fast("get", "configmaps", "-n",
                                                             namespace)


# --- one run, the keyring failing between two calls (in-process, the real backend) -------------

EXPIRY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
SESSION_KEY = "test-session"


def _session() -> Session:
    """A session with random tokens, larger than one keyring entry."""
    return Session(id_token=secrets.token_urlsafe(2 * KEYRING_CHUNK), id_token_expiry=EXPIRY,
                   refresh_token=secrets.token_urlsafe(32))


def _same(found: Session | None, expected: Session) -> bool:
    """Whether `found` is `expected`, compared so that a failure prints no token."""
    return found is not None and all(
        fingerprint(a) == fingerprint(b) for a, b in (
            (found.id_token, expected.id_token),
            (found.refresh_token or "", expected.refresh_token or "")))


def _outage(secret_service: SecretService, outage: str) -> None:
    if outage == "locked":
        secret_service.lock()
    elif outage == "keyring stopped":
        secret_service.stop_keyring()
    else:
        secret_service.stop_bus()


@dataclass
class _Machine:
    """One person's session cache on the real keyring backend; `run()` is a new CLI run's."""

    path: Path
    key_path: Path
    warnings: list[str] = field(default_factory=list)

    def run(self) -> SessionStore:
        from keyring.core import load_keyring

        # The backend `keyring` picks on a desktop, as the CLI's safety filter sees it.
        backend = usable_backend(load_keyring("keyring.backends.SecretService.Keyring"))
        assert not isinstance(backend, str), backend
        return open_store(self.path, CacheKey(self.key_path), self.warnings.append,
                          load_backend=lambda: backend)


@pytest.fixture
def machine(tmp_path: Path, secret_service: SecretService,
            monkeypatch: pytest.MonkeyPatch) -> _Machine:
    # keyring's Secret Service backend finds the bus through the environment, on every call.
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", secret_service.address)
    return _Machine(tmp_path / "config" / "pinniped" / "sessions.json", tmp_path / "key")


def _tokens(*sessions: Session) -> list[str]:
    return [token for session in sessions
            for token in (session.id_token, session.refresh_token or "")]


@pytest.mark.parametrize(("outage", "error"), [
    ("locked", "KeyringLocked"),
    ("keyring stopped", "InitError"),
    ("bus stopped", "FileNotFoundError"),  # the bus removed its socket
])
def test_keyring_failing_within_one_run_keeps_the_refreshed_session(
        machine: _Machine, secret_service: SecretService, outage: str, error: str) -> None:
    store = machine.run()
    first, refreshed, again = _session(), _session(), _session()
    store.save(SESSION_KEY, first)
    assert _same(store.load(SESSION_KEY), first)
    assert _stored(secret_service)[1] >= 2  # really in the Secret Service, in chunks
    assert not machine.path.exists()

    # The keyring goes between the load that found the session and the save of the refreshed
    # one: the refreshed session must not be lost (its refresh token replaces the old one).
    _outage(secret_service, outage)
    store.save(SESSION_KEY, refreshed)
    assert len(machine.warnings) == 1
    assert f"the keyring failed: {error}" in machine.warnings[0]
    assert _same(store.load(SESSION_KEY), refreshed)
    store.save(SESSION_KEY, again)
    assert _same(store.load(SESSION_KEY), again)
    assert len(machine.warnings) == 1
    # The next run, without a keyring, finds the newest session in the sealed file.
    next_run = FileSessionStore(machine.path, CacheKey(machine.key_path), machine.warnings.append)
    assert _same(next_run.load(SESSION_KEY), again)
    _assert_no_secret(machine.warnings, _tokens(first, refreshed, again))
    fixtures_cli.assert_not_stored([machine.path], _tokens(first, refreshed, again))


@pytest.mark.parametrize("outage", ["locked", "keyring stopped"])
def test_a_keyring_that_comes_back_does_not_bring_back_the_spent_session(
        machine: _Machine, secret_service: SecretService, outage: str) -> None:
    first, refreshed, again = _session(), _session(), _session()
    machine.run().save(SESSION_KEY, first)
    store = machine.run()
    assert _same(store.load(SESSION_KEY), first)
    _outage(secret_service, outage)
    store.save(SESSION_KEY, refreshed)  # `first`'s refresh token is spent now
    # The person logs back in: the keyring still holds `first` (locked or gone, it could not
    # be told to delete it), but the next run must use the refreshed session, not replay it.
    secret_service.restart_keyring()
    assert _same(_stored(secret_service)[0], first)
    next_run = machine.run()
    assert _same(next_run.load(SESSION_KEY), refreshed)
    next_run.save(SESSION_KEY, again)
    assert _same(_stored(secret_service)[0], again)
    assert SESSION_KEY not in json.loads(machine.path.read_text())["sessions"]
    assert _same(machine.run().load(SESSION_KEY), again)
    assert len(machine.warnings) == 1
    _assert_no_secret(machine.warnings, _tokens(first, refreshed, again))
