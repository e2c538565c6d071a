"""What `pip install pinniped-py` gives a user: the CLI alone, or with the server's extra.

Each check runs in a fresh venv with a regular install of a wheel built from
this checkout, the way a user installs it, never the editable `.venv`.
"""

from __future__ import annotations

import json
import re
import ssl
import sysconfig
import urllib.request
from pathlib import Path

import pytest
import yaml

from localenv import pki
from localenv.cluster import write_kubeconfig
from localenv.fixtures_cli import HOT_PATH_LOGIN_ARGS, exec_info, seed_credential
from localenv.install import InstalledVenv, build_wheel, install
from localenv.procs import ManagedProcess, free_port, wait_for

pytestmark = pytest.mark.integration

OUR_PACKAGES = {"pinniped_cli", "pinniped_concierge", "pinniped_apis"}
SERVER_ONLY = ("fastapi", "uvicorn", "kubernetes", "starlette")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def cli_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> InstalledVenv:
    return install(wheel, tmp_path_factory.mktemp("venv-cli"))


@pytest.fixture(scope="module")
def server_venv(wheel: Path,
                tmp_path_factory: pytest.TempPathFactory) -> InstalledVenv:
    return install(wheel, tmp_path_factory.mktemp("venv-server"), extras="concierge")


def top_level_packages(target: InstalledVenv) -> set[str]:
    """The top-level import names the distribution put into site-packages."""
    code = ("import importlib.metadata as m, json; "
            "files = m.distribution('pinniped-py').files; "
            "print(json.dumps(sorted({f.parts[0] for f in files if f.suffix == '.py'})))")
    return set(json.loads(target.run(target.python, "-c", code, check=True).stdout))


def test_the_cli_installs_alone(cli_venv: InstalledVenv) -> None:
    version = cli_venv.run(cli_venv.script("pinniped"), "version")
    assert version.returncode == 0, version.stderr
    assert re.fullmatch(r"pinniped \d+\.\d+\.\d+\S*\n", version.stdout)
    assert cli_venv.run(cli_venv.script("pinniped"), "--help").returncode == 0
    for module in SERVER_ONLY:
        imported = cli_venv.run(cli_venv.python, "-c", f"import {module}")
        assert imported.returncode != 0, f"the CLI install pulled in {module}"
        assert "ModuleNotFoundError" in imported.stderr


