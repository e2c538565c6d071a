"""The cache key and sealing: AES-256-GCM bound to its entry, a key kept apart, never fatal."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from localenv.fixtures_cli import owned_by_another_user, secret_forms
from pinniped_cli import sealing
from pinniped_cli.sealing import CacheKey, KeyUnavailable, key_path

KIND = "CredentialCache"
SECRET = b'{"token":"sealed-secret-value"}'


@pytest.fixture
def key(tmp_path: Path) -> CacheKey:
    return CacheKey(tmp_path / "state" / "pinniped" / "cache.key")


def _blob(sealed: str) -> bytes:
    assert sealed.startswith(sealing.PREFIX)
    return base64.urlsafe_b64decode(sealed[len(sealing.PREFIX):])


def _sealed(blob: bytes) -> str:
    return sealing.PREFIX + base64.urlsafe_b64encode(blob).decode()


def test_round_trip_with_a_private_key_file(key: CacheKey) -> None:
    sealed = key.seal(KIND, "slot", SECRET)
    assert key.open(KIND, "slot", sealed) == SECRET
    # A process that reads the key afresh opens it too.
    assert CacheKey(key.path).open(KIND, "slot", sealed) == SECRET
    assert len(key.path.read_bytes()) == 32
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.path.parent.stat().st_mode) == 0o700
    assert os.listdir(key.path.parent) == ["cache.key"]  # no temporary files left behind


def test_each_seal_has_a_fresh_nonce_and_hides_the_plaintext(key: CacheKey) -> None:
    first, second = key.seal(KIND, "slot", SECRET), key.seal(KIND, "slot", SECRET)
    assert first != second
    assert _blob(first)[:12] != _blob(second)[:12]
    assert len(_blob(first)) == 12 + len(SECRET) + 16  # nonce, ciphertext, tag
    for form in secret_forms(SECRET.decode()):
        assert form not in first.encode()


@pytest.mark.parametrize("position", [0, 11, 12, 20, -1], ids=[
    "nonce-first", "nonce-last", "ciphertext-first", "ciphertext", "tag"])
def test_a_changed_byte_anywhere_does_not_open(key: CacheKey, position: int) -> None:
    blob = bytearray(_blob(key.seal(KIND, "slot", SECRET)))
    blob[position] ^= 0x01
    assert key.open(KIND, "slot", _sealed(bytes(blob))) is None


def test_ciphertext_is_bound_to_its_entry_and_file_kind(key: CacheKey) -> None:
    sealed = key.seal(KIND, "slot-a", SECRET)
    assert key.open(KIND, "slot-b", sealed) is None
    assert key.open("SessionCache", "slot-a", sealed) is None
    assert key.open(KIND, "slot-a", sealed) == SECRET


@pytest.mark.parametrize("value", [
    None, 5, "", "aesgcm1:", "aesgcm1:!!!!", "aesgcm1:é", "aesgcm1:AAAA", "aesgcm2:AAAA",
    {"token": "plain"}])
def test_garbage_is_a_miss_not_an_error(key: CacheKey, value: object) -> None:
    key.seal(KIND, "slot", SECRET)  # a key exists, so only the value is at fault
    assert key.open(KIND, "slot", value) is None


def test_reading_never_creates_a_key(key: CacheKey) -> None:
    assert key.open(KIND, "slot", _sealed(b"\0" * 40)) is None
    assert not key.path.parent.exists()


def test_a_lost_key_makes_old_entries_misses_and_new_ones_work(key: CacheKey) -> None:
    old = key.seal(KIND, "slot", SECRET)
    key.path.unlink()  # a reboot emptied the runtime directory
    fresh = CacheKey(key.path)
    assert fresh.open(KIND, "slot", old) is None
    new = fresh.seal(KIND, "slot", b"new")
    assert fresh.open(KIND, "slot", new) == b"new"
    assert CacheKey(key.path).open(KIND, "slot", old) is None


@pytest.mark.parametrize("damage", ["short", "long", "readable-by-others"])
def test_a_corrupt_or_exposed_key_is_unusable_and_replaced(key: CacheKey, damage: str) -> None:
    old = key.seal(KIND, "slot", SECRET)
    original = key.path.read_bytes()
    if damage == "short":
        key.path.write_bytes(original[:16])
    elif damage == "long":
        key.path.write_bytes(original + b"\n")
    else:
        key.path.chmod(0o644)
    fresh = CacheKey(key.path)
    assert fresh.open(KIND, "slot", old) is None
    new = fresh.seal(KIND, "slot", b"new")
    assert CacheKey(key.path).open(KIND, "slot", new) == b"new"
    assert key.path.read_bytes() != original
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.path.parent.stat().st_mode) == 0o700


def test_a_key_in_a_directory_others_can_write_is_not_used_until_tightened(
        key: CacheKey) -> None:
    old = key.seal(KIND, "slot", SECRET)
    key.path.parent.chmod(0o777)
    assert CacheKey(key.path).open(KIND, "slot", old) is None
    # Writing makes the directory pinniped's own again (0700); then the key is trusted.
    new = CacheKey(key.path).seal(KIND, "slot", b"new")
    assert stat.S_IMODE(key.path.parent.stat().st_mode) == 0o700
    assert CacheKey(key.path).open(KIND, "slot", new) == b"new"


def test_a_symlinked_key_file_is_not_followed_and_is_replaced(key: CacheKey,
                                                              tmp_path: Path) -> None:
    planted = CacheKey(tmp_path / "elsewhere" / "cache.key")
    sealed = planted.seal(KIND, "slot", SECRET)
    key.path.parent.mkdir(parents=True, mode=0o700)
    key.path.symlink_to(planted.path)
    assert key.open(KIND, "slot", sealed) is None
    key.seal(KIND, "slot", b"new")
    assert not key.path.is_symlink()
    assert planted.open(KIND, "slot", sealed) == SECRET  # the link's target is untouched


def test_a_symlinked_key_directory_is_refused(key: CacheKey, tmp_path: Path) -> None:
    real = CacheKey(tmp_path / "real" / "cache.key")
    sealed = real.seal(KIND, "slot", SECRET)
    key.path.parent.parent.mkdir()
    key.path.parent.symlink_to(real.path.parent)
    assert key.open(KIND, "slot", sealed) is None
    with pytest.raises(KeyUnavailable, match="not a directory of yours"):
        key.seal(KIND, "slot", SECRET)


@pytest.mark.parametrize("given_away", ["key", "directory"])
def test_a_key_or_directory_of_another_user_is_refused(key: CacheKey, given_away: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sealed = key.seal(KIND, "slot", SECRET)
    assert CacheKey(key.path).open(KIND, "slot", sealed) == SECRET
    owned_by_another_user(monkeypatch, key.path if given_away == "key" else key.path.parent)
    assert CacheKey(key.path).open(KIND, "slot", sealed) is None
    if given_away == "directory":
        with pytest.raises(KeyUnavailable):
            CacheKey(key.path).seal(KIND, "slot", SECRET)
    else:  # in our own directory, another user's key is replaced by one of ours
        resealed = CacheKey(key.path).seal(KIND, "slot", SECRET)
        assert CacheKey(key.path).open(KIND, "slot", resealed) == SECRET
        assert CacheKey(key.path).open(KIND, "slot", sealed) is None


def test_a_key_that_cannot_be_created_raises_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(KeyUnavailable, match="cannot create the cache key"):
        CacheKey(blocker / "pinniped" / "cache.key").seal(KIND, "slot", SECRET)


def test_losing_the_creation_race_uses_the_winners_key(key: CacheKey,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Between our check and our link, another process publishes its key: we must use it."""
    real_link = os.link
    winner = CacheKey(key.path)

    def link_after_the_winner(src: str, dst: Path) -> None:
        monkeypatch.setattr(os, "link", real_link)
        winner.seal(KIND, "winner", b"first")
        real_link(src, dst)

    monkeypatch.setattr(os, "link", link_after_the_winner)
    mine = key.seal(KIND, "slot", SECRET)
    assert winner.open(KIND, "slot", mine) == SECRET
    assert sorted(os.listdir(key.path.parent)) == ["cache.key"]


