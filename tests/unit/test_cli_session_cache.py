"""Session storage: keyring (chunked for large tokens), else a sealed 0600 file, announced once."""

from __future__ import annotations

import datetime as dt
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.backend
import pytest
from keyring.backends import fail, null

from localenv.fixtures_cli import FakeKeyring, assert_not_stored
from pinniped_cli import session_cache
from pinniped_cli.errors import CLIError
from pinniped_cli.sealing import CacheKey
from pinniped_cli.session_cache import (
    KEYRING_SERVICE,
    KIND,
    FileSessionStore,
    KeyringSessionStore,
    Session,
    SessionStore,
    open_store,
    usable_backend,
)

EXPIRY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _session(size: int = 40) -> Session:
    return Session(id_token="i" * size, id_token_expiry=EXPIRY, refresh_token="r" * size)


@pytest.fixture
def key(tmp_path: Path) -> CacheKey:
    return CacheKey(tmp_path / "runtime" / "pinniped" / "cache.key")


def _file_store(path: Path, key: CacheKey, warnings: list[str], reason: str = ""
                ) -> FileSessionStore:
    """A store as a new process opens it: the key is read afresh."""
    return FileSessionStore(path, CacheKey(key.path), warnings.append, reason=reason)


def _sessions(path: Path) -> dict[str, object]:
    sessions = json.loads(path.read_text())["sessions"]
    assert isinstance(sessions, dict)
    return sessions


def _write_sessions(path: Path, sessions: dict[str, object]) -> None:
    path.write_text(json.dumps({"apiVersion": "cli.pinniped.dev/v1", "kind": "SessionCache",
                                "sessions": sessions}))


