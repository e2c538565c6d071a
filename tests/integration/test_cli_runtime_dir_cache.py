"""Real kubectl, through the kubeconfig `pinniped get kubeconfig` wrote, answered from the
runtime directory's cache: no concierge call, and the cached path's imports only.

The plugin runs with PYTHONPROFILEIMPORTTIME set in kubectl's environment
(which exec plugins inherit); kubectl passes the plugin's stderr through, so
the test sees which modules each plugin run imported.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import CLIWorld, concierge_logins, new_world, team_namespace
from localenv.idp import LocalIdP

pytestmark = pytest.mark.integration

#: A cache hit must not get this far: the full command, and what it alone needs.
FULL_COMMAND = ("pinniped_cli.command_line", "pinniped_cli.credential_cache",
                "pinniped_cli.login_options", "pinniped_cli.runtime", "argparse", "cryptography")


@pytest.fixture
def world(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP, concierge: LocalConcierge,
          runtime_dir: Path) -> CLIWorld:
    world = new_world(tmp_path, cluster, idp, concierge)
    world.env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    world.as_ci_job("alice")
    return world


def _plugin_imports(stderr: str) -> set[str]:
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_kubectl_is_answered_from_the_runtime_dir_cache(
        world: CLIWorld, cluster: LocalCluster, concierge: LocalConcierge) -> None:
    namespace = team_namespace(cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env("alice"))
    run = Path(world.env["XDG_RUNTIME_DIR"])
    cache = run / "pinniped" / "credentials.json"
    assert world.credential_cache == cache
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    (entry,) = json.loads(cache.read_text())["credentials"].values()
    assert entry["identity"]["username"] == "corp:alice@example.com"
    assert not (world.pinniped_dir / "credentials.json").exists()  # nothing sealed beside it
    logins, written = concierge_logins(concierge), cache.read_bytes()

    for _ in range(2):  # no password here: only the cache can answer
        got = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o",
                            "jsonpath={.data.who}", env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert got.returncode == 0, got.stderr[-3000:]
        assert got.stdout == "world"
        imported = _plugin_imports(got.stderr)
        assert "pinniped_cli.cached_path" in imported  # the listing is real
        assert sorted(m for m in imported
                      if any(m == f or m.startswith(f + ".") for f in FULL_COMMAND)) == []
        assert [line for line in got.stderr.splitlines()
                if not line.startswith("import time:")] == []
    assert concierge_logins(concierge) == logins
    assert cache.read_bytes() == written  # a hit writes nothing


def test_logout_clears_the_runtime_dir_cache_and_the_next_kubectl_must_log_in(
        world: CLIWorld, cluster: LocalCluster) -> None:
    namespace = team_namespace(cluster, "corp:devs")
    world.get_kubeconfig(env=world.password_env("alice"))
    assert world.kubectl("get", "configmaps", "-n", namespace).returncode == 0
    token = str(next(iter(world.cached_credentials().values()))["token"])

    out = world.pinniped("logout", "--kubeconfig", str(world.kubeconfig))
    assert out.returncode == 0, out.stderr
    assert "stops working within about 10 s" in out.stderr
    assert token not in out.stderr
    assert world.cached_credentials() == {}
    assert "login oidc --issuer" in world.kubectl_fails_fast("get", "configmaps", "-n",
                                                             namespace)
