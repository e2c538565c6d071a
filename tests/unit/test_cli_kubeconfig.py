"""Generated kubeconfigs: rendering, reading them back, and keeping as-groups current."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import pinniped_apis
from pinniped_apis.wire import Identity
from pinniped_cli import kubeconfig
from pinniped_cli.errors import CLIError
from pinniped_cli.kubeconfig import KubeconfigSpec, KubeconfigUpdateFailed, PluginCommand

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()
TRICKY_GROUPS = ("corp:devs", "yes", "on", "null", "1.0", "a: b", "#x", "'quoted'", "y", "N",
                 "~", "0o17", "1_000", "0x1F", ".inf", "<<", "=", "- x", "!tag", "&a", "*a",
                 # Beyond the BMP, and what YAML folds or refuses unescaped:
                 "team-🚀", "\U0010fffd", "nel\x85x", "ls\u2028x", "ps\u2029x", "del\x7fx",
                 "bom\ufeffx", "c1\x9bx", "tab\tx", "nul\x00x", "é")


def _spec(groups: tuple[str, ...] = ("corp:devs",), name: str = "pinniped") -> KubeconfigSpec:
    return KubeconfigSpec(
        name=name, server="https://127.0.0.1:6443", ca_data=CA,
        plugin=PluginCommand("/opt/bin/pinniped"),
        login_args=("login", "oidc", "--issuer", "https://idp", "--update-kubeconfig",
                    "/k/config", "--kubeconfig-user", name),
        identity=Identity("corp:alice@example.com", groups))


def test_render_has_the_exec_stanza_kubectl_needs() -> None:
    doc = yaml.safe_load(kubeconfig.render(_spec()))
    user = doc["users"][0]["user"]
    assert doc["current-context"] == "pinniped"
    assert doc["clusters"][0]["cluster"] == {"server": "https://127.0.0.1:6443",
                                             "certificate-authority-data": CA}
    assert user["as"] == "corp:alice@example.com"
    assert user["as-groups"] == ["corp:devs"]
    assert user["exec"] == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "/opt/bin/pinniped",
        "args": list(_spec().login_args),
        "env": [],
        "installHint": kubeconfig.INSTALL_HINT,
        "provideClusterInfo": True,
        "interactiveMode": "IfAvailable",
    }


def _as_kubectl_reads_it(path: Path) -> dict[str, Any]:
    result = subprocess.run(["kubectl", "--kubeconfig", str(path), "config", "view", "-o",
                             "json"], capture_output=True, text=True, check=True)
    user = json.loads(result.stdout)["users"][0]["user"]
    assert isinstance(user, dict)
    return user


def test_yaml_special_groups_stay_strings_for_kubectl(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(kubeconfig.render(_spec(TRICKY_GROUPS)), encoding="utf-8")
    user = _as_kubectl_reads_it(path)
    assert user["as-groups"] == list(TRICKY_GROUPS)
    assert user["exec"]["interactiveMode"] == "IfAvailable"
    assert "team-🚀" in path.read_text(encoding="utf-8")  # written as itself, not escaped


def test_updated_groups_stay_verbatim_for_kubectl(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(kubeconfig.render(_spec()), encoding="utf-8")
    groups = TRICKY_GROUPS[::-1]
    assert kubeconfig.update_identity(path, "pinniped", Identity("corp:alice", groups))
    assert _as_kubectl_reads_it(path)["as-groups"] == list(groups)


def test_broken_template_is_caught_at_render(tmp_path: Path) -> None:
    (tmp_path / kubeconfig.TEMPLATE_NAME).write_text("users: []\n")
    with pytest.raises(CLIError, match="does not render a user entry"):
        kubeconfig.render(_spec(), template_dir=tmp_path)


def test_missing_template_says_reinstall(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="reinstall"):
        kubeconfig.render(_spec(), template_dir=tmp_path)


def _templates(directory: Path) -> Path:
    directory.mkdir(parents=True)
    source = kubeconfig.REPO_TEMPLATE_DIR / kubeconfig.TEMPLATE_NAME
    (directory / kubeconfig.TEMPLATE_NAME).write_text(source.read_text())
    return directory


def test_templates_in_the_source_tree_come_first(tmp_path: Path) -> None:
    repo = _templates(tmp_path / "checkout" / "kubeconfig-templates")
    _templates(tmp_path / "prefix" / kubeconfig.INSTALLED_TEMPLATE_DIR)
    recorded = _templates(tmp_path / "user-base" / kubeconfig.INSTALLED_TEMPLATE_DIR)
    assert kubeconfig.find_template_dir(repo, str(tmp_path / "prefix"),
                                        recorded=lambda: recorded) == repo


def test_installed_templates_are_used_without_a_source_tree(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    installed = _templates(tmp_path / "venv" / "share" / "pinniped" / "kubeconfig-templates")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))  # the default prefix
    found = kubeconfig.find_template_dir(tmp_path / "site-packages" / "kubeconfig-templates",
                                         recorded=lambda: None)
    assert found == installed
    doc = yaml.safe_load(kubeconfig.render(_spec(), template_dir=found))
    assert doc["users"][0]["user"]["as"] == "corp:alice@example.com"


def test_no_templates_anywhere_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(CLIError, match="reinstall") as caught:
        kubeconfig.find_template_dir(tmp_path / "repo", str(tmp_path / "prefix"),
                                     recorded=lambda: tmp_path / "recorded")
    assert str(tmp_path / "repo") in str(caught.value)
    assert str(tmp_path / "recorded") in str(caught.value)
    assert str(tmp_path / "prefix" / kubeconfig.INSTALLED_TEMPLATE_DIR) in str(caught.value)


def test_an_install_outside_sys_prefix_is_found_through_its_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip install --user or --prefix puts data files under another base than sys.prefix."""
    recorded = _templates(tmp_path / "user-base" / kubeconfig.INSTALLED_TEMPLATE_DIR)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    assert kubeconfig.find_template_dir(tmp_path / "no-checkout",
                                        recorded=lambda: recorded) == recorded


