"""A group that becomes governed is taken back from people who got it from a login before.

Against the real pieces: dave's IdP lists the group, he logs in (the plugin,
through his kubeconfig made by `pinniped get kubeconfig`) while no policy
governs it, and his kubectl may delete pods with it. Then an administrator
applies an ElevationPolicy for it. Without any login of dave's, his cached
credential must stop working with the group: the Lease holder takes it out of
his ClusterRole (`governed_sweep`), and the rest of his groups stay. The time
it takes is printed (-s).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.elevation import apply_policy, delete_policy, pod_namespace, policy_manifest, poll
from localenv.fixtures_cli import new_world
from localenv.idp import LocalIdP, TestUser
from pinniped_concierge import naming
from pinniped_concierge.naming import groups_from_rules

pytestmark = pytest.mark.integration

#: Well within the issue's 10 s for an ended elevation: the sweep runs every 2 s.
WITHDRAWN_WITHIN = 10


def _forbidden(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode != 0 and "forbidden" in result.stderr.lower()


@pytest.mark.timeout(120)
def test_a_policy_takes_its_group_from_a_user_who_got_it_before(
        tmp_path: Path, cluster: LocalCluster, idp_factory: Callable[..., LocalIdP],
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    suffix = secrets.token_hex(3)
    name, group = f"dave-{suffix}", f"db-admins-{suffix}"
    governed = f"corp:{group}"
    idp = idp_factory(users=[TestUser(name, secrets.token_urlsafe(12), f"{name}@example.com",
                                      ["sre", group])])
    concierge = concierge_factory(idp)
    pods = pod_namespace(cluster, deleters=governed, readers="corp:sre")
    pod = pods.pod(cluster)
    home = tmp_path / name
    home.mkdir()
    laptop = new_world(home, cluster, idp, concierge)
    laptop.as_ci_job(name)
    laptop.get_kubeconfig(env=laptop.password_env(name))

    def delete() -> subprocess.CompletedProcess[str]:
        return laptop.kubectl("delete", "pod", pod, "-n", pods.name, "--dry-run=server")

    allowed = delete()
    assert allowed.returncode == 0, allowed.stderr  # ungoverned: the ID token grants it
    role_name = naming.user_object_name(f"corp:{name}@example.com", concierge.namespace)
    policy = f"db-admins-{suffix}"
    apply_policy(cluster, policy_manifest(policy, governed, requester_groups=["corp:sre"],
                                          approver_groups=["corp:sre-leads"]))
    try:
        applied = time.monotonic()
        refused = poll(delete, _forbidden, timeout=WITHDRAWN_WITHIN, since=applied)
        print(f"\ngoverned later: dave's cached credential lost {governed} "
              f"{refused.seconds:.1f} s after the policy was applied")
        assert refused.ok, refused.last.stderr
        role = json.loads(cluster.kubectl("get", "clusterrole", role_name, "-o", "json").stdout)
        assert governed not in groups_from_rules(role.get("rules"))
        assert "corp:sre" in groups_from_rules(role.get("rules"))  # the rest is kept
    finally:
        delete_policy(cluster, policy)
