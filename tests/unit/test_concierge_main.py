"""Start-up: a broken config stops the concierge with a message naming the key."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import localenv
from localenv import SOURCE_PATH
from pinniped_concierge.audit import AuditEvent, AuditLog, token_digest
from pinniped_concierge.main import SERVER_DEPENDENCIES, main

CORP = """\
  - {name: corp, issuer: "https://idp", audience: a, usernamePrefix: "c:", groupsPrefix: "c:"}
"""


def _config_with_tls_files(tmp_path: Path, authenticators: str) -> Path:
    """A config whose TLS files exist but hold no certificate: start-up must stop on them."""
    for name in ("c.pem", "k.pem"):
        (tmp_path / name).write_text("not a certificate")
    path = tmp_path / "concierge.yaml"
    path.write_text("tls: {certFile: c.pem, keyFile: k.pem}\nnamespace: pinniped\n"
                    "authenticators:\n" + authenticators)
    return path


def test_a_bad_config_exits_2_naming_the_key(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "concierge.yaml"
    path.write_text("namespace: pinniped\ncredentialTTLSeconds: 60\n")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "tls: is required" in err or "credentialTTLSeconds" in err


def test_unusable_tls_files_are_refused(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_with_tls_files(tmp_path, CORP)
    assert main(["--config", str(path)]) == 2
    assert "tls: cannot load" in capsys.readouterr().err


def test_python_dash_m_concierge_is_the_same_program() -> None:
    result = subprocess.run([sys.executable, "-m", "pinniped_concierge", "--help"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "--config" in result.stdout


def test_the_audit_file_is_private_and_has_one_line_per_event(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog.open(path)
    log.record(AuditEvent(request="login", client="127.0.0.1:1", token_hash=token_digest("t")))
    log.record(AuditEvent(request="logout", client="127.0.0.1:2"))
    log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert '"tokenHash":"sha256:' in lines[0]
    assert token_digest("t") != token_digest("u")
    assert len(token_digest("t")) == len("sha256:") + 12


def test_overlapping_prefixes_stop_the_start_naming_both_authenticators(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config_with_tls_files(tmp_path, CORP + """\
  - {name: partner, issuer: "https://partner", audience: a, usernamePrefix: "c:p-",
     groupsPrefix: "p:"}
""")
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "authenticators[1].usernamePrefix:" in err
    assert "'partner'" in err
    assert "'corp'" in err


_BLOCKER = """\
import sys

BLOCKED = {blocked!r}


class _NotInstalled:
    \"\"\"Behaves as if these packages were never installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _NotInstalled())
"""


def _run_without(tmp_path: Path, blocked: set[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m pinniped_concierge ARGS` in an environment where `blocked` are not installed."""
    (tmp_path / "sitecustomize.py").write_text(_BLOCKER.format(blocked=sorted(blocked)))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{SOURCE_PATH}"}
    return subprocess.run([sys.executable, "-m", "pinniped_concierge", *args], env=env,
                          capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize("missing", SERVER_DEPENDENCIES)
def test_without_the_server_extra_one_line_says_what_to_install(tmp_path: Path,
                                                                missing: str) -> None:
    config_path = _config_with_tls_files(tmp_path, CORP)
    result = _run_without(tmp_path, {missing}, "--config", str(config_path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"pinniped-concierge: the server's dependencies are not installed (No module named "
        f"'{missing}'); install them with: pip install 'pinniped-py[concierge]'"]


@pytest.mark.parametrize(("args", "words"), [
    (["--help"], "--config-reference"),
    (["--version"], "pinniped-concierge "),
    (["--config-reference"], "### `authenticators[].usernamePrefix`"),
])
def test_help_version_and_the_reference_need_no_server_dependencies(
        tmp_path: Path, args: list[str], words: str) -> None:
    result = _run_without(tmp_path, {*SERVER_DEPENDENCIES, "starlette"}, *args)
    assert (result.returncode, result.stderr) == (0, "")
    assert words in result.stdout


def test_the_server_dependencies_are_the_concierge_extra() -> None:
    pyproject = tomllib.loads((Path(localenv.REPO_ROOT) / "pyproject.toml").read_text())
    extra = pyproject["project"]["optional-dependencies"]["concierge"]
    assert sorted(re.split(r"[<>=!~\[; ]", requirement)[0] for requirement in extra) == sorted(
        SERVER_DEPENDENCIES)


def test_version_prints_the_installed_distribution(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"pinniped-concierge {metadata.version('pinniped-py')}\n"


def test_help_points_at_the_config_reference(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "`pinniped-concierge --config-reference` prints them" in out
    assert "deploy/concierge-config.md" in out


def test_no_config_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "--config FILE is required" in capsys.readouterr().err
