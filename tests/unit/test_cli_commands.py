"""`get kubeconfig`, `whoami`, `logout` and the kubeconfig upkeep, in-process against fakes."""

from __future__ import annotations

import json
import shlex
import stat
from pathlib import Path

import pytest
import yaml

from cli import kubeconfig as kubeconfig_module
from localenv.fixtures_cli import TEST_CA_DATA, CLIHarness, make_harness

PASSWORD_ENV = {"PINNIPED_USERNAME": "alice", "PINNIPED_PASSWORD": "alice-pw"}
SERVER = "https://k8s.test:6443"


@pytest.fixture
def h(tmp_path: Path) -> CLIHarness:
    return make_harness(tmp_path)


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
    (["--server", "http://plain"], "https://"),
    (["--name", " "], "--name"),
])
def test_get_kubeconfig_usage_errors(h: CLIHarness, extra: list[str],
                                     needle: str) -> None:
    assert _get_kubeconfig(h, None, *extra) == 2
    assert needle in h.last_stderr


def test_get_kubeconfig_needs_the_cluster_ca(h: CLIHarness) -> None:
    args = ["get", "kubeconfig", *h.login_args()[2:], "--server", SERVER]
    assert h.run(args, PASSWORD_ENV) == 2
    assert "--cluster-ca-bundle" in h.last_stderr


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


def test_unwritable_kubeconfig_prints_the_command_that_fixes_it(
        h: CLIHarness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "kubeconfig"
    _get_kubeconfig(h, out)
    h.idp.users["alice"].groups = ["ops"]
    h.clock.advance(601)

    def refuse(path: Path, data: bytes, tighten_dir: bool = False) -> None:
        raise PermissionError(13, "Permission denied")

    exec_before = _user(out)["exec"]
    monkeypatch.setattr(kubeconfig_module, "write_private", refuse)
    assert _run_plugin(h, out) == 0
    assert _user(out)["as-groups"] == ["corp:devs"]
    assert "could not be updated" in h.last_stderr
    assert "Permission denied" in h.last_stderr
    command = h.last_stderr.split("run (as someone who can write it):\n\n", 1)[1]
    argv = shlex.split(command.strip().splitlines()[0])
    assert argv[:3] == ["/usr/local/bin/pinniped", "get", "kubeconfig"]
    monkeypatch.undo()
    # Running exactly that command fixes the file.
    assert h.run(argv[1:]) == 0
    assert _user(out)["as-groups"] == ["corp:ops"]
    assert _user(out)["exec"] == exec_before


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
    from cli.main import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("login", "get", "whoami", "logout"):
        assert command in out
