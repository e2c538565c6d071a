"""The runtime directory's credential cache: unsealed, but only in a directory that is ours alone.

`runtime_cache.cache_path` decides whether there is such a directory (else
the sealed file is used); the file in it is 0600, replaced atomically, and
refused when it is not ours, not private, a symlink or not what we write.
Other users are faked with `owned_by_another_user` (a real chown needs root).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from localenv.fixtures_cli import (
    HOT_PATH_LOGIN_ARGS,
    MALFORMED_ENTRIES,
    CLIHarness,
    assert_not_stored,
    owned_by_another_user,
)
from pinniped_cli import runtime_cache
from pinniped_cli.cluster_credential import credential_cache
from pinniped_cli.credential_cache import Credential, CredentialCache
from pinniped_cli.login_options import parse_login_args
from pinniped_cli.runtime import Runtime

NOW = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def _cred(token: str = "tok-1", minutes: int = 10) -> Credential:
    return Credential(token, NOW + dt.timedelta(minutes=minutes), "corp:alice", ("devs",))


@pytest.fixture
def run(runtime_dir: Path) -> Path:
    return runtime_dir


def _env(tmp_path: Path, run: Path | None) -> dict[str, str]:
    env = {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    if run is not None:
        env["XDG_RUNTIME_DIR"] = str(run)
    return env


def _cache(run: Path, warnings: list[str]) -> CredentialCache:
    path = runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(run)})
    assert path is not None
    return CredentialCache.in_runtime_dir(Path(path), warnings.append)


# --- which directory: cache_path ---------------------------------------------------------------


def test_a_private_runtime_dir_holds_the_cache(run: Path) -> None:
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(run)}) == str(
        run / "pinniped" / "credentials.json")
    (run / "pinniped").mkdir(mode=0o700)
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(run)}) is not None


@pytest.mark.parametrize("value", [None, "", "run", "./run"])
def test_no_or_a_relative_runtime_dir_is_none(run: Path, monkeypatch: pytest.MonkeyPatch,
                                              value: str | None) -> None:
    monkeypatch.chdir(run.parent)  # "run" would name the private directory, were it used
    env = {} if value is None else {"XDG_RUNTIME_DIR": value}
    assert runtime_cache.cache_path(env) is None


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o710, 0o701, 0o770, 0o777])
def test_a_runtime_dir_others_may_enter_is_refused(run: Path, mode: int) -> None:
    run.chmod(mode)
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(run)}) is None


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o711])
def test_a_pinniped_dir_others_may_enter_is_refused(run: Path, mode: int) -> None:
    (run / "pinniped").mkdir()
    (run / "pinniped").chmod(mode)
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(run)}) is None


def test_symlinks_are_refused_for_either_directory(run: Path, tmp_path: Path) -> None:
    link = tmp_path / "run-link"
    link.symlink_to(run)
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(link)}) is None
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (run / "pinniped").symlink_to(elsewhere)
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(run)}) is None


def test_a_file_where_the_directory_should_be_is_refused(run: Path, tmp_path: Path) -> None:
    plain = tmp_path / "a-file"
    plain.write_text("")
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(plain)}) is None
    (run / "pinniped").write_text("")
    assert runtime_cache.cache_path({"XDG_RUNTIME_DIR": str(run)}) is None


def test_directories_of_another_user_are_refused(run: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A runtime directory inherited from someone else (sudo -u keeps XDG_RUNTIME_DIR)."""
    (run / "pinniped").mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(run)}
    with monkeypatch.context() as patch:
        owned_by_another_user(patch, run)
        assert runtime_cache.cache_path(env) is None
    with monkeypatch.context() as patch:
        owned_by_another_user(patch, run / "pinniped")
        assert runtime_cache.cache_path(env) is None
    assert runtime_cache.cache_path(env) is not None


# --- which cache the CLI opens ------------------------------------------------------------------


def _runtime(env: dict[str, str]) -> Runtime:
    return Runtime(env=env, stdout=io.StringIO(), stderr=io.StringIO(), stdin_is_tty=False,
                   stdout_is_tty=False, argv=["pinniped"])


def _opened(tmp_path: Path, run: Path | None) -> CredentialCache:
    env = _env(tmp_path, run)
    rt = _runtime(env)
    cache = credential_cache(parse_login_args(HOT_PATH_LOGIN_ARGS, env), rt)
    assert cache is not None
    return cache


def test_the_cli_keeps_credentials_unsealed_only_in_a_private_runtime_dir(
        tmp_path: Path, run: Path) -> None:
    in_run = _opened(tmp_path, run)
    assert in_run.path == run / "pinniped" / "credentials.json"
    assert in_run.key is None
    for elsewhere in (_opened(tmp_path, None), _refused(tmp_path, run)):
        assert elsewhere.path == tmp_path / "config" / "pinniped" / "credentials.json"
        assert elsewhere.key is not None  # sealed


def _refused(tmp_path: Path, run: Path) -> CredentialCache:
    run.chmod(0o755)
    try:
        return _opened(tmp_path, run)
    finally:
        run.chmod(0o700)


def test_an_explicit_cache_outside_the_runtime_dir_stays_sealed(tmp_path: Path,
                                                                run: Path) -> None:
    env = _env(tmp_path, run)
    rt = _runtime(env)
    options = parse_login_args([*HOT_PATH_LOGIN_ARGS, "--credential-cache",
                                str(tmp_path / "mine.json")], env)
    cache = credential_cache(options, rt)
    assert cache is not None
    assert cache.key is not None


# --- the file ---------------------------------------------------------------------------------


