"""Figure 3: the concierge for returning users, against the same API calls made directly.

A returning user's login costs the concierge two Kubernetes API calls: a
session Secret and a TokenRequest bound to it (the user's ServiceAccount,
ClusterRole and ClusterRoleBinding are known and unchanged). The pair here is:

A. a TokenCredentialRequest to the concierge, for one of POOL users who
   logged in before (a freshly minted ID token each time);
B. those two calls straight to the apiserver, with the concierge's own
   ServiceAccount token (so RBAC does the same work), for the same users'
   ServiceAccounts.

At 1, 8 and 32 concurrent clients, batch A and batch B take turns, several
rounds. B's Secrets carry none of the concierge's labels: the concierge must
not count them as sessions (its per-user cap) nor sweep them. The figures:
logins per second, p50/p99 latency, the p50 ratio A/B (goal <= 1.3), and the
concierge's own CPU time per login from /proc/PID/stat (goal <= 3 ms), with
the Kubernetes API calls per login from its audit log (goal <= 2).
"""

from __future__ import annotations

import json
import secrets
import statistics
import time
from typing import Any

from pinniped_concierge import naming
from tests.benchmark import concierge_client, kube_http, procstat, stats
from tests.benchmark.load import Job, closed_loop
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack
from tests.benchmark.timed_http import KeepAlive
from tests.benchmark.user_objects import Caller

KIND = "returning"
#: Enough users that none nears maxSessionsPerUser (50) over a full run.
POOL = 128
CONCURRENCY = (1, 8, 32)


def batch_size(concurrency: int, quick: bool) -> int:
    """Logins per batch: enough per client for a median, few enough to interleave often."""
    size = {1: 40, 8: 80, 32: 160}[concurrency]
    return size // 2 if quick else size


