"""The real CLI in a subprocess: the cached path stays light, and stdout stays kubectl's.

kubectl runs the plugin on every command, so a cache hit must not import the
heavy libraries (or even `dataclasses`, which costs more than the rest of the
cached path together; see apis/pinniped_apis/rfc3339.py). Opening the sealed entry
needs `cryptography`'s AESGCM and nothing else of it. `-X importtime` lists
every module the process imported, so these tests see exactly what a kubectl
call loads.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localenv import SOURCE_PATH
from localenv.fixtures_cli import (
    HOT_PATH_LOGIN_ARGS,
    assert_not_stored,
    exec_info,
    pinniped_command,
    seed_credential,
)
from pinniped_cli.execcredential import V1, V1BETA1

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("httpx", "pydantic", "keyring", "kubernetes", "joserfc", "yaml", "fastapi", "ssl",
         "dataclasses", "pinniped_apis.wire", "pinniped_cli.oidc", "pinniped_cli.concierge_client",
         # cryptography: AESGCM (and what it imports) only, no X.509, keys or hashes.
         "cryptography.x509", "cryptography.hazmat.primitives.asymmetric",
         "cryptography.hazmat.primitives.serialization", "cryptography.hazmat.primitives.hashes",
         "cryptography.hazmat.backends", "cryptography.fernet")
AESGCM_MODULE = "cryptography.hazmat.primitives.ciphers.aead"
LOGIN_ARGS = HOT_PATH_LOGIN_ARGS


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": SOURCE_PATH,
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring", **extra}


def _seed(tmp_path: Path, token: str = "cached-cluster-token", **extra_env: str) -> dt.datetime:
    return seed_credential(_env(tmp_path, **extra_env), token)


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


@pytest.mark.parametrize("version", [V1, V1BETA1])
def test_cache_hit_prints_the_credential_and_imports_nothing_heavy(tmp_path: Path,
                                                                   version: str) -> None:
    expires = _seed(tmp_path)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pinniped_cli", "login", "oidc", *LOGIN_ARGS],
        env=_env(tmp_path, KUBERNETES_EXEC_INFO=exec_info(version)),
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.loads(result.stdout)
    assert body["apiVersion"] == version
    assert body["status"] == {"token": "cached-cluster-token",
                              "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
    modules = _imported(result.stderr)
    assert "pinniped_cli.credential_cache" in modules  # the listing is real
    assert AESGCM_MODULE in modules  # and the entry really was sealed
    heavy = sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))
    assert heavy == []
    assert [line for line in result.stderr.splitlines()
            if not line.startswith("import time:")] == []


def test_console_script_serves_the_cache(tmp_path: Path) -> None:
    _seed(tmp_path, token="via-script")
    result = subprocess.run([*pinniped_command(), "login", "oidc", *LOGIN_ARGS],
                            env=_env(tmp_path, KUBERNETES_EXEC_INFO=exec_info()),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["token"] == "via-script"
    assert result.stderr == ""


def test_key_in_the_runtime_dir_serves_the_cache(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    _seed(tmp_path, token="runtime-dir-token", XDG_RUNTIME_DIR=str(run))
    result = subprocess.run(
        [sys.executable, "-m", "pinniped_cli", "login", "oidc", *LOGIN_ARGS],
        env=_env(tmp_path, KUBERNETES_EXEC_INFO=exec_info(), XDG_RUNTIME_DIR=str(run)),
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["token"] == "runtime-dir-token"
    assert (run / "pinniped" / "cache.key").is_file()
    assert not (tmp_path / ".local" / "state" / "pinniped").exists()
    assert_not_stored([tmp_path / "config" / "pinniped" / "credentials.json"],
                      ["runtime-dir-token"])


def _corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "config" / "pinniped" / "credentials.json").write_text("{ half a file")


def _lose_key(tmp_path: Path) -> None:
    (tmp_path / ".local" / "state" / "pinniped" / "cache.key").unlink()


def _corrupt_key(tmp_path: Path) -> None:
    (tmp_path / ".local" / "state" / "pinniped" / "cache.key").write_bytes(b"short")


def _tamper_entry(tmp_path: Path) -> None:
    cache = tmp_path / "config" / "pinniped" / "credentials.json"
    doc = json.loads(cache.read_text())
    key, sealed = next(iter(doc["credentials"].items()))
    doc["credentials"][key] = sealed[:-5] + ("B" if sealed[-5] == "A" else "A") + sealed[-4:]
    cache.write_text(json.dumps(doc))


@pytest.mark.parametrize(("damage", "message"), [
    (_corrupt_file, "unreadable credential cache"), (_lose_key, None), (_corrupt_key, None),
    (_tamper_entry, None)], ids=["corrupt-file", "lost-key", "corrupt-key", "tampered-entry"])
def test_damaged_cache_or_key_is_not_fatal_and_not_trusted(
        tmp_path: Path, damage: Callable[[Path], None], message: str | None) -> None:
    _seed(tmp_path)
    damage(tmp_path)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "pinniped_cli", "login", "oidc", *LOGIN_ARGS],
                            env=_env(tmp_path, KUBERNETES_EXEC_INFO=exec_info()),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30, check=False)
    # Not interactive and no session: it fails fast, saying what to run; stdout stays empty.
    assert result.returncode == 1
    assert time.monotonic() - started < 10
    assert result.stdout == ""
    if message is not None:
        assert message in result.stderr
    assert "Log in from a terminal first by running:" in result.stderr
    assert "login oidc --issuer https://idp.test" in result.stderr
    assert "Traceback" not in result.stderr


def test_fd1_is_guarded_while_logging_in(tmp_path: Path) -> None:
    """A browser started during login inherits fd 1; its chatter must go to stderr."""
    script = (
        "import os, sys\n"
        "from pinniped_cli.runtime import default_runtime\n"
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


def test_python_m_cli_help_lists_every_command(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "pinniped_cli", "--help"], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=30, check=True)
    listed = re.findall(r"^ {4}(\w+) {2,}\S", result.stdout, flags=re.MULTILINE)
    assert listed == ["login", "get", "whoami", "logout", "version", "completion"]
    assert result.stderr == ""
