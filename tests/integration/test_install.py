"""What `pip install pinniped-py` gives a user: the CLI alone, or with the server's extra.

Each check runs in a fresh venv with a regular install of a wheel built from
this checkout, the way a user installs it, never the editable `.venv`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from localenv.fixtures_cli import HOT_PATH_LOGIN_ARGS, exec_info, seed_credential
from localenv.install import InstalledVenv, build_wheel, install

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
