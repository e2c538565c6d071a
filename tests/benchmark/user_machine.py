"""A person's machine, as the benchmark measures it: an isolated HOME, the installed
`pinniped`, a kubeconfig it generated, and a cluster credential already cached.

`pinniped get kubeconfig` logs in with the password flow (as a CI job
would, `PINNIPED_USERNAME`/`PINNIPED_PASSWORD`), which also caches the
credential, so the plugin runs that follow take the cached path. The keyring
is switched off (`keyring.backends.fail.Keyring`), as on a server. With
`runtime_dir` the machine has an `$XDG_RUNTIME_DIR` (per user and
memory-backed on a desktop Linux; here a 0700 directory under /dev/shm), as
most people's do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.benchmark.stack import Stack

USER = "alice"


@dataclass(frozen=True)
class UserMachine:
    name: str
    env: dict[str, str]
    kubeconfig: Path

    def exec_stanza(self) -> dict[str, Any]:
        """The `exec:` of the kubeconfig's (only) user, as kubectl reads it."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        (user,) = doc["users"]
        stanza: dict[str, Any] = user["user"]["exec"]
        return stanza

    def kubectl(self, *args: str, kubeconfig: Path | None = None
                ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig or self.kubeconfig),
                               *args], env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120, check=False)


def set_up(stack: Stack, root: Path, name: str, *, runtime_dir: bool) -> UserMachine:
    home = root / name / "home"
    home.mkdir(parents=True, mode=0o700)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "PATH": f"{stack.venv.root / 'bin'}:/usr/local/bin:/usr/bin:/bin",
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring", "LANG": "C.UTF-8",
           "PINNIPED_USERNAME": USER}
    if runtime_dir:
        shm = Path("/dev/shm")
        runtime = Path(tempfile.mkdtemp(prefix="pinniped-bench-run-",
                                        dir=shm if shm.is_dir() else None))
        runtime.chmod(0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    machine = UserMachine(name, env, root / name / "kubeconfig")
    idp, concierge, cluster = stack.idp, stack.concierge, stack.cluster
    result = subprocess.run(
        [str(stack.venv.script("pinniped")), "get", "kubeconfig",
         "--issuer", idp.issuer, "--client-id", idp.client_id, "--ca-bundle", str(idp.ca_file),
         "--concierge-endpoint", concierge.url,
         "--concierge-ca-bundle", str(concierge.ca_file),
         "--concierge-authenticator", concierge.authenticator_name,
         "--server", cluster.server, "--cluster-ca-bundle", str(cluster.ca_file),
         "-o", str(machine.kubeconfig)],
        env={**env, "PINNIPED_PASSWORD": idp.user(USER).password}, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pinniped get kubeconfig failed: {result.stderr[-2000:]}")
    check = machine.kubectl("get", "--raw", "/version")
    if check.returncode != 0:
        raise RuntimeError(f"kubectl through the generated kubeconfig failed: {check.stderr}")
    return machine


def tear_down(machine: UserMachine) -> None:
    runtime = machine.env.get("XDG_RUNTIME_DIR")
    if runtime:
        shutil.rmtree(runtime, ignore_errors=True)


def exec_info_from_kubectl(machine: UserMachine, scratch: Path) -> str:
    """KUBERNETES_EXEC_INFO exactly as this kubectl sets it for the generated kubeconfig.

    A copy of the kubeconfig whose exec command only writes the variable to a
    file; the kubectl call then fails, as it should, having no credential.
    """
    doc = yaml.safe_load(machine.kubeconfig.read_text())
    captured = scratch / "exec-info.json"
    doc["users"][0]["user"]["exec"] |= {
        "command": "/bin/sh",
        "args": ["-c", f'printf "%s" "$KUBERNETES_EXEC_INFO" > {captured}; exit 1']}
    copy = scratch / "capture.kubeconfig"
    copy.write_text(yaml.safe_dump(doc))
    copy.chmod(0o600)
    machine.kubectl("get", "--raw", "/version", kubeconfig=copy)
    info = captured.read_text()
    json.loads(info)  # it must be the JSON kubectl documents
    return info
