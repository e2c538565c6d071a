"""`get kubeconfig`, `whoami`, `logout` and the kubeconfig upkeep, in-process against fakes."""

from __future__ import annotations

import json
import re
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from localenv.fixtures_cli import (
    NO_PASSWORD_ENV,
    PASSWORD_ENV,
    TEST_CA_DATA,
    TEST_SERVER,
    CLIHarness,
    credential_cache_at,
    owned_by_another_user,
)
from pinniped_cli import kubeconfig as kubeconfig_module

SERVER = TEST_SERVER


@pytest.fixture(autouse=True)
def _a_ci_job(h: CLIHarness) -> None:
    """These tests log in with the password flow, as CI does: PINNIPED_USERNAME stays set for
    every command (it is part of the cache keys), the password only where a login is wanted."""
    h.env.update(NO_PASSWORD_ENV)


def _get_kubeconfig(h: CLIHarness, out: Path | None, *extra: str,
                    env: dict[str, str] | None = None) -> int:
    args = ["get", "kubeconfig", *h.login_args()[2:], "--server", SERVER,
            "--cluster-ca-bundle-data", TEST_CA_DATA, *extra]
    if out is not None:
        args += ["-o", str(out)]
    return h.run(args, env if env is not None else PASSWORD_ENV)


def _user(path: Path) -> dict[str, object]:
    user = yaml.safe_load(path.read_text())["users"][0]["user"]
    assert isinstance(user, dict)
    return user


def _user_named(path: Path, name: str) -> dict[str, object]:
    users = {e["name"]: e["user"] for e in yaml.safe_load(path.read_text())["users"]}
    user = users[name]
    assert isinstance(user, dict)
    return user


def _run_plugin(h: CLIHarness, path: Path, env: dict[str, str] | None = None) -> int:
    """Run the plugin exactly as kubectl would from this kubeconfig."""
    doc = yaml.safe_load(path.read_text())
    exec_cfg = doc["users"][0]["user"]["exec"]
    cluster = doc["clusters"][0]["cluster"]
    info = json.dumps({"apiVersion": exec_cfg["apiVersion"], "kind": "ExecCredential",
                       "spec": {"interactive": False, "cluster": {
                           "server": cluster["server"],
                           "certificate-authority-data": cluster["certificate-authority-data"]}}})
    return h.run(exec_cfg["args"], {"KUBERNETES_EXEC_INFO": info, **(env or {})})