def test_the_cli_install_serves_a_cached_credential(cli_venv: InstalledVenv) -> None:
    """The plugin's hot path from site-packages, as kubectl runs it."""
    env = {"HOME": str(cli_venv.root / "home"), "KUBERNETES_EXEC_INFO": exec_info(),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    env["XDG_CONFIG_HOME"] = env["HOME"] + "/config"
    seed_credential(env, "token-from-the-cache")
    result = cli_venv.run(cli_venv.script("pinniped"), "login", "oidc", *HOT_PATH_LOGIN_ARGS,
                          env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["token"] == "token-from-the-cache"


def test_the_installed_cli_finds_its_kubeconfig_template(cli_venv: InstalledVenv) -> None:
    code = "from pinniped_cli.kubeconfig import find_template_dir; print(find_template_dir())"
    found = cli_venv.run(cli_venv.python, "-c", code, check=True).stdout.strip()
    assert Path(found).is_relative_to(cli_venv.root)
    assert (Path(found) / "kubeconfig.yaml").is_file()


def test_an_install_outside_the_venv_prefix_finds_its_template(
        cli_venv: InstalledVenv, wheel: Path, tmp_path: Path) -> None:
    """`pip install --prefix` (like --user or /usr/local) puts data files elsewhere."""
    prefix = tmp_path / "elsewhere"
    cli_venv.run(cli_venv.python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                 "--disable-pip-version-check", "--prefix", str(prefix), str(wheel), check=True)
    version = "python{}.{}".format(*sysconfig.get_python_version().split("."))
    site = prefix / "lib" / version / "site-packages"
    code = ("import pinniped_cli, sys; from pinniped_cli.kubeconfig import find_template_dir; "
            "print(pinniped_cli.__file__); print(sys.prefix); print(find_template_dir())")
    module, venv_prefix, found = cli_venv.run(cli_venv.python, "-c", code,
                                              env={"PYTHONPATH": str(site)},
                                              check=True).stdout.split()
    assert Path(module).is_relative_to(site)  # the --prefix copy is the one running...
    assert not Path(found).is_relative_to(venv_prefix)  # ...and sys.prefix is not its base
    assert Path(found).is_relative_to(prefix)
    assert (Path(found) / "kubeconfig.yaml").is_file()


def test_only_our_own_import_names_are_installed(cli_venv: InstalledVenv) -> None:
    assert top_level_packages(cli_venv) == OUR_PACKAGES
    for name in ("cli", "concierge"):
        assert cli_venv.run(cli_venv.python, "-c", f"import {name}").returncode != 0


def test_the_server_without_its_extra_says_what_to_install(cli_venv: InstalledVenv,
                                                           tmp_path: Path) -> None:
    config = tmp_path / "concierge.yaml"
    config.write_text("namespace: x\n")
    result = cli_venv.run(cli_venv.script("pinniped-concierge"), "--config", str(config))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'pinniped-py[concierge]'" in lines[0]
    assert "Traceback" not in result.stderr


def test_the_concierge_extra_gives_a_working_server(server_venv: InstalledVenv) -> None:
    concierge = server_venv.script("pinniped-concierge")
    version = server_venv.run(concierge, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("pinniped-concierge ")
    imported = server_venv.run(server_venv.python, "-c", "import pinniped_concierge.app")
    assert imported.returncode == 0, imported.stderr
    assert top_level_packages(server_venv) == OUR_PACKAGES


def test_the_installed_server_serves(server_venv: InstalledVenv, tmp_path: Path) -> None:
    """The installed concierge starts from a config and answers on its TLS port.

    Nothing here is reachable (no apiserver, no IdP), so it is alive but not ready:
    what is checked is the install, not a login (the image and cluster tests do that)."""
    ca = pki.CA.create(tmp_path / "ca", "install-test-ca")
    (tmp_path / "tls").mkdir()
    tls = ca.issue(tmp_path / "tls", "concierge")
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, server=f"https://127.0.0.1:{free_port()}",
                     ca_file=ca.cert_path, user="nobody", token="not-a-real-token")
    port = free_port()
    config = tmp_path / "concierge.yaml"
    config.write_text(yaml.safe_dump({
        "listen": {"host": "127.0.0.1", "port": port},
        "tls": {"certFile": str(tls.cert_path), "keyFile": str(tls.key_path)},
        "kubernetes": {"kubeconfig": str(kubeconfig)},
        "namespace": "pinniped-concierge",
        "authenticators": [{"name": "corp", "issuer": f"https://127.0.0.1:{free_port()}",
                            "audience": "pinniped-cli", "usernamePrefix": "corp:",
                            "groupsPrefix": "corp:"}]}))
    process = ManagedProcess("installed-concierge",
                             [str(server_venv.script("pinniped-concierge")), "--config",
                              str(config)], tmp_path / "concierge.log",
                             env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                             cwd=server_venv.root)
    context = ssl.create_default_context(cafile=str(ca.cert_path))

    def get(path: str) -> bytes:
        with urllib.request.urlopen(f"https://127.0.0.1:{port}{path}", context=context,
                                    timeout=5) as response:
            body: bytes = response.read()
            return body

    try:
        wait_for(lambda: get("/healthz") == b"ok", 30, "installed concierge /healthz", process)
        document = json.loads(get("/openapi.json"))
        assert "/apis/login.concierge.pinniped.dev/v1alpha1/tokencredentialrequests" in \
            document["paths"]
    finally:
        process.stop()