def test_this_checkout_uses_its_own_templates() -> None:
    assert kubeconfig.find_template_dir() == kubeconfig.REPO_TEMPLATE_DIR
    assert kubeconfig.REPO_TEMPLATE_DIR.parent == Path(kubeconfig.__file__).resolve().parents[2]


def test_the_package_installs_the_templates_where_the_cli_looks() -> None:
    root = kubeconfig.REPO_TEMPLATE_DIR.parent
    data_files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"]
    patterns = data_files[str(kubeconfig.INSTALLED_TEMPLATE_DIR)]
    installed = {p.name for pattern in patterns for p in root.glob(pattern)}
    assert kubeconfig.TEMPLATE_NAME in installed


def test_update_identity_changes_only_that_user(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(kubeconfig.render(_spec()))
    other = yaml.safe_load(path.read_text())
    other["users"].append({"name": "someone", "user": {"token": "x"}})
    path.write_text(yaml.safe_dump(other))
    assert kubeconfig.update_identity(path, "pinniped",
                                      Identity("corp:alice@example.com", ("corp:ops", "yes")))
    doc = yaml.safe_load(path.read_text())
    assert doc["users"][0]["user"]["as-groups"] == ["corp:ops", "yes"]
    assert doc["users"][0]["user"]["exec"]["args"] == list(_spec().login_args)
    assert doc["users"][1] == {"name": "someone", "user": {"token": "x"}}
    assert not kubeconfig.update_identity(path, "pinniped",
                                          Identity("corp:alice@example.com", ("corp:ops", "yes")))


def test_update_identity_follows_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.write_text(kubeconfig.render(_spec()))
    link = tmp_path / "link"
    link.symlink_to(real)
    assert kubeconfig.update_identity(link, "pinniped", Identity("corp:alice@example.com", ()))
    assert link.is_symlink()
    assert yaml.safe_load(real.read_text())["users"][0]["user"]["as-groups"] == []


@pytest.mark.parametrize(("content", "needle"), [
    (None, "cannot read"), ("{unclosed", "not valid YAML"), ("users: []", "no user entry")])
def test_update_identity_failures_explain(tmp_path: Path, content: str | None,
                                          needle: str) -> None:
    path = tmp_path / "config"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KubeconfigUpdateFailed, match=needle):
        kubeconfig.update_identity(path, "pinniped", Identity("u", ()))


