"""`pinniped version` and `pinniped --version`: the installed version, or the source tree's."""

from __future__ import annotations

import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from localenv.fixtures_cli import CLIHarness, pinniped_command
from pinniped_apis import version as version_module
from pinniped_cli import command_line, main

REPO = Path(__file__).resolve().parents[2]
INSTALLED = metadata.version(version_module.DISTRIBUTION)


def _not_installed(name: str) -> str:
    raise metadata.PackageNotFoundError(name)


def test_version_prints_the_installed_distributions_version(h: CLIHarness) -> None:
    assert h.run(["version"]) == 0
    assert h.last_stdout == f"pinniped {INSTALLED}\n"
    assert h.last_stderr == ""


def test_dash_dash_version_prints_the_same_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"pinniped {INSTALLED}\n"


@pytest.mark.parametrize("args", [["version"], ["--version"]])
def test_the_console_script_prints_its_version(args: list[str]) -> None:
    result = subprocess.run([*pinniped_command(), *args], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pinniped {INSTALLED}\n"


def test_a_source_tree_without_metadata_reports_its_pyproject_version() -> None:
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert expected == INSTALLED  # the editable install and its tree agree
    assert version_module.SOURCE_ROOT == REPO
    assert version_module.version(lookup=_not_installed) == (
        f"{expected} (source tree {REPO}, not installed)")


@pytest.mark.parametrize("pyproject", [
    None,
    '[project]\nname = "someone-else"\nversion = "9.9"\n',
    'project = "not a table"\n',
    "this is not toml",
    '[project]\nname = "pinniped-py"\n',
])
def test_without_metadata_or_a_usable_pyproject_the_version_is_unknown(
        tmp_path: Path, pyproject: str | None) -> None:
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    assert version_module.version(lookup=_not_installed, source_root=tmp_path) == (
        "unknown (the pinniped-py distribution is not installed)")


def test_login_oidc_still_skips_the_full_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """kubectl's `login oidc` parses with its own parser; --version lives on the full one."""
    def no(*_: object) -> None:
        raise AssertionError("build_parser was called for login oidc")

    monkeypatch.setattr(command_line, "build_parser", no)
    args = command_line.parse_args(["login", "oidc", "--issuer", "https://i.test",
                                    "--client-id", "c", "--concierge-endpoint", "https://c.test",
                                    "--concierge-authenticator", "a"])
    assert args.handler == "login_oidc"