def _race(path: str, start: Barrier, results: Queue[str]) -> None:
    start.wait()
    results.put(CacheKey(Path(path)).seal(KIND, "slot", f"from {os.getpid()}".encode()))


def test_processes_racing_to_create_the_key_agree_on_one(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        path = tmp_path / f"attempt-{attempt}" / "pinniped" / "cache.key"
        start, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(path), start, results)) for _ in range(4)]
        for proc in procs:
            proc.start()
        sealed = [results.get(timeout=30) for _ in procs]
        for proc in procs:
            proc.join(timeout=30)
            assert proc.exitcode == 0
        key = CacheKey(path)
        opened = {key.open(KIND, "slot", value) for value in sealed}
        assert None not in opened
        assert len(opened) == 4
        assert os.listdir(path.parent) == ["cache.key"]


# --- where the key lives -------------------------------------------------------------------


def _dir(path: Path, mode: int) -> Path:
    path.mkdir(parents=True)
    path.chmod(mode)
    return path


def test_key_goes_to_a_private_runtime_dir(tmp_path: Path) -> None:
    run = _dir(tmp_path / "run", 0o700)
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(run),
           "XDG_STATE_HOME": str(tmp_path / "state")}
    assert key_path(env) == run / "pinniped" / "cache.key"


def test_key_goes_to_the_state_dir_without_a_runtime_dir(tmp_path: Path) -> None:
    assert key_path({"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s")}) == (
        tmp_path / "s" / "pinniped" / "cache.key")
    expected = tmp_path / ".local" / "state" / "pinniped" / "cache.key"
    assert key_path({"HOME": str(tmp_path)}) == expected
    # The XDG spec: relative paths are invalid and to be ignored.
    assert key_path({"HOME": str(tmp_path), "XDG_STATE_HOME": "relative"}) == expected
    assert key_path({"HOME": str(tmp_path), "XDG_RUNTIME_DIR": ""}) == expected


