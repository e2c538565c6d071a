"""The sealed credential cache: 0600 in 0700, keyed, expiry-aware, never fatal when corrupt.

(The runtime directory's unsealed one: test_cli_runtime_cache.py.)
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest

from localenv.fixtures_cli import MALFORMED_ENTRIES, assert_not_stored, owned_by_another_user
from pinniped_cli.credential_cache import (
    KIND,
    MIN_REMAINING,
    Credential,
    CredentialCache,
    cache_key,
)
from pinniped_cli.sealing import CacheKey

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def _cred(token: str = "tok-1", minutes: int = 10, groups: tuple[str, ...] = ("devs",)
          ) -> Credential:
    return Credential(token, NOW + dt.timedelta(minutes=minutes), "corp:alice", groups)


@pytest.fixture
def warnings() -> list[str]:
    return []


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "runtime" / "pinniped" / "cache.key"


@pytest.fixture
def cache(tmp_path: Path, key_file: Path, warnings: list[str]) -> CredentialCache:
    return CredentialCache(tmp_path / "new-dir" / "credentials.json", CacheKey(key_file),
                           warnings.append)


def _key(cache: CredentialCache) -> CacheKey:
    assert cache.key is not None  # these caches are sealed
    return cache.key


def _reopen(cache: CredentialCache, warnings: list[str]) -> CredentialCache:
    """The same files as a new process sees them (nothing remembered in memory)."""
    return CredentialCache(cache.path, CacheKey(_key(cache).path), warnings.append)


def _entries(cache: CredentialCache) -> dict[str, object]:
    entries = json.loads(cache.path.read_text())["credentials"]
    assert isinstance(entries, dict)
    return entries


def _write_entries(cache: CredentialCache, entries: dict[str, object]) -> None:
    cache.path.write_text(json.dumps({"apiVersion": "cli.pinniped.dev/v1",
                                      "kind": "CredentialCache", "credentials": entries}))


def test_round_trip_in_a_private_file(cache: CredentialCache, warnings: list[str]) -> None:
    cache.put("k", _cred(), NOW)
    got = _reopen(cache, warnings).get("k", NOW)
    assert got is not None
    assert (got.token, got.username, got.groups) == ("tok-1", "corp:alice", ("devs",))
    assert got.expiration == NOW + dt.timedelta(minutes=10)
    for path, mode in ((cache.path, 0o600), (cache.path.parent, 0o700),
                       (_key(cache).path, 0o600), (_key(cache).path.parent, 0o700)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert warnings == []


def test_the_file_holds_no_token_in_any_readable_form(cache: CredentialCache) -> None:
    tokens = ['eyJhbGciOi.tok/"with\\odd+chars=é' + "x" * 30, "second-" + "y" * 40]
    cache.put("a", _cred(tokens[0]), NOW)
    cache.put("b", _cred(tokens[1]), NOW)
    assert_not_stored([cache.path], tokens)
    assert all(str(v).startswith("aesgcm1:") for v in _entries(cache).values())
    assert _key(cache).path.parent != cache.path.parent  # the key is kept apart
    assert cache.get("a", NOW) is not None


def test_a_tampered_entry_is_a_miss_and_is_replaced(cache: CredentialCache,
                                                    warnings: list[str]) -> None:
    cache.put("k", _cred(), NOW)
    sealed = str(_entries(cache)["k"])
    flipped = "B" if sealed[-5] == "A" else "A"
    _write_entries(cache, {"k": sealed[:-5] + flipped + sealed[-4:]})
    assert _reopen(cache, warnings).get("k", NOW) is None
    cache.put("k", _cred("tok-2"), NOW)
    got = _reopen(cache, warnings).get("k", NOW)
    assert got is not None
    assert got.token == "tok-2"


def test_swapped_entries_are_misses(cache: CredentialCache, warnings: list[str]) -> None:
    cache.put("alice", _cred("alice-token"), NOW)
    cache.put("bob", _cred("bob-token"), NOW)
    entries = _entries(cache)
    _write_entries(cache, {"alice": entries["bob"], "bob": entries["alice"]})
    reopened = _reopen(cache, warnings)
    assert reopened.get("alice", NOW) is None
    assert reopened.get("bob", NOW) is None
    assert warnings == []


def test_a_lost_key_is_a_miss_then_a_fresh_entry_works(cache: CredentialCache,
                                                       warnings: list[str]) -> None:
    cache.put("k", _cred("old"), NOW)
    cache.put("other", _cred("other"), NOW)
    _key(cache).path.unlink()  # e.g. the runtime directory was emptied at a reboot
    after_reboot = _reopen(cache, warnings)
    assert after_reboot.get("k", NOW) is None
    after_reboot.put("k", _cred("new"), NOW)
    got = _reopen(cache, warnings).get("k", NOW)
    assert got is not None
    assert got.token == "new"
    assert set(_entries(cache)) == {"k"}  # what the lost key sealed is gone
    assert warnings == []


def test_plain_text_entries_of_older_versions_are_misses_and_dropped(
        cache: CredentialCache) -> None:
    cache.path.parent.mkdir(mode=0o700)
    _write_entries(cache, {"old": {"token": "plain-text-token-1234",
                                   "expirationTimestamp": "2030-01-01T13:00:00Z",
                                   "identity": {"username": "corp:alice", "groups": []}}})
    assert cache.get("old", NOW) is None
    cache.put("k", _cred(), NOW)
    assert set(_entries(cache)) == {"k"}
    assert_not_stored([cache.path], ["plain-text-token-1234"])


def test_a_key_that_cannot_be_made_warns_and_writes_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    warnings: list[str] = []
    cache = CredentialCache(tmp_path / "credentials.json",
                            CacheKey(blocker / "pinniped" / "cache.key"), warnings.append)
    cache.put("k", _cred(), NOW)
    assert not cache.path.exists()
    assert len(warnings) == 1
    assert "cannot create the cache key" in warnings[0]
    assert "tok-1" not in warnings[0]


def test_other_keys_miss(cache: CredentialCache) -> None:
    cache.put("k", _cred(), NOW)
    assert cache.get("other", NOW) is None


def test_reused_until_shortly_before_expiry(cache: CredentialCache) -> None:
    cache.put("k", _cred(minutes=10), NOW)
    almost = NOW + dt.timedelta(minutes=10) - MIN_REMAINING
    assert cache.get("k", almost - dt.timedelta(seconds=1)) is not None
    assert cache.get("k", almost + dt.timedelta(seconds=1)) is None
    # ...but logout may still revoke it until it really expires.
    assert cache.get("k", almost + dt.timedelta(seconds=1),
                     min_remaining=dt.timedelta(0)) is not None


def test_expired_entries_are_pruned_on_write(cache: CredentialCache) -> None:
    cache.put("old", _cred("a", minutes=1), NOW)
    cache.put("new", _cred("b", minutes=10), NOW + dt.timedelta(minutes=5))
    entries = json.loads(cache.path.read_text())["credentials"]
    assert set(entries) == {"new"}


@pytest.mark.parametrize("content", [
    b"\x00\xff garbage",
    b"[]",
    b'{"apiVersion": "something/else", "credentials": {}}',
    b'{"apiVersion": "cli.pinniped.dev/v1", "credentials": []}',
])
def test_corrupt_file_is_a_miss_and_is_replaced(cache: CredentialCache, warnings: list[str],
                                                content: bytes) -> None:
    cache.path.parent.mkdir(mode=0o700)
    cache.path.write_bytes(content)
    assert cache.get("k", NOW) is None
    assert any("unreadable credential cache" in w for w in warnings)
    cache.put("k", _cred(), NOW)
    assert cache.get("k", NOW) is not None


@pytest.mark.parametrize("entry", MALFORMED_ENTRIES)
def test_malformed_entry_is_a_miss(cache: CredentialCache, entry: object) -> None:
    cache.path.parent.mkdir(mode=0o700)
    good = {"token": "t", "expirationTimestamp": "2030-01-01T13:00:00Z",
            "identity": {"username": "u", "groups": ["g"]}}
    _write_entries(cache, {"k": _key(cache).seal(KIND, "k", json.dumps(good).encode())})
    assert cache.get("k", NOW) is not None  # sealed like this, a good entry is a hit...
    # ...so a malformed one sealed properly is refused by the parsing of what it holds.
    _write_entries(cache, {"k": _key(cache).seal(KIND, "k", json.dumps(entry).encode())})
    assert cache.get("k", NOW) is None
    _write_entries(cache, {"k": entry})  # and unsealed
    assert cache.get("k", NOW) is None


def test_file_owned_by_someone_else_is_ignored(cache: CredentialCache,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache.put("k", _cred(), NOW)
    assert cache.get("k", NOW) is not None
    owned_by_another_user(monkeypatch, cache.path)
    assert cache.get("k", NOW) is None


def test_symlinked_cache_file_is_not_followed(cache: CredentialCache, tmp_path: Path) -> None:
    cache.put("k", _cred(), NOW)
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_bytes(cache.path.read_bytes())
    cache.path.unlink()
    cache.path.symlink_to(elsewhere)
    assert cache.get("k", NOW) is None


def test_remove_drops_only_the_named_keys(cache: CredentialCache) -> None:
    cache.put("a", _cred("a"), NOW)
    cache.put("b", _cred("b"), NOW)
    assert cache.remove({"a"}) == 1
    assert cache.get("a", NOW) is None
    assert cache.get("b", NOW) is not None
    assert cache.remove() == 1


def test_unwritable_cache_warns_instead_of_failing(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    warnings: list[str] = []
    cache = CredentialCache(blocker / "credentials.json", CacheKey(tmp_path / "k" / "cache.key"),
                            warnings.append)
    cache.put("k", _cred(), NOW)
    assert any("could not write the credential cache" in w for w in warnings)


def test_keys_are_stable_and_order_independent() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_repr_never_shows_the_token() -> None:
    assert "tok-1" not in repr(_cred())
