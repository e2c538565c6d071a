"""No ID token, refresh token, cluster token or password in any log or stderr of the whole run.

`localenv.leak_sentinel` collects, for the whole session, the secrets the harness
sees and what the concierge and every `pinniped` and `kubectl` process wrote;
it moves this test to the very end of the run. The test first logs in once of
its own (the CLI's password flow through kubectl, a refresh, a wrong password),
so that it has something to look at even when run alone, then scans it all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from localenv import leak_sentinel
from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge
from localenv.fixtures_cli import new_world, team_namespace
from localenv.idp import LocalIdP

pytestmark = pytest.mark.integration


def _log_in_and_out(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP,
                    concierge: LocalConcierge) -> None:
    """One person's day: a refused password, a login, kubectl from the cache, a new cluster
    token from the cached ID token, a refresh, and a logout."""
    world = new_world(tmp_path, cluster, idp, concierge)
    namespace = team_namespace(cluster, "corp:devs")
    world.as_ci_job("alice")
    wrong = "not-alices-password-" + tmp_path.name
    leak_sentinel.register(leak_sentinel.PASSWORD, wrong)
    refused = world.run(world.get_kubeconfig_argv(),
                        {"PINNIPED_USERNAME": "alice", "PINNIPED_PASSWORD": wrong})
    assert refused.returncode != 0
    world.get_kubeconfig(env=world.password_env("alice"))

    def kubectl_reads() -> None:
        read = world.kubectl("get", "configmap", "hello", "-n", namespace, "-o", "name")
        assert read.returncode == 0, read.stderr
        # The CLI got these itself, so no harness helper saw them: register them too.
        for entry in world.cached_credentials().values():
            leak_sentinel.register(leak_sentinel.CLUSTER_TOKEN, entry["token"])
        for session in world.stored_sessions().values():
            leak_sentinel.register(leak_sentinel.ID_TOKEN, session.id_token)
            leak_sentinel.register(leak_sentinel.REFRESH_TOKEN, session.refresh_token)

    kubectl_reads()
    world.expire_cached_credentials()  # a new cluster token, from the cached ID token
    kubectl_reads()
    world.expire_cached_credentials()
    world.expire_cached_id_tokens()  # a refresh at the IdP
    kubectl_reads()
    denied = world.kubectl("get", "secrets", "-n", "kube-system")
    assert denied.returncode != 0
    logout = world.pinniped("logout", "--kubeconfig", str(world.kubeconfig))
    assert logout.returncode == 0, logout.stderr


def test_no_secret_in_any_log_or_stderr(tmp_path: Path, cluster: LocalCluster, idp: LocalIdP,
                                        concierge: LocalConcierge) -> None:
    _log_in_and_out(tmp_path, cluster, idp, concierge)
    report = leak_sentinel.SENTINEL.scan()
    print(f"leak sentinel: {report.summary()}")
    assert not report.findings, (
        f"{len(report.findings)} secrets leaked ({report.summary()}):\n"
        + "\n".join(str(finding) for finding in report.findings[:50]))
    # It looked at something: the concierge's logs, the CLI's and kubectl's stderr, and
    # every kind of secret this test alone produces.
    labels = " ".join(stream.label for stream in leak_sentinel.SENTINEL.streams())
    for what in ("concierge log", "concierge audit log", "stderr of pinniped",
                 "stderr of kubectl"):
        assert what in labels, f"no {what} was scanned: {report.summary()}"
    for kind in (leak_sentinel.ID_TOKEN, leak_sentinel.REFRESH_TOKEN,
                 leak_sentinel.CLUSTER_TOKEN, leak_sentinel.PASSWORD):
        assert report.secrets[kind] > 0, f"no {kind} to look for: {report.summary()}"
    assert report.bytes_scanned > 2_000, report.summary()
    assert report.dropped == 0, report.summary()