@pytest.mark.parametrize("unsafe", [
    "world-writable", "group-writable", "symlink", "missing", "relative", "a-file"])
def test_an_unsafe_runtime_dir_is_not_used(tmp_path: Path, unsafe: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if unsafe == "world-writable":
        run = str(_dir(tmp_path / "run", 0o777))
    elif unsafe == "group-writable":
        run = str(_dir(tmp_path / "run", 0o770))
    elif unsafe == "symlink":
        (tmp_path / "run").symlink_to(_dir(tmp_path / "real-run", 0o700))
        run = str(tmp_path / "run")
    elif unsafe == "missing":
        run = str(tmp_path / "no-such-dir")
    elif unsafe == "relative":
        monkeypatch.chdir(_dir(tmp_path / "cwd", 0o700))
        _dir(tmp_path / "cwd" / "run", 0o700)
        run = "run"
    else:
        (tmp_path / "run").write_text("")
        run = str(tmp_path / "run")
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": run}
    assert key_path(env) == tmp_path / ".local" / "state" / "pinniped" / "cache.key"


def test_a_runtime_dir_of_another_user_is_not_used(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = _dir(tmp_path / "run", 0o700)
    assert key_path({"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(run)}) == \
        run / "pinniped" / "cache.key"  # ours: used
    owned_by_another_user(monkeypatch, run)
    assert key_path({"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(run)}).is_relative_to(
        tmp_path / ".local" / "state")


# --- the leak detector the cache tests rely on ------------------------------------------------


def test_the_leak_detector_sees_plain_escaped_and_base64_copies() -> None:
    """`secret_forms` must catch the naive ways of "hiding" a token, or the tests prove nothing."""
    token = 'tok/"odd\\chars+é=' + "x" * 20
    documents = [
        json.dumps({"token": token}).encode(),
        json.dumps({"token": token}, ensure_ascii=False).encode(),
        token.encode(),
    ]
    for prefix in ("", "a", "ab"):
        inner = (prefix + json.dumps({"token": token})).encode()
        documents += [base64.b64encode(inner), base64.urlsafe_b64encode(inner)]
    for document in documents:
        assert any(form in document for form in secret_forms(token)), document
    assert not any(form in json.dumps({"token": "other" * 8}).encode()
                   for form in secret_forms(token))
