"""The README's main command works: the whole login story on the local default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_demo_logs_kubectl_in_through_the_plugin_and_stops_everything() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack")}
    result = subprocess.run([sys.executable, "-m", "localenv", "demo"], env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-3000:]
    assert "jwtauthenticator.authentication.concierge.pinniped.dev/corp created" in out
    assert "after kubectl apply started" in out  # the admin's authenticator turned Ready
    # One command: the user's kubeconfig names nothing but the cluster; the rest is discovered.
    (command,) = [line for line in out.splitlines() if " get kubeconfig " in line]
    assert "--kubeconfig" in command
    for flag in ("--issuer", "--client-id", "--concierge", "--server", "--ca-bundle"):
        assert flag not in command
    assert "from CredentialIssuer" in out
    assert "hello from the cluster" in out  # kubectl read the config map as alice
    assert 'User "corp:alice@example.com" cannot list resource "secrets"' in out
    assert "cannot impersonate resource \"users\"" in out
    assert "Username: corp:alice@example.com" in out  # pinniped whoami
    assert "person=corp:alice@example.com" in out  # the apiserver's audit log
    # The demo removes its work dir, and with it everything it wrote.
    kept = [line for line in (out + result.stderr).splitlines() if "work dir kept" in line]
    assert kept == []
