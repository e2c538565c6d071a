"""The real CLI in a subprocess: the cached path stays light, and stdout stays kubectl's.

kubectl runs the plugin on every command, so a cache hit must import as
little as a Python program can that reads JSON: `-X importtime` lists every
module the process imported, so these tests see exactly what a kubectl call
loads. From the private runtime directory, that is the standard library's
`re` and `json` (and what they import: the console script and `json` need
`re` anyway), `binascii`, a built-in SHA-256, and the few modules of ours
listed in CACHED_PATH: no argparse, pathlib, hashlib, datetime, base64,
contextlib, typing, dataclasses or cryptography. Without a runtime directory
the cache is sealed, and opening it adds AESGCM (and what it imports) and
`pinniped_cli.sealing`, nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import subprocess
import sys
import sysconfig
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
from pinniped_cli.sealing import CacheKey

REPO = Path(__file__).resolve().parents[2]
#: Every module of ours a cache hit from the runtime directory imports, and no other.
CACHED_PATH = {"pinniped_cli", "pinniped_cli.main", "pinniped_cli.cached_path",
               "pinniped_cli.login_flags", "pinniped_cli.cache_keys", "pinniped_cli.errors",
               "pinniped_cli.execcredential", "pinniped_cli.credential_entry",
               "pinniped_cli.runtime_cache", "pinniped_cli.map_file", "pinniped_cli.securefile"}
#: What the standard library may add beyond these: JSON (and `re`, which it and the console
#: script import), base64 decoding of the cluster's CA, and CPython's own SHA-256.
STDLIB_NEEDED = "import re, json, binascii"
SHA256_MODULES = {"_sha2", "_sha256"}
#: Never on a cache hit, sealed or not.
HEAVY = ("httpx", "pydantic", "keyring", "kubernetes", "joserfc", "yaml", "fastapi", "ssl",
         "dataclasses", "inspect", "argparse", "pathlib", "hashlib", "_hashlib", "datetime",
         "urllib", "ipaddress", "tempfile", "gettext", "locale", "pinniped_apis",
         "pinniped_cli.oidc", "pinniped_cli.concierge_client", "pinniped_cli.credential_cache",
         "pinniped_cli.runtime", "pinniped_cli.login_options", "pinniped_cli.command_line",
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


def _runtime_dir(tmp_path: Path, mode: int = 0o700) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(mode)
    return run


def _seed(tmp_path: Path, token: str = "cached-cluster-token", **extra_env: str) -> dt.datetime:
    return seed_credential(_env(tmp_path, **extra_env), token)


def _imported(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


#: Python without `site` (-S), so that this editable venv's start-up hooks (which import
#: pathlib and more) do not hide what the cached path imports; the packages are found
#: through PYTHONPATH instead (`_bare_env`).
BARE = [sys.executable, "-S", "-X", "importtime"]


def _bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    packages = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return _env(tmp_path, **extra) | {"PYTHONPATH": os.pathsep.join([SOURCE_PATH, *packages])}


def _imports_of(argv: list[str], env: dict[str, str]) -> set[str]:
    result = subprocess.run([*BARE, *argv], env=env, capture_output=True, text=True,
                            timeout=30, check=True)
    return _imported(result.stderr)


def _login(tmp_path: Path, version: str = V1, **extra_env: str
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BARE, "-m", "pinniped_cli", "login", "oidc", *LOGIN_ARGS],
        env=_bare_env(tmp_path, KUBERNETES_EXEC_INFO=exec_info(version), **extra_env),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)


def _python_start(tmp_path: Path) -> set[str]:
    """What Python's own start imports (as `_login` starts it, with -m)."""
    return _imports_of(["-m", "this"], _bare_env(tmp_path)) - {"this"}


def _heavy(modules: set[str], tmp_path: Path) -> list[str]:
    """The HEAVY modules among `modules` that Python's start did not import already."""
    return sorted(m for m in modules - _python_start(tmp_path)
                  if any(m == h or m.startswith(h + ".") for h in HEAVY))


