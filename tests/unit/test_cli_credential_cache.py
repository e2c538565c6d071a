"""The credential cache: 0600 in 0700, keyed, expiry-aware, and never fatal when corrupt."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path

import pytest

from cli.credential_cache import MIN_REMAINING, Credential, CredentialCache, cache_key

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def _cred(token: str = "tok-1", minutes: int = 10, groups: tuple[str, ...] = ("devs",)
          ) -> Credential:
    return Credential(token, NOW + dt.timedelta(minutes=minutes), "corp:alice", groups)


@pytest.fixture
def warnings() -> list[str]:
    return []


@pytest.fixture
def cache(tmp_path: Path, warnings: list[str]) -> CredentialCache:
    return CredentialCache(tmp_path / "new-dir" / "credentials.json", warnings.append)


def test_round_trip_in_a_private_file(cache: CredentialCache) -> None:
    cache.put("k", _cred(), NOW)
    got = cache.get("k", NOW)
    assert got is not None
    assert (got.token, got.username, got.groups) == ("tok-1", "corp:alice", ("devs",))
    assert got.expiration == NOW + dt.timedelta(minutes=10)
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700


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


@pytest.mark.parametrize("entry", [
    "a string",
    {"token": "", "expirationTimestamp": "2030-01-01T13:00:00Z",
     "identity": {"username": "u", "groups": []}},
    {"token": "t", "expirationTimestamp": "tomorrow", "identity": {"username": "u"}},
    {"token": "t", "expirationTimestamp": "2030-01-01T13:00:00Z", "identity": {"groups": []}},
    {"token": "t", "expirationTimestamp": "2030-01-01T13:00:00Z",
     "identity": {"username": "u", "groups": [1, 2]}},
])
def test_malformed_entry_is_a_miss(cache: CredentialCache, entry: object) -> None:
    cache.path.parent.mkdir(mode=0o700)
    cache.path.write_text(json.dumps({"apiVersion": "cli.pinniped.dev/v1",
                                      "kind": "CredentialCache", "credentials": {"k": entry}}))
    assert cache.get("k", NOW) is None


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file to another user")
def test_file_owned_by_someone_else_is_ignored(cache: CredentialCache) -> None:
    cache.put("k", _cred(), NOW)
    os.chown(cache.path, 12345, 12345)
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
    cache = CredentialCache(blocker / "credentials.json", warnings.append)
    cache.put("k", _cred(), NOW)
    assert any("could not write the credential cache" in w for w in warnings)


def test_keys_are_stable_and_order_independent() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def test_repr_never_shows_the_token() -> None:
    assert "tok-1" not in repr(_cred())