def test_plugin_command_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kubeconfig.running_plugin_command("/venv/bin/pinniped").command == "/venv/bin/pinniped"
    monkeypatch.chdir(tmp_path)
    assert kubeconfig.running_plugin_command("bin/pinniped").command == str(
        tmp_path / "bin" / "pinniped")
    module = kubeconfig.running_plugin_command("/src/cli/pinniped_cli/__main__.py")
    assert module.command == sys.executable
    assert module.args == ("-m", "pinniped_cli")
    source_dirs = (Path(kubeconfig.__file__).parents[1], Path(pinniped_apis.__file__).parents[1])
    assert module.env == (("PYTHONPATH", os.pathsep.join(map(str, source_dirs))),)


def test_plugin_command_resolves_bare_names_on_path(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "pinniped"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert kubeconfig.running_plugin_command("pinniped").command == str(script)


def _write(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def test_reads_the_pinniped_context_across_kubeconfig_files(tmp_path: Path) -> None:
    first = _write(tmp_path / "a", {"current-context": "pinniped", "contexts": [],
                                    "users": [{"name": "pinniped", "user": {"token": "shadow"}}]})
    second = tmp_path / "b"
    second.write_text(kubeconfig.render(_spec()))
    # kubectl's rule: the first file defining a name wins, so here the user is "shadow"...
    with pytest.raises(CLIError, match="does not log in with `pinniped login oidc`"):
        kubeconfig.load_pinniped_context([first, second], None)
    # ...and here it is the generated one.
    found = kubeconfig.load_pinniped_context([second, first], None)
    assert found.context == "pinniped"
    assert found.server == "https://127.0.0.1:6443"
    found = kubeconfig.load_pinniped_context([second], None)
    assert found.login_args[:2] == ("--issuer", "https://idp")
    assert found.ca_data == CA


def test_reads_a_file_ca(tmp_path: Path) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(base64.b64decode(CA))
    doc = yaml.safe_load(kubeconfig.render(_spec()))
    del doc["clusters"][0]["cluster"]["certificate-authority-data"]
    doc["clusters"][0]["cluster"]["certificate-authority"] = str(ca_file)
    found = kubeconfig.load_pinniped_context([_write(tmp_path / "k", doc)], None)
    assert found.ca_data == CA


@pytest.mark.parametrize(("paths", "context", "needle"), [
    (["missing"], None, "no kubeconfig found"),
    (["good"], "nope", "context 'nope' not found"),
])
def test_context_errors_say_what_to_pass(tmp_path: Path, paths: list[str], context: str | None,
                                         needle: str) -> None:
    (tmp_path / "good").write_text(kubeconfig.render(_spec()))
    with pytest.raises(CLIError, match=needle):
        kubeconfig.load_pinniped_context([tmp_path / p for p in paths], context)


def test_kubeconfig_paths_like_kubectl(tmp_path: Path) -> None:
    assert kubeconfig.kubeconfig_paths("/x", {"KUBECONFIG": "/y"}) == [Path("/x")]
    assert kubeconfig.kubeconfig_paths(None, {"KUBECONFIG": "/y:/z"}) == [Path("/y"), Path("/z")]
    assert kubeconfig.kubeconfig_paths(None, {"HOME": "/h"}) == [Path("/h/.kube/config")]
