"""Two concierge processes in one namespace: one Lease holder, failover, concurrent logins."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from localenv.cluster import LocalCluster
from localenv.concierge import LocalConcierge, MintingIssuer
from localenv.idp import LocalIdP
from localenv.logins import login
from pinniped_concierge import naming

pytestmark = pytest.mark.integration

LEASE = "pinniped-concierge"
DURATION, RENEW = 15, 5  # the defaults of `lease`


def lease_spec(cluster: LocalCluster, namespace: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "lease", LEASE, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    spec = json.loads(result.stdout).get("spec") or {}
    return dict(spec)


def holder_pid(cluster: LocalCluster, namespace: str) -> int | None:
    """The pid in the holder's identity (host_pid_random), None while nobody holds it."""
    identity = lease_spec(cluster, namespace).get("holderIdentity") or ""
    parts = identity.split("_")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


def two_replicas(concierge_factory: Callable[..., LocalConcierge], idp: LocalIdP,
                 minting_issuer: MintingIssuer) -> list[LocalConcierge]:
    namespace = f"pinniped-concierge-{secrets.token_hex(3)}"
    return [concierge_factory(idp, namespace=namespace, extra_issuers=[minting_issuer])
            for _ in range(2)]


def wait_for_holder(cluster: LocalCluster, namespace: str, pids: set[int],
                    timeout: float) -> tuple[int, float]:
    """The holder's pid, once it is one of `pids`, and when that was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    while True:
        pid = holder_pid(cluster, namespace)
        seen = time.monotonic()
        if pid in pids:
            assert pid is not None
            return pid, seen
        assert seen < deadline, f"no replica of {sorted(pids)} holds the Lease (holder {pid})"
        time.sleep(0.2)


def test_one_replica_holds_the_lease_and_the_other_takes_over_when_it_is_killed(
        cluster: LocalCluster, idp: LocalIdP, minting_issuer: MintingIssuer,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    replicas = two_replicas(concierge_factory, idp, minting_issuer)
    namespace = replicas[0].namespace
    by_pid = {r.pid: r for r in replicas if r.pid is not None}
    assert len(by_pid) == 2
    holder, _ = wait_for_holder(cluster, namespace, set(by_pid), DURATION + RENEW)
    spec = lease_spec(cluster, namespace)
    assert spec["leaseDurationSeconds"] == DURATION
    for key in ("acquireTime", "renewTime"):
        assert len(spec[key].rsplit(".", 1)[-1]) == len("123456Z"), spec[key]  # MicroTime
    # The holder keeps it across several renewals; the other never writes it.
    time.sleep(2 * RENEW)
    assert holder_pid(cluster, namespace) == holder
    assert lease_spec(cluster, namespace)["renewTime"] > spec["renewTime"]

    (survivor,) = set(by_pid) - {holder}
    os.kill(holder, signal.SIGKILL)
    killed = time.monotonic()
    new_holder, seen = wait_for_holder(cluster, namespace, {survivor}, 3 * DURATION)
    failover = seen - killed
    print(f"failover after SIGKILL of the holder: {failover:.1f} s")
    assert new_holder == survivor
    # Within the duration plus one renew period; +1 s for kubectl's own read.
    assert failover <= DURATION + RENEW + 1.0, failover
    assert "acquired from" in by_pid[survivor].all_logs()
    assert by_pid[survivor].is_ready()


def test_fifty_users_logging_in_through_both_replicas_at_once(
        cluster: LocalCluster, idp: LocalIdP, minting_issuer: MintingIssuer,
        concierge_factory: Callable[..., LocalConcierge]) -> None:
    replicas = two_replicas(concierge_factory, idp, minting_issuer)
    namespace = replicas[0].namespace
    run = secrets.token_hex(3)
    emails = [f"user{i}-{run}@example.com" for i in range(50)]
    # Every user logs in at both replicas, in an interleaved order, ten at a time.
    jobs = [(email, replicas[(i + j) % 2]) for i, email in enumerate(emails) for j in range(2)]

    def log_in(job: tuple[str, LocalConcierge]) -> str:
        email, replica = job
        return login(replica, minting_issuer.mint(email=email), "minted").identity.username

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=10) as pool:
        usernames = list(pool.map(log_in, jobs))  # each raises unless 200
    print(f"100 logins of 50 users at 2 replicas: {time.monotonic() - started:.1f} s")
    wanted = {f"minted:{email}" for email in emails}
    assert Counter(usernames) == Counter(dict.fromkeys(wanted, 2))

    selector = naming.owned_selector(namespace)
    for kind, where in (("serviceaccounts", ["-n", namespace]), ("clusterroles", []),
                        ("clusterrolebindings", [])):
        items = json.loads(cluster.kubectl("get", kind, *where, "-l", selector, "-o",
                                           "json").stdout)["items"]
        owners = Counter(item["metadata"]["annotations"][naming.USERNAME_ANNOTATION]
                         for item in items)
        assert owners == Counter(dict.fromkeys(wanted, 1)), kind
    for replica in replicas:
        failures = [line for line in replica.audit_lines() if line.get("outcome") != "success"]
        assert failures == [], failures[:3]