def _assert_served(result: subprocess.CompletedProcess[str], version: str, token: str,
                   expires: dt.datetime) -> set[str]:
    """The ExecCredential on stdout, nothing but the import listing on stderr; the modules."""
    assert result.returncode == 0, result.stderr[-2000:]
    body = json.loads(result.stdout)
    assert body["apiVersion"] == version
    assert body["status"] == {"token": token,
                              "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert [line for line in result.stderr.splitlines()
            if not line.startswith("import time:")] == []
    return _imported(result.stderr)


@pytest.mark.parametrize("version", [V1, V1BETA1])
def test_a_hit_in_the_runtime_dir_imports_only_what_reading_json_needs(
        tmp_path: Path, version: str) -> None:
    run = _runtime_dir(tmp_path)
    expires = _seed(tmp_path, XDG_RUNTIME_DIR=str(run))
    modules = _assert_served(_login(tmp_path, version, XDG_RUNTIME_DIR=str(run)), version,
                             "cached-cluster-token", expires)
    ours = {m for m in modules if m.startswith("pinniped_")}
    assert ours == CACHED_PATH
    # Beyond Python's own start (measured here, with the same -m): only what JSON needs.
    allowed = (_imports_of(["-c", STDLIB_NEEDED], _bare_env(tmp_path)) | _python_start(tmp_path)
               | CACHED_PATH | SHA256_MODULES | {"__future__"})
    assert sorted(modules - allowed) == []
    assert _heavy(modules, tmp_path) == []
    assert not any(m.startswith("cryptography") for m in modules)  # the entry is not sealed


def test_a_sealed_hit_without_a_runtime_dir_adds_only_aesgcm(tmp_path: Path) -> None:
    expires = _seed(tmp_path)
    modules = _assert_served(_login(tmp_path), V1, "cached-cluster-token", expires)
    assert {m for m in modules if m.startswith("pinniped_")} == CACHED_PATH | {
        "pinniped_cli.sealing"}
    assert AESGCM_MODULE in modules  # the entry really was sealed
    assert _heavy(modules, tmp_path) == []