def test_round_trip_plain_in_a_0600_file_in_a_0700_dir(run: Path, tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = _cache(run, warnings)
    cache.put("k", _cred("plain-token-1234567890"), NOW)
    got = _cache(run, warnings).get("k", NOW)
    assert got is not None
    assert (got.token, got.username, got.groups) == ("plain-token-1234567890", "corp:alice",
                                                     ("devs",))
    assert got.expiration == NOW + dt.timedelta(minutes=10)
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    entry = json.loads(cache.path.read_text())["credentials"]["k"]
    assert entry == {"token": "plain-token-1234567890",
                     "expirationTimestamp": "2030-01-01T12:10:00Z",
                     "identity": {"username": "corp:alice", "groups": ["devs"]}}
    assert sorted(os.listdir(cache.path.parent)) == ["credentials.json"]  # no key, no leftovers
    assert not (tmp_path / "home").exists()  # nor one in the state directory
    assert warnings == []


def test_a_loose_pinniped_dir_of_ours_is_tightened_at_the_next_write(run: Path) -> None:
    (run / "pinniped").mkdir()
    (run / "pinniped").chmod(0o755)
    cache = CredentialCache.in_runtime_dir(run / "pinniped" / "credentials.json", print)
    cache.put("k", _cred(), NOW)
    assert stat.S_IMODE((run / "pinniped").stat().st_mode) == 0o700


def test_writes_are_atomic_and_leave_nothing_behind(run: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    cache = _cache(run, warnings)
    cache.put("k", _cred("first"), NOW)
    before = cache.path.read_bytes()

    def fail(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    cache.put("k", _cred("second"), NOW)
    assert cache.path.read_bytes() == before  # the old file, whole
    assert sorted(os.listdir(cache.path.parent)) == ["credentials.json"]
    assert any("could not write the credential cache" in w and "No space left" in w
               for w in warnings)


def test_a_pinniped_dir_swapped_for_a_symlink_is_not_written_through(
        run: Path, tmp_path: Path) -> None:
    warnings: list[str] = []
    cache = _cache(run, warnings)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (run / "pinniped").symlink_to(elsewhere)
    cache.put("k", _cred(), NOW)
    assert list(elsewhere.iterdir()) == []
    assert any("only you can open" in w for w in warnings)
    assert not any("tok-1" in w for w in warnings)


def _loosen(path: Path, _: pytest.MonkeyPatch) -> None:
    path.chmod(0o644)


def _give_away(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owned_by_another_user(monkeypatch, path)


def _symlink(path: Path, _: pytest.MonkeyPatch) -> None:
    planted = path.with_name("planted.json")
    path.rename(planted)
    path.symlink_to(planted)


@pytest.mark.parametrize("damage", [_loosen, _give_away, _symlink],
                         ids=["readable-by-others", "another-users", "symlink"])
def test_a_file_not_ours_alone_is_a_silent_miss_and_is_replaced(
        run: Path, monkeypatch: pytest.MonkeyPatch,
        damage: Callable[[Path, pytest.MonkeyPatch], None]) -> None:
    warnings: list[str] = []
    cache = _cache(run, warnings)
    cache.put("k", _cred(), NOW)
    assert cache.get("k", NOW) is not None
    damage(cache.path, monkeypatch)
    assert cache.get("k", NOW) is None
    assert warnings == []
    monkeypatch.undo()
    cache.put("k", _cred("fresh"), NOW)  # replaced by a file of ours, 0600, no symlink
    assert not cache.path.is_symlink()
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    got = cache.get("k", NOW)
    assert got is not None
    assert got.token == "fresh"


def test_a_corrupt_file_is_said_once_and_replaced(run: Path) -> None:
    warnings: list[str] = []
    cache = _cache(run, warnings)
    cache.put("k", _cred(), NOW)
    cache.path.write_text("{ half a file")
    assert cache.get("k", NOW) is None
    assert len(warnings) == 1
    assert "unreadable credential cache" in warnings[0]
    cache.put("k", _cred("fresh"), NOW)
    assert cache.get("k", NOW) is not None


@pytest.mark.parametrize("entry", ["aesgcm1:" + "A" * 80,  # sealed, as in the other file
                                   *MALFORMED_ENTRIES])
def test_an_entry_pinniped_did_not_write_is_a_miss_and_dropped(run: Path, entry: object) -> None:
    cache = _cache(run, [])
    cache.put("good", _cred(), NOW)
    doc = json.loads(cache.path.read_text())
    doc["credentials"]["bad"] = entry
    cache.path.write_text(json.dumps(doc))
    assert cache.get("bad", NOW) is None
    assert cache.get("good", NOW) is not None
    cache.put("other", _cred(), NOW)
    assert set(json.loads(cache.path.read_text())["credentials"]) == {"good", "other"}


def test_the_sealed_file_beside_it_holds_no_token(h: CLIHarness, tmp_path: Path,
                                                  run: Path) -> None:
    """A real login with a runtime directory: the credential goes there, not to ~/.config."""
    h.env.update({"XDG_RUNTIME_DIR": str(run), "PINNIPED_USERNAME": "alice",
                  "PINNIPED_PASSWORD": "alice-pw"})
    assert h.run(h.login_args(), {"KUBERNETES_EXEC_INFO": h.exec_info()}) == 0, h.last_stderr
    token = json.loads(h.last_stdout)["status"]["token"]
    entry = next(iter(json.loads(
        (run / "pinniped" / "credentials.json").read_text())["credentials"].values()))
    assert entry["token"] == token
    assert not h.credential_cache.exists()
    for path in h.config_dir.iterdir():  # the session file, sealed as before
        assert_not_stored([path], [token])
