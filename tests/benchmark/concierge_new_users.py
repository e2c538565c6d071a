"""Figure 4: first logins. Each user is new to the concierge, which creates their
ServiceAccount, ClusterRole and ClusterRoleBinding before the session Secret and token.

N distinct users (1,000; 200 with --quick) log in once each, 8 clients at a
time; the figures are first logins per second, p50/p99 latency, and the
Kubernetes API calls per first login from the concierge's audit log
(`kubeApiCalls`; goal <= 5).
"""

from __future__ import annotations

import statistics
from typing import Any

from tests.benchmark import concierge_client, kube_http, procstat, stats
from tests.benchmark.load import closed_loop
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack

KIND = "new"
CONCURRENCY = 8
MAX_CALLS = 5


def run(stack: Stack, *, users: int) -> dict[str, Any]:
    context = kube_http.tls_context(stack.ca.cert_path)
    pid = stack.concierge.pid
    if pid is None:
        raise RuntimeError("the concierge is not running")
    log(f"minting ID tokens for {users} new users")
    jobs = concierge_client.login_jobs(stack, KIND, range(users))
    mark = concierge_client.audit_mark(stack)
    log(f"{users} first logins, {CONCURRENCY} clients")
    # Connections are opened by a first login each, untimed: those users are new too.
    warmups = concierge_client.login_jobs(stack, KIND, range(users, users + CONCURRENCY))
    outcome = closed_loop(stack.concierge.url, context, jobs, warmups,
                          meter=lambda: procstat.cpu_seconds(pid))
    lines = concierge_client.logins_since(stack, mark)
    calls = [int(line.get("kubeApiCalls", -1)) for line in lines]
    if len(calls) != users + CONCURRENCY:
        raise RuntimeError(f"the audit log has {len(calls)} logins, expected "
                           f"{users + CONCURRENCY}")
    result: dict[str, Any] = {"users": users, "concurrency": CONCURRENCY,
              "logins_per_second": round(outcome.per_second, 1),
              "latency_ms": stats.summary(outcome.latencies, 1000),
              "concierge_cpu_ms_per_login": round(outcome.metered / users * 1000, 2),
              "kube_api_calls_per_login": {"median": statistics.median(calls),
                                           "max": max(calls), "n": len(calls)},
              "harness_cpu_ms_per_request": round(outcome.client_cpu_seconds / users * 1000, 2)}
    log(f"new users: {result['logins_per_second']}/s, p50 {result['latency_ms']['median']} ms "
        f"p99 {result['latency_ms']['p99']} ms, API calls per login median "
        f"{result['kube_api_calls_per_login']['median']} max "
        f"{result['kube_api_calls_per_login']['max']}")
    return result
