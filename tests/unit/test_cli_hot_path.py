"""The real CLI in a subprocess: the cached path stays light, and stdout stays kubectl's.

kubectl runs the plugin on every command, so a cache hit must not import the
heavy libraries (or even `dataclasses`, which costs more than the rest of the
cached path together; see cli/timefmt.py). `-X importtime` lists every module
the process imported, so these tests see exactly what a kubectl call loads.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.cluster_credential import credential_key
from cli.credential_cache import Credential, CredentialCache
from cli.execcredential import V1, V1BETA1, read_exec_info
from cli.login_options import parse_login_args
from localenv.fixtures_cli import TEST_CA_DATA, pinniped_command

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("httpx", "authlib", "keyring", "kubernetes", "joserfc", "yaml", "fastapi", "ssl",
         "cryptography", "dataclasses", "concierge.wire", "cli.oidc", "cli.concierge_client")
LOGIN_ARGS = ["--issuer", "https://idp.test", "--client-id", "pinniped-cli",
              "--concierge-endpoint", "https://concierge.test", "--concierge-authenticator",
              "corp"]


def _exec_info(version: str = V1) -> str:
    return json.dumps({"apiVersion": version, "kind": "ExecCredential", "spec": {
        "interactive": False,
        "cluster": {"server": "https://k8s.test:6443",
                    "certificate-authority-data": TEST_CA_DATA}}})


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO),
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring", **extra}


def _seed(tmp_path: Path, token: str = "cached-cluster-token") -> dt.datetime:
    env = _env(tmp_path)
    options = parse_login_args(LOGIN_ARGS, env)
    info = read_exec_info(_exec_info(), stdin_is_tty=False)
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(minutes=10)
    assert options.credential_cache is not None
    CredentialCache(options.credential_cache, print).put(
        credential_key(options, info.cluster),
        Credential(token, expires, "corp:alice@example.com", ("corp:devs",)),
        dt.datetime.now(dt.UTC))
    return expires


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("version", [V1, V1BETA1])
def test_cache_hit_prints_the_credential_and_imports_nothing_heavy(tmp_path: Path,
                                                                   version: str) -> None:
    expires = _seed(tmp_path)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "cli", "login", "oidc", *LOGIN_ARGS],
        env=_env(tmp_path, KUBERNETES_EXEC_INFO=_exec_info(version)),
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.loads(result.stdout)
    assert body["apiVersion"] == version
    assert body["status"] == {"token": "cached-cluster-token",
                              "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
    modules = _imported(result.stderr)
    assert "cli.credential_cache" in modules  # the listing is real
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []
    assert [line for line in result.stderr.splitlines()
            if not line.startswith("import time:")] == []


def test_console_script_serves_the_cache(tmp_path: Path) -> None:
    _seed(tmp_path, token="via-script")
    result = subprocess.run([*pinniped_command(), "login", "oidc", *LOGIN_ARGS],
                            env=_env(tmp_path, KUBERNETES_EXEC_INFO=_exec_info()),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["token"] == "via-script"
    assert result.stderr == ""


def test_corrupt_cache_is_not_fatal_and_not_trusted(tmp_path: Path) -> None:
    _seed(tmp_path)
    cache = tmp_path / "config" / "pinniped" / "credentials.json"
    cache.write_text("{ half a file")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "cli", "login", "oidc", *LOGIN_ARGS],
                            env=_env(tmp_path, KUBERNETES_EXEC_INFO=_exec_info()),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30, check=False)
    # Not interactive and no session: it fails fast, saying what to run; stdout stays empty.
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    assert result.stdout == ""
    assert "unreadable credential cache" in result.stderr
    assert "Log in from a terminal first by running:" in result.stderr
    assert "login oidc --issuer https://idp.test" in result.stderr
    assert "Traceback" not in result.stderr


def test_fd1_is_guarded_while_logging_in(tmp_path: Path) -> None:
    """A browser started during login inherits fd 1; its chatter must go to stderr."""
    script = (
        "import os, sys\n"
        "from cli.runtime import default_runtime\n"
        "rt = default_runtime()\n"
        "with rt.stdout_to_stderr():\n"
        "    os.system('echo browser-chatter')\n"
        "    print('python-chatter', flush=True)\n"
        "sys.stdout.write('{\"kind\":\"ExecCredential\"}\\n')\n")
    result = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout == '{"kind":"ExecCredential"}\n'
    assert "browser-chatter" in result.stderr
    assert "python-chatter" in result.stderr


def test_python_m_cli_help(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "cli", "--help"], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=30, check=True)
    assert "login" in result.stdout
    assert "kubeconfig" not in result.stderr