def run(stack: Stack, *, quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    context = kube_http.tls_context(stack.ca.cert_path)
    namespace = stack.concierge.namespace
    accounts = returning_pool(stack, KIND)
    direct_caller = Caller(stack.concierge_token())
    pid = stack.concierge.pid
    if pid is None:
        raise RuntimeError("the concierge is not running")
    idle = _idle_cpu_rate(pid)
    mark = concierge_client.audit_mark(stack)
    levels: list[dict[str, Any]] = []
    total_cpu = 0.0
    total_logins = 0
    for concurrency in CONCURRENCY:
        size = batch_size(concurrency, quick)
        samples: dict[str, list[float]] = {"concierge": [], "direct": []}
        rates: dict[str, list[float]] = {"concierge": [], "direct": []}
        client_cpu: dict[str, float] = {"concierge": 0.0, "direct": 0.0}
        cpu = 0.0
        cursor = 0
        for _ in range(rounds):
            users = [(cursor + n) % POOL for n in range(size)]
            cursor += size
            jobs = concierge_client.login_jobs(stack, KIND, users)
            warm = concierge_client.login_jobs(stack, KIND, [(cursor + n) % POOL
                                                             for n in range(concurrency)])
            cursor += concurrency
            outcome = closed_loop(stack.concierge.url, context, jobs, warmups=warm,
                                  meter=lambda: procstat.cpu_seconds(pid))
            cpu += outcome.metered
            samples["concierge"] += outcome.latencies
            rates["concierge"].append(outcome.per_second)
            client_cpu["concierge"] += outcome.client_cpu_seconds
            direct = closed_loop(stack.cluster.server, context,
                                 [direct_job(namespace, *accounts[u % POOL]) for u in users],
                                 warmups=[direct_job(namespace, *accounts[0])] * concurrency,
                                 caller=direct_caller)
            samples["direct"] += direct.latencies
            rates["direct"].append(direct.per_second)
            client_cpu["direct"] += direct.client_cpu_seconds
        logins = len(samples["concierge"])
        total_cpu += cpu
        total_logins += logins
        level: dict[str, Any] = {
            "concurrency": concurrency, "rounds": rounds, "batch": size,
            "concierge_ms": stats.summary(samples["concierge"], 1000),
            "direct_ms": stats.summary(samples["direct"], 1000),
            "concierge_per_second": round(statistics.median(rates["concierge"]), 1),
            "direct_per_second": round(statistics.median(rates["direct"]), 1),
            "p50_ratio": stats.ratio(statistics.median(samples["concierge"]),
                                     statistics.median(samples["direct"])),
            "concierge_cpu_ms_per_login": round(cpu / logins * 1000, 2),
            "harness_cpu_ms_per_request": {k: round(v / logins * 1000, 2)
                                           for k, v in client_cpu.items()},
        }
        levels.append(level)
        log(f"returning users, {concurrency:>2} clients: concierge p50 "
            f"{level['concierge_ms']['median']} ms p99 {level['concierge_ms']['p99']} ms "
            f"{level['concierge_per_second']}/s; direct p50 {level['direct_ms']['median']} ms "
            f"p99 {level['direct_ms']['p99']} ms {level['direct_per_second']}/s; ratio "
            f"{level['p50_ratio']}; concierge CPU {level['concierge_cpu_ms_per_login']} ms/login")
    calls = [int(line.get("kubeApiCalls", -1))
             for line in concierge_client.logins_since(stack, mark)]
    if len(calls) < total_logins:
        raise RuntimeError(f"the audit log has {len(calls)} logins, expected {total_logins}")
    return {"pool_users": POOL, "levels": levels,
            "concierge_cpu_ms_per_login": round(total_cpu / total_logins * 1000, 2),
            "concierge_idle_cpu_ms_per_second": round(idle * 1000, 2),
            "kube_api_calls_per_login": {"median": statistics.median(calls),
                                         "max": max(calls), "n": len(calls)}}


def noop(_connection: KeepAlive) -> None:
    """A warm-up that sends nothing (the first logins' connections may be timed)."""


def returning_pool(stack: Stack, kind: str) -> list[tuple[str, str, str]]:
    """Log POOL users of `kind` in once, so that they are returning users; their accounts."""
    log(f"logging {POOL} users in once, so that they are returning users")
    closed_loop(stack.concierge.url, kube_http.tls_context(stack.ca.cert_path),
                concierge_client.login_jobs(stack, kind, range(POOL)), warmups=[noop] * 8)
    accounts = _service_accounts(stack, stack.concierge.namespace, kind)
    time.sleep(1)  # the concierge's watch mirror confirms the objects it just wrote
    return accounts


def _service_accounts(stack: Stack, namespace: str, kind: str) -> list[tuple[str, str, str]]:
    """(username, ServiceAccount name, uid) of each pool user, as the concierge made them."""
    context = kube_http.tls_context(stack.ca.cert_path)
    admin = KeepAlive(stack.cluster.server, context, Caller(stack.cluster.admin_token))
    accounts = []
    try:
        for index in range(POOL):
            user = concierge_client.username(stack, kind, index)
            name = naming.user_object_name(user, namespace)
            sa = json.loads(admin.expect(
                "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}"))
            accounts.append((user, name, str(sa["metadata"]["uid"])))
    finally:
        admin.close()
    return accounts


def direct_job(namespace: str, user: str, service_account: str, uid: str) -> Job:
    """A session Secret and a TokenRequest bound to it, as the concierge makes them."""

    def job(connection: KeepAlive) -> None:
        name = naming.session_secret_name(secrets.token_hex(8))
        secret = json.loads(connection.expect("POST", kube_http.secret_path(namespace), {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": {naming.USERNAME_ANNOTATION: user},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "ServiceAccount",
                                              "name": service_account, "uid": uid}]}}))
        connection.expect("POST", kube_http.token_path(namespace, service_account),
                          kube_http.bound_token_request(name, secret["metadata"]["uid"]))

    return job


def _idle_cpu_rate(pid: int, seconds: float = 3.0) -> float:
    """The concierge's CPU seconds per second with no request (background loops)."""
    before = procstat.cpu_seconds(pid)
    time.sleep(seconds)
    return (procstat.cpu_seconds(pid) - before) / seconds