def test_get_kubeconfig_writes_identity_and_primes_the_cache(h: CLIHarness,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "kube" / "config"
    assert _get_kubeconfig(h, out) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    user = _user(out)
    assert user["as"] == "corp:alice@example.com"
    assert user["as-groups"] == ["corp:devs"]
    exec_cfg = user["exec"]
    assert isinstance(exec_cfg, dict)
    assert exec_cfg["command"] == "/usr/local/bin/pinniped"
    assert exec_cfg["args"][:2] == ["login", "oidc"]
    assert exec_cfg["args"][-4:] == ["--update-kubeconfig", str(out), "--kubeconfig-user",
                                     "pinniped"]
    assert "--ca-bundle-data" in exec_cfg["args"]
    assert str(out) in h.last_stderr
    # kubectl's first call from this kubeconfig is served from the cache: no network at all.
    before = len(h.router.requests)
    assert _run_plugin(h, out) == 0
    assert len(h.router.requests) == before
    assert json.loads(h.last_stdout)["status"]["token"] in h.concierge.sessions


def test_get_kubeconfig_to_stdout(h: CLIHarness) -> None:
    assert _get_kubeconfig(h, None, "--name", "corp-cluster") == 0
    doc = yaml.safe_load(h.last_stdout)
    assert doc["current-context"] == "corp-cluster"
    assert "--update-kubeconfig" not in doc["users"][0]["user"]["exec"]["args"]
    assert "-o FILE" in h.last_stderr


@pytest.mark.parametrize(("extra", "needle"), [
    (["--server", "http://plain"], "--server must be an https:// URL"),
    (["--server", "https://"], "--server must be an https:// URL"),
    (["--name", " "], "--name"),
])
def test_get_kubeconfig_usage_errors(h: CLIHarness, extra: list[str],
                                     needle: str) -> None:
    assert _get_kubeconfig(h, None, *extra) == 2
    assert needle in h.last_stderr


def test_group_change_updates_the_kubeconfig(h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    h.idp.users["alice"].groups = ["devs", "ops"]
    h.clock.advance(601)
    assert _run_plugin(h, out) == 0  # refreshes, and the new ID token has the new groups
    assert _user(out)["as-groups"] == ["corp:devs", "corp:ops"]
    assert f"updated {out}" in h.last_stderr
    json.loads(h.last_stdout)  # stdout is still only the ExecCredential
    h.clock.advance(601)
    assert _run_plugin(h, out) == 0
    assert "updated" not in h.last_stderr  # unchanged groups: the file is left alone


def _owned_by_someone_else(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owned_by_another_user(monkeypatch, path)


def _unwritable(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(kubeconfig_module, "replace_file", refuse)


def _locked_by_kubectl(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubeconfig_module, "LOCK_WAIT_SECONDS", 0.2)
    path.with_name(path.name + ".lock").write_text("")


@pytest.mark.parametrize(("obstacle", "reason"), [
    (_owned_by_someone_else, "belongs to another user"),
    (_unwritable, "Permission denied"),
    (_locked_by_kubectl, "is locked"),
])
def test_a_kubeconfig_the_plugin_cannot_update_gets_the_command_that_fixes_it(
        h: CLIHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        obstacle: Callable[[Path, pytest.MonkeyPatch], None], reason: str) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    h.idp.users["alice"].groups = ["ops"]
    h.clock.advance(601)
    before = out.read_bytes()
    exec_before = _user(out)["exec"]
    obstacle(out, monkeypatch)
    assert _run_plugin(h, out) == 0  # the credential is still handed to kubectl
    assert out.read_bytes() == before
    assert "could not be updated" in h.last_stderr
    assert reason in h.last_stderr
    command = h.last_stderr.split("run (as someone who can write it):\n\n", 1)[1]
    argv = shlex.split(command.strip().splitlines()[0])
    assert argv[:3] == ["/usr/local/bin/pinniped", "get", "kubeconfig"]
    # Whoever can write the file runs exactly that command, and it is fixed.
    monkeypatch.undo()
    out.with_name(out.name + ".lock").unlink(missing_ok=True)
    assert h.run(argv[1:]) == 0
    assert _user(out)["as-groups"] == ["corp:ops"]
    assert _user(out)["exec"] == exec_before


def test_updating_the_kubeconfig_keeps_its_mode_and_honours_kubectls_lock(
        h: CLIHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    out.chmod(0o640)
    h.idp.users["alice"].groups = ["ops"]
    h.clock.advance(601)
    locks: list[bool] = []
    from pinniped_cli.securefile import replace_file as real_replace


    def replace_seeing_the_lock(path: Path, data: bytes, mode: int, group: int = -1) -> None:
        locks.append(out.with_name(out.name + ".lock").exists())
        real_replace(path, data, mode, group)

    monkeypatch.setattr(kubeconfig_module, "replace_file", replace_seeing_the_lock)
    assert _run_plugin(h, out) == 0
    assert _user(out)["as-groups"] == ["corp:ops"]
    assert locks == [True]  # held while writing...
    assert not out.with_name(out.name + ".lock").exists()  # ...and removed after
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def _other_kubeconfig(path: Path) -> dict[str, object]:
    doc: dict[str, object] = {
        "apiVersion": "v1", "kind": "Config", "current-context": "other",
        "clusters": [{"name": "other", "cluster": {"server": "https://other:6443"}},
                     {"name": "pinniped", "cluster": {"server": "https://stale:6443"}}],
        "contexts": [{"name": "other", "context": {"cluster": "other", "user": "other"}}],
        "users": [{"name": "other", "user": {"token": "static-token"}}],
        "preferences": {"colors": True}}
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o644)
    return doc


def test_get_kubeconfig_merges_into_an_existing_kubeconfig(h: CLIHarness,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    other = _other_kubeconfig(out)
    for _ in range(2):  # a second run replaces our entries rather than adding more
        assert _get_kubeconfig(h, out) == 0
        assert "other entries are kept" in h.last_stderr
        doc = yaml.safe_load(out.read_text())
        for section in ("clusters", "contexts", "users"):
            names = [e["name"] for e in doc[section]]
            assert sorted(names) == ["other", "pinniped"], section
        assert doc["current-context"] == "pinniped"
        assert doc["users"][0] == other["users"][0]  # type: ignore[index]
        assert doc["preferences"] == {"colors": True}
        clusters = {e["name"]: e["cluster"] for e in doc["clusters"]}
        assert clusters["pinniped"]["server"] == SERVER
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert _user_named(out, "pinniped")["as"] == "corp:alice@example.com"
    before = len(h.router.requests)
    assert h.run(["whoami", "--kubeconfig", str(out)]) == 0  # the merged file works
    assert "Username: corp:alice@example.com" in h.last_stdout
    assert len(h.router.requests) == before + 1  # whoami itself; the login was cached


def test_get_kubeconfig_replaces_a_file_of_only_its_own_entries(h: CLIHarness,
                                                                tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    assert _get_kubeconfig(h, out) == 0
    assert _get_kubeconfig(h, out) == 0
    assert "other entries" not in h.last_stderr
    assert out.read_text().startswith("# Generated by `pinniped get kubeconfig`")


def test_get_kubeconfig_will_not_write_over_what_is_not_a_kubeconfig(h: CLIHarness,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "notes.yaml"
    out.write_text("- shopping\n- list\n")
    assert _get_kubeconfig(h, out) == 1
    assert "it is not a kubeconfig" in h.last_stderr
    assert "choose another -o FILE" in h.last_stderr
    assert out.read_text() == "- shopping\n- list\n"


# --- run by hand without a terminal: the device flow goes ahead, the browser flow says why not --


def _device_login_by(h: CLIHarness, username: str) -> None:
    """The fake IdP approves the next device login as `username`, after one pending poll."""
    h.idp.device_answers = ["authorization_pending"]
    h.idp.device_approver = username


def _assert_device_link_shown(h: CLIHarness) -> None:
    assert "open https://idp.test/device on any device and enter the code:" in h.last_stderr
    assert "without a terminal" not in h.last_stderr  # (its last line suggests a kubectl call)


def test_get_kubeconfig_by_hand_without_a_terminal_logs_in_with_the_device_flow(
        h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _device_login_by(h, "bob")
    assert not h.stdin_is_tty
    assert _get_kubeconfig(h, out, "--flow", "device", env={}) == 0
    _assert_device_link_shown(h)
    assert _user(out)["as"] == "corp:bob@example.com"
    assert h.concierge.logins == ["corp:bob@example.com"]


def test_get_kubeconfig_by_hand_without_a_terminal_or_browser_refuses_the_browser_flow(
        h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    assert _get_kubeconfig(h, out, "--flow", "browser", env={}) == 1
    assert "no browser can open here" in h.last_stderr
    assert "--flow device" in h.last_stderr
    assert "kubectl" not in h.last_stderr.lower()
    assert not out.exists()
    assert h.opened == []


def test_whoami_by_hand_without_a_terminal_logs_in_with_the_device_flow(
        h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _device_login_by(h, "alice")
    assert _get_kubeconfig(h, out, "--flow", "device", env={}) == 0
    h.credential_cache.unlink()
    h.keyring.entries.clear()  # the session is gone too: only a new login can help
    _device_login_by(h, "alice")
    assert h.run(["whoami", "--kubeconfig", str(out)], {}) == 0
    assert "Username: corp:alice@example.com" in h.last_stdout
    _assert_device_link_shown(h)
    assert h.idp.count("urn:ietf:params:oauth:grant-type:device_code") == 4  # 2 per login


def test_whoami_asks_the_concierge(h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    assert h.run(["whoami", "--kubeconfig", str(out)]) == 0
    assert "Username: corp:alice@example.com" in h.last_stdout
    assert "Groups: corp:devs" in h.last_stdout
    assert "Credential expires:" in h.last_stdout
    assert f"URL: {SERVER}" in h.last_stdout
    assert any("whoamirequests" in r for r in h.router.requests)
    assert h.run(["whoami", "--kubeconfig", str(out), "-o", "json"]) == 0
    body = json.loads(h.last_stdout)
    assert body["status"]["kubernetesUserInfo"]["user"]["username"] == "corp:alice@example.com"
    for secret in h.secrets_seen():
        assert secret not in h.last_stdout + h.last_stderr


def test_whoami_uses_kubeconfig_env(h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    assert h.run(["whoami"], {"KUBECONFIG": str(out)}) == 0
    assert "corp:alice@example.com" in h.last_stdout


def test_logout_revokes_and_forgets_everything(h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    token = next(iter(h.concierge.sessions))
    assert h.keyring.entries
    assert h.run(["logout", "--kubeconfig", str(out)]) == 0
    assert h.concierge.logouts == ["corp:alice@example.com"]
    assert token not in h.concierge.sessions
    assert len(h.idp.revoked) == 1
    assert h.idp.revoked[0].startswith("rt-")
    assert h.keyring.entries == {}
    assert json.loads(h.credential_cache.read_text())["credentials"] == {}
    assert "stops working within about 10 s" in h.last_stderr
    # Nothing is left to log in with: kubectl's next (non-interactive) call fails fast.
    h.browser_user = None
    assert _run_plugin(h, out) == 1
    assert "without a terminal" in h.last_stderr
    # Until a new login.
    assert _run_plugin(h, out, PASSWORD_ENV) == 0
    assert h.idp.count("password") == 2
    for secret in h.secrets_seen():
        assert secret not in h.last_stderr


def test_logout_with_a_runtime_dir_also_revokes_what_older_versions_sealed_in_config(
        h: CLIHarness, tmp_path: Path, runtime_dir: Path) -> None:
    """Older versions kept the credential sealed in ~/.config even with a runtime directory;
    logins no longer read that file, but logout revokes and forgets what is there."""
    h.env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    env = {"HOME": str(h.tmp_path), "XDG_CONFIG_HOME": str(h.tmp_path / "config"), **h.env}
    in_runtime_dir = runtime_dir / "pinniped" / "credentials.json"
    ((key, credential),) = credential_cache_at(in_runtime_dir, env, print).entries().items()
    legacy = credential_cache_at(h.credential_cache, env, print)  # sealed, as before
    legacy.put(key, credential, h.clock.now())
    in_runtime_dir.unlink()  # as right after an upgrade: only the old file has it
    assert legacy.key is not None
    assert h.run(["logout", "--kubeconfig", str(out)]) == 0, h.last_stderr
    assert h.concierge.logouts == ["corp:alice@example.com"]
    assert credential.token not in h.concierge.sessions
    assert legacy.entries() == {}


def test_logout_without_a_cached_credential_still_clears_the_session(
        h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    h.credential_cache.unlink()
    assert h.run(["logout", "--kubeconfig", str(out)]) == 0
    assert "nothing to revoke at the concierge" in h.last_stderr
    assert h.concierge.logouts == []
    assert h.keyring.entries == {}


def test_logout_reports_concierge_failure_after_clearing(h: CLIHarness,
                                                         tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    h.concierge.unavailable = True
    assert h.run(["logout", "--kubeconfig", str(out)]) == 1
    assert "revoking the session at the concierge failed" in h.last_stderr
    assert h.keyring.entries == {}


def test_logout_of_an_already_revoked_credential(h: CLIHarness, tmp_path: Path) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    h.concierge.sessions.clear()  # revoked elsewhere: the concierge answers 401
    assert h.run(["logout", "--kubeconfig", str(out)]) == 0
    assert "already revoked" in h.last_stderr


def test_whoami_with_a_non_pinniped_kubeconfig(h: CLIHarness, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "current-context": "c", "contexts": [{"name": "c", "context": {"cluster": "k",
                                                                         "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": SERVER}}],
        "users": [{"name": "u", "user": {"token": "static"}}]}))
    assert h.run(["whoami", "--kubeconfig", str(path)]) == 1
    assert "pinniped get kubeconfig" in h.last_stderr


def test_main_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from pinniped_cli.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    listed = re.findall(r"^ {4}(\w+) {2,}\S", out, flags=re.MULTILINE)  # help on its line
    assert listed == ["login", "get", "whoami", "logout", "elevate", "version", "completion"]