def test_file_store_round_trip_is_private(tmp_path: Path, key: CacheKey) -> None:
    warnings: list[str] = []
    store = _file_store(tmp_path / "p" / "sessions.json", key, warnings, reason="no keys")
    store.save("k", _session())
    assert _file_store(store.path, key, warnings).load("k") == _session()
    for path, mode in ((store.path, 0o600), (store.path.parent, 0o700),
                       (key.path, 0o600), (key.path.parent, 0o700)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    store.delete("k")
    assert store.load("k") is None


def test_the_file_holds_no_token_in_any_readable_form(tmp_path: Path, key: CacheKey) -> None:
    path = tmp_path / "sessions.json"
    sessions = {name: Session(id_token=f"eyJ.{name}-id-token/\"odd\\+é=" + "i" * 30,
                              id_token_expiry=EXPIRY, refresh_token=f"rt-{name}-" + "r" * 43)
                for name in ("a", "b")}
    for name, session in sessions.items():
        _file_store(path, key, []).save(name, session)
    assert_not_stored([path], [t for s in sessions.values()
                               for t in (s.id_token, s.refresh_token or "")])
    assert all(str(v).startswith("aesgcm1:") for v in _sessions(path).values())
    assert _file_store(path, key, []).load("a") == sessions["a"]


def test_a_tampered_session_is_a_miss_said_once(tmp_path: Path, key: CacheKey) -> None:
    path = tmp_path / "sessions.json"
    _file_store(path, key, []).save("k", _session())
    sealed = str(_sessions(path)["k"])
    flipped = "B" if sealed[-5] == "A" else "A"
    _write_sessions(path, {"k": sealed[:-5] + flipped + sealed[-4:]})
    warnings: list[str] = []
    assert _file_store(path, key, warnings).load("k") is None
    assert len(warnings) == 1
    assert "cannot be opened" in warnings[0]
    assert "log in again" in warnings[0]


def test_swapped_sessions_are_misses(tmp_path: Path, key: CacheKey) -> None:
    path = tmp_path / "sessions.json"
    _file_store(path, key, []).save("alice", _session(40))
    _file_store(path, key, []).save("bob", _session(50))
    sessions = _sessions(path)
    _write_sessions(path, {"alice": sessions["bob"], "bob": sessions["alice"]})
    store = _file_store(path, key, [])
    assert store.load("alice") is None
    assert store.load("bob") is None


def test_a_lost_key_is_a_miss_then_a_fresh_session_works(tmp_path: Path,
                                                        key: CacheKey) -> None:
    path = tmp_path / "sessions.json"
    _file_store(path, key, []).save("k", _session(40))
    _file_store(path, key, []).save("other", _session(50))
    key.path.unlink()  # a reboot emptied the runtime directory
    warnings: list[str] = []
    store = _file_store(path, key, warnings)
    assert store.load("k") is None
    assert str(key.path) in warnings[0]
    store.save("k", _session(60))
    assert _file_store(path, key, []).load("k") == _session(60)
    assert set(_sessions(path)) == {"k"}  # what the lost key sealed is dropped


def test_plain_text_sessions_of_older_versions_are_dropped(tmp_path: Path,
                                                           key: CacheKey) -> None:
    path = tmp_path / "sessions.json"
    path.write_text("")
    path.chmod(0o600)
    legacy = Session(id_token="legacy-id-token-123456", id_token_expiry=EXPIRY,
                     refresh_token="legacy-refresh-token-123456")
    _write_sessions(path, {"old": legacy.to_json()})
    store = _file_store(path, key, [])
    assert store.load("old") is None
    store.save("k", _session(50))
    assert set(_sessions(path)) == {"k"}
    assert_not_stored([path], [legacy.id_token, legacy.refresh_token or ""])


def test_malformed_sealed_session_is_a_miss(tmp_path: Path, key: CacheKey) -> None:
    path = tmp_path / "sessions.json"
    _write_sessions(path, {"k": key.seal(KIND, "k", json.dumps(_session().to_json()).encode())})
    assert _file_store(path, key, []).load("k") == _session()  # sealed right, it opens...
    _write_sessions(path, {"k": key.seal(KIND, "k", b'{"idToken": 5}')})
    assert _file_store(path, key, []).load("k") is None  # ...so this is refused for its content


def test_a_key_that_cannot_be_made_says_what_to_check(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    store = FileSessionStore(tmp_path / "sessions.json",
                             CacheKey(blocker / "pinniped" / "cache.key"), lambda _: None)
    with pytest.raises(CLIError, match=r"cannot create the cache key .*permissions"):
        store.save("k", _session())
    assert not store.path.exists()


def test_file_fallback_is_announced_once(tmp_path: Path, key: CacheKey) -> None:
    warnings: list[str] = []
    path = tmp_path / "sessions.json"
    _file_store(path, key, warnings, reason="no backend").save("a", _session())
    _file_store(path, key, warnings, reason="no backend").save("b", _session())
    assert len(warnings) == 1
    assert "no working OS keyring (no backend)" in warnings[0]
    assert str(path) in warnings[0]


def test_corrupt_session_file_is_replaced(tmp_path: Path, key: CacheKey) -> None:
    path = tmp_path / "sessions.json"
    path.write_text("{{{")
    path.chmod(0o600)
    warnings: list[str] = []
    store = _file_store(path, key, warnings)
    assert store.load("k") is None
    store.save("k", _session())
    assert store.load("k") == _session()
    assert any("unreadable session cache" in w for w in warnings)


def test_small_session_is_one_keyring_entry() -> None:
    ring = FakeKeyring(max_length=1000)
    store = KeyringSessionStore(ring)
    store.save("k", _session(40))
    assert list(ring.entries) == [(KEYRING_SERVICE, "k")]
    assert store.load("k") == _session(40)


def test_large_tokens_are_chunked_under_the_entry_limit() -> None:
    ring = FakeKeyring(max_length=1000)
    store = KeyringSessionStore(ring)
    big = _session(6000)  # an ID token with many groups, and a long refresh token
    store.save("k", big)
    assert len(ring.entries) > 10
    assert all(len(value) <= 1000 for value in ring.entries.values())
    assert store.load("k") == big
    # Shrinking leaves no stale chunks behind; deleting leaves nothing at all.
    store.save("k", _session(1200))
    assert store.load("k") == _session(1200)
    assert len(ring.entries) == 1 + 3  # head + ceil(len/1000) chunks
    store.delete("k")
    assert ring.entries == {}


def test_tampered_chunk_means_no_session_rather_than_a_wrong_one() -> None:
    ring = FakeKeyring(max_length=500)
    store = KeyringSessionStore(ring, chunk=500)
    store.save("k", _session(3000))
    ring.entries[(KEYRING_SERVICE, "k#1")] = "x" * 500
    assert store.load("k") is None
    del ring.entries[(KEYRING_SERVICE, "k#2")]
    assert store.load("k") is None


def test_a_session_file_that_cannot_be_written_says_what_to_check(tmp_path: Path,
                                                                 key: CacheKey) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    warnings: list[str] = []
    store = _file_store(blocker / "sessions.json", key, warnings)
    store.save("k", _session())  # not an exception: the login it follows still worked
    assert len(warnings) == 1
    assert f"could not write the session cache {blocker / 'sessions.json'}" in warnings[0]
    assert "permissions of that directory" in warnings[0]
    assert store.load("k") is None


def test_a_keyring_that_fails_leaves_no_stale_session_behind(tmp_path: Path,
                                                             key: CacheKey) -> None:
    ring = FakeKeyring()
    store = open_store(tmp_path / "sessions.json", key, lambda _: None,
                       load_backend=lambda: ring)
    store.save("k", _session(40))  # in the keyring
    ring.fail_writes = True
    store.save("k", _session(50))  # the keyring refuses: the file takes the newer session
    assert store.load("k") == _session(50)
    # A later run with a working keyring must not find (and replay) the older refresh token.
    assert ring.entries == {}
    ring.fail_writes = False
    assert KeyringSessionStore(ring).load("k") is None


def test_keyring_failure_falls_back_to_the_file(tmp_path: Path, key: CacheKey) -> None:
    ring = FakeKeyring()
    warnings: list[str] = []
    store = open_store(tmp_path / "sessions.json", key, warnings.append,
                       load_backend=lambda: ring)
    ring.fail = True
    store.save("k", _session())
    assert store.load("k") == _session()
    assert str(_sessions(tmp_path / "sessions.json")["k"]).startswith("aesgcm1:")
    assert len(warnings) == 1
    assert "the keyring failed: RuntimeError" in warnings[0]


class _LockableKeyring(FakeKeyring):
    """A keyring that, locked, refuses every call, deletes too (as gnome-keyring does)."""

    locked = False

    def delete_password(self, service: str, username: str) -> None:
        if self.locked:
            raise RuntimeError("keyring is locked")
        super().delete_password(service, username)


def _run(path: Path, key: CacheKey, ring: _LockableKeyring, locked: bool) -> SessionStore:
    """The session store of a new run, with the keyring locked or not."""
    ring.fail = ring.locked = locked
    return open_store(path, CacheKey(key.path), lambda _: None, load_backend=lambda: ring)


def test_a_session_left_in_the_file_by_a_locked_keyring_wins_until_replaced(
        tmp_path: Path, key: CacheKey) -> None:
    path, ring = tmp_path / "sessions.json", _LockableKeyring()
    _run(path, key, ring, locked=False).save("k", _session(40))
    # A refresh while the keyring is locked: the newer session goes to the file, and the
    # older one (its refresh token now spent) stays in the keyring, which refuses the delete.
    _run(path, key, ring, locked=True).save("k", _session(50))
    unlocked = _run(path, key, ring, locked=False)
    assert KeyringSessionStore(ring).load("k") == _session(40)
    assert unlocked.load("k") == _session(50)  # not the spent one
    unlocked.save("k", _session(60))
    assert KeyringSessionStore(ring).load("k") == _session(60)
    assert "k" not in _sessions(path)


def test_delete_with_a_working_keyring_forgets_a_session_left_in_the_file(
        tmp_path: Path, key: CacheKey) -> None:
    path, ring = tmp_path / "sessions.json", _LockableKeyring()
    _run(path, key, ring, locked=False).save("k", _session(40))
    _run(path, key, ring, locked=True).save("k", _session(50))
    _run(path, key, ring, locked=False).delete("k")  # logout
    assert ring.entries == {}
    assert _run(path, key, ring, locked=True).load("k") is None
    assert _run(path, key, ring, locked=False).load("k") is None


class _SmallKeyring(keyring.backend.KeyringBackend):
    """A real `keyring` backend class with a Windows-like entry size limit."""

    priority = 1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.data: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.data.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        if len(password) > 1280:
            raise keyring.errors.PasswordSetError("too large for this keyring")
        self.data[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        try:
            del self.data[(service, username)]
        except KeyError:
            raise keyring.errors.PasswordDeleteError(username) from None


@pytest.fixture
def system_keyring() -> Iterator[None]:
    previous = keyring.get_keyring()
    yield
    keyring.set_keyring(previous)


@pytest.mark.usefixtures("system_keyring")
def test_real_keyring_api_with_large_tokens(tmp_path: Path, key: CacheKey) -> None:
    backend = _SmallKeyring()
    keyring.set_keyring(backend)
    warnings: list[str] = []
    store = open_store(tmp_path / "sessions.json", key, warnings.append)
    store.save("k", _session(8000))
    assert store.load("k") == _session(8000)
    assert len(backend.data) > 1
    assert warnings == []
    assert not (tmp_path / "sessions.json").exists()
    assert not key.path.exists()  # the keyring protects its entries itself: nothing sealed
    store.delete("k")
    assert backend.data == {}


@pytest.mark.usefixtures("system_keyring")
@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring()])  # type: ignore[no-untyped-call]
def test_unusable_backends_use_the_file(tmp_path: Path, key: CacheKey,
                                        backend: keyring.backend.KeyringBackend) -> None:
    keyring.set_keyring(backend)
    warnings: list[str] = []
    store = open_store(tmp_path / "sessions.json", key, warnings.append)
    assert isinstance(store, FileSessionStore)
    store.save("k", _session())
    assert store.load("k") == _session()
    assert len(warnings) == 1
    assert "no working OS keyring" in warnings[0]


def _backend(module: str, name: str) -> keyring.backend.KeyringBackend:
    cls = type(name, (_SmallKeyring,), {"__module__": module})
    backend: keyring.backend.KeyringBackend = cls()
    return backend


@pytest.mark.usefixtures("system_keyring")
@pytest.mark.parametrize(("module", "name"), [
    ("keyrings.alt.file", "PlaintextKeyring"),
    ("keyrings.alt.file", "EncryptedKeyring"),  # asks for a password nobody can type
    ("keyrings.alt.pyfs", "PlaintextKeyring"),
    ("some.vendor", "ObfuscatedKeyring"),
    ("some.plaintext_store", "Keyring"),
])
def test_backends_that_keep_secrets_readably_use_the_sealed_file(
        tmp_path: Path, key: CacheKey, module: str, name: str) -> None:
    backend = _backend(module, name)
    keyring.set_keyring(backend)
    warnings: list[str] = []
    store = open_store(tmp_path / "sessions.json", key, warnings.append)
    assert isinstance(store, FileSessionStore)
    store.save("k", _session())
    assert backend.data == {}  # type: ignore[attr-defined]
    assert f"{module}.{name} keeps secrets in a plain file" in warnings[0]


class _Chainer:
    """Like keyring's ChainerBackend: members tried in turn, best first."""

    priority = 10

    def __init__(self, *backends: keyring.backend.KeyringBackend) -> None:
        self.backends = list(backends)


def test_a_chain_holding_a_plaintext_backend_uses_its_best_safe_member() -> None:
    safe, plain = _SmallKeyring(), _backend("keyrings.alt.file", "PlaintextKeyring")
    assert usable_backend(_Chainer(safe, plain)) is safe
    assert usable_backend(_Chainer(plain)) == \
        f"{__name__}._Chainer chains only unsafe backends"
    both = _Chainer(safe, _SmallKeyring())
    assert usable_backend(both) is both  # type: ignore[comparison-overlap]
    assert usable_backend(safe) is safe


def test_session_json_rejects_wrong_shapes() -> None:
    assert Session.from_json({"idToken": 1}) is None
    assert Session.from_json({"idToken": "x", "idTokenExpiry": "never"}) is None
    assert Session.from_json("nope") is None
    assert session_cache.Session.from_json(_session().to_json()) == _session()


def test_repr_hides_tokens() -> None:
    assert "iiii" not in repr(_session())
    assert "rrrr" not in repr(_session())
