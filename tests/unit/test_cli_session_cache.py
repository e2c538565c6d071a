"""Session storage: keyring (chunked for large tokens), else a 0600 file, announced once."""

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

from cli import session_cache
from cli.session_cache import (
    KEYRING_SERVICE,
    FileSessionStore,
    KeyringSessionStore,
    Session,
    open_store,
)
from localenv.fixtures_cli import FakeKeyring

EXPIRY = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def _session(size: int = 40) -> Session:
    return Session(id_token="i" * size, id_token_expiry=EXPIRY, refresh_token="r" * size)


def test_file_store_round_trip_is_private(tmp_path: Path) -> None:
    warnings: list[str] = []
    store = FileSessionStore(tmp_path / "p" / "sessions.json", warnings.append, reason="no keys")
    store.save("k", _session())
    assert store.load("k") == _session()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    store.delete("k")
    assert store.load("k") is None


def test_file_fallback_is_announced_once(tmp_path: Path) -> None:
    warnings: list[str] = []
    path = tmp_path / "sessions.json"
    FileSessionStore(path, warnings.append, reason="no backend").save("a", _session())
    FileSessionStore(path, warnings.append, reason="no backend").save("b", _session())
    assert len(warnings) == 1
    assert "no working OS keyring (no backend)" in warnings[0]
    assert str(path) in warnings[0]


def test_corrupt_session_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "sessions.json"
    path.write_text("{{{")
    path.chmod(0o600)
    warnings: list[str] = []
    store = FileSessionStore(path, warnings.append)
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


def test_keyring_failure_falls_back_to_the_file(tmp_path: Path) -> None:
    ring = FakeKeyring()
    warnings: list[str] = []
    store = open_store(tmp_path / "sessions.json", warnings.append, load_backend=lambda: ring)
    ring.fail = True
    store.save("k", _session())
    assert store.load("k") == _session()
    assert json.loads((tmp_path / "sessions.json").read_text())["sessions"]["k"]
    assert len(warnings) == 1
    assert "the keyring failed: RuntimeError" in warnings[0]


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
def test_real_keyring_api_with_large_tokens(tmp_path: Path) -> None:
    backend = _SmallKeyring()
    keyring.set_keyring(backend)
    warnings: list[str] = []
    store = open_store(tmp_path / "sessions.json", warnings.append)
    store.save("k", _session(8000))
    assert store.load("k") == _session(8000)
    assert len(backend.data) > 1
    assert warnings == []
    assert not (tmp_path / "sessions.json").exists()
    store.delete("k")
    assert backend.data == {}


@pytest.mark.usefixtures("system_keyring")
@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring()])  # type: ignore[no-untyped-call]
def test_unusable_backends_use_the_file(tmp_path: Path,
                                        backend: keyring.backend.KeyringBackend) -> None:
    keyring.set_keyring(backend)
    warnings: list[str] = []
    store = open_store(tmp_path / "sessions.json", warnings.append)
    assert isinstance(store, FileSessionStore)
    store.save("k", _session())
    assert store.load("k") == _session()
    assert len(warnings) == 1
    assert "no working OS keyring" in warnings[0]


def test_session_json_rejects_wrong_shapes() -> None:
    assert Session.from_json({"idToken": 1}) is None
    assert Session.from_json({"idToken": "x", "idTokenExpiry": "never"}) is None
    assert Session.from_json("nope") is None
    assert session_cache.Session.from_json(_session().to_json()) == _session()


def test_repr_hides_tokens() -> None:
    assert "iiii" not in repr(_session())
    assert "rrrr" not in repr(_session())