def test_console_script_serves_the_cache(tmp_path: Path) -> None:
    run = _runtime_dir(tmp_path)
    _seed(tmp_path, token="via-script", XDG_RUNTIME_DIR=str(run))
    result = subprocess.run([*pinniped_command(), "login", "oidc", *LOGIN_ARGS],
                            env=_env(tmp_path, KUBERNETES_EXEC_INFO=exec_info(),
                                     XDG_RUNTIME_DIR=str(run)),
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"]["token"] == "via-script"
    assert result.stderr == ""


def test_the_runtime_dir_cache_is_plain_0600_in_0700_and_the_config_dir_holds_none(
        tmp_path: Path) -> None:
    run = _runtime_dir(tmp_path)
    _seed(tmp_path, token="runtime-dir-token", XDG_RUNTIME_DIR=str(run))
    result = _login(tmp_path, XDG_RUNTIME_DIR=str(run))
    assert result.returncode == 0, result.stderr
    cache = run / "pinniped" / "credentials.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    (entry,) = json.loads(cache.read_text())["credentials"].values()
    assert entry["token"] == "runtime-dir-token"  # in the clear: the directory protects it
    assert sorted(p.name for p in cache.parent.iterdir()) == ["credentials.json"]  # no key
    assert not (tmp_path / "config" / "pinniped" / "credentials.json").exists()
    assert not (tmp_path / ".local" / "state" / "pinniped").exists()


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_a_runtime_dir_others_may_enter_is_refused_for_the_sealed_file(
        tmp_path: Path, mode: int) -> None:
    run = _runtime_dir(tmp_path, mode)
    expires = _seed(tmp_path, token="sealed-instead", XDG_RUNTIME_DIR=str(run))
    modules = _assert_served(_login(tmp_path, XDG_RUNTIME_DIR=str(run)), V1, "sealed-instead",
                             expires)
    assert AESGCM_MODULE in modules
    assert not (run / "pinniped" / "credentials.json").exists()
    sealed = tmp_path / "config" / "pinniped" / "credentials.json"
    assert_not_stored([sealed], ["sealed-instead"])


def test_a_symlinked_runtime_dir_is_refused_for_the_sealed_file(tmp_path: Path) -> None:
    real = _runtime_dir(tmp_path)
    link = tmp_path / "run-link"
    link.symlink_to(real)
    expires = _seed(tmp_path, token="sealed-instead", XDG_RUNTIME_DIR=str(link))
    modules = _assert_served(_login(tmp_path, XDG_RUNTIME_DIR=str(link)), V1, "sealed-instead",
                             expires)
    assert AESGCM_MODULE in modules
    assert not (real / "pinniped" / "credentials.json").exists()


def test_a_sealed_cache_from_before_is_a_clean_miss_in_the_runtime_dir(tmp_path: Path) -> None:
    """Older versions sealed every credential into ~/.config, with the key in the runtime
    directory: with that directory private, that file is not read, and no error is said."""
    run = _runtime_dir(tmp_path)
    env = _env(tmp_path, XDG_RUNTIME_DIR=str(run))
    _seed(tmp_path)  # sealed, in ~/.config...
    key = CacheKey.for_env(_env(tmp_path)).path
    (run / "pinniped").mkdir(mode=0o700)
    key.rename(run / "pinniped" / "cache.key")  # ...with the key where older versions kept it
    assert CacheKey.for_env(env).path == run / "pinniped" / "cache.key"
    result = _login(tmp_path, XDG_RUNTIME_DIR=str(run))
    assert result.returncode == 1  # a miss: not interactive, so it says to log in
    assert result.stdout == ""
    messages = [line for line in result.stderr.splitlines()
                if not line.startswith("import time:")]
    assert "Log in from a terminal first by running:" in "\n".join(messages)
    assert not any("credential cache" in line or "unreadable" in line for line in messages)
    assert "Traceback" not in result.stderr


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


def _runtime_cache(tmp_path: Path) -> Path:
    return tmp_path / "run" / "pinniped" / "credentials.json"


def _corrupt_runtime_file(tmp_path: Path) -> None:
    _runtime_cache(tmp_path).write_text("{ half a file")


def _runtime_file_readable_by_others(tmp_path: Path) -> None:
    _runtime_cache(tmp_path).chmod(0o644)


def _runtime_file_symlinked(tmp_path: Path) -> None:
    cache = _runtime_cache(tmp_path)
    planted = tmp_path / "planted.json"
    cache.rename(planted)
    cache.symlink_to(planted)


def _runtime_entry_edited(tmp_path: Path) -> None:
    cache = _runtime_cache(tmp_path)
    doc = json.loads(cache.read_text())
    entry = next(iter(doc["credentials"].values()))
    entry["identity"]["groups"] = ["not", 7]  # no longer an entry pinniped writes
    cache.write_text(json.dumps(doc))


def _runtime_entry_sealed(tmp_path: Path) -> None:
    cache = _runtime_cache(tmp_path)
    doc = json.loads(cache.read_text())
    slot = next(iter(doc["credentials"]))
    doc["credentials"][slot] = "aesgcm1:" + "A" * 80  # the other file's form
    cache.write_text(json.dumps(doc))


@pytest.mark.parametrize(("damage", "message"), [
    (_corrupt_runtime_file, "unreadable credential cache"),
    (_runtime_file_readable_by_others, None), (_runtime_file_symlinked, None),
    (_runtime_entry_edited, None), (_runtime_entry_sealed, None)],
    ids=["corrupt-file", "readable-by-others", "symlink", "edited-entry", "sealed-entry"])
def test_a_damaged_runtime_dir_cache_is_not_fatal_and_not_trusted(
        tmp_path: Path, damage: Callable[[Path], None], message: str | None) -> None:
    run = _runtime_dir(tmp_path)
    _seed(tmp_path, XDG_RUNTIME_DIR=str(run))
    damage(tmp_path)
    result = subprocess.run([sys.executable, "-m", "pinniped_cli", "login", "oidc", *LOGIN_ARGS],
                            env=_env(tmp_path, KUBERNETES_EXEC_INFO=exec_info(),
                                     XDG_RUNTIME_DIR=str(run)),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    if message is not None:
        assert message in result.stderr
    assert "Log in from a terminal first by running:" in result.stderr
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
    assert listed == ["login", "get", "whoami", "logout", "elevate", "version", "completion"]
    assert result.stderr == ""
