"""Figure 2: `kubectl get --raw /version` through the generated kubeconfig, against a
static bearer-token kubeconfig.

The static side uses a ServiceAccount token, so both sides authenticate the
same way at the apiserver (a ServiceAccount JWT): the difference is what
Pinniped adds, the exec plugin's cached path and the impersonation headers
(the apiserver's extra authorization checks). Each generated kubeconfig takes
turns with the static one; no login may happen meanwhile.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from localenv.cluster import write_kubeconfig
from tests.benchmark import concierge_client, stats
from tests.benchmark.child_process import measure
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack
from tests.benchmark.user_machine import UserMachine
from tests.benchmark.user_objects import Caller

WARMUP = 2
MAX_RATIO = 1.3


def run(stack: Stack, machines: list[UserMachine], reader: Caller, scratch: Path, *,
        runs: int) -> dict[str, Any]:
    static = scratch / "static.kubeconfig"
    write_kubeconfig(static, server=stack.cluster.server, ca_file=stack.cluster.ca_file,
                     user="reader", token=reader.token)
    kubeconfigs = {"static token": (static, machines[0].env)}
    for machine in machines:
        kubeconfigs[f"generated ({machine.name})"] = (machine.kubeconfig, machine.env)
    argv = {name: ["kubectl", "--kubeconfig", str(path), "get", "--raw", "/version"]
            for name, (path, _) in kubeconfigs.items()}
    mark = concierge_client.audit_mark(stack)
    for name, (_, env) in kubeconfigs.items():
        for _ in range(WARMUP):
            measure(argv[name], env)
    samples: dict[str, list[float]] = {name: [] for name in kubeconfigs}
    for _ in range(runs):
        for name, (_, env) in kubeconfigs.items():
            samples[name].append(measure(argv[name], env).seconds)
    logins = len(concierge_client.logins_since(stack, mark))
    if logins:
        raise RuntimeError(f"the concierge saw {logins} logins while kubectl was timed")
    baseline = statistics.median(samples["static token"])
    results: dict[str, Any] = {"runs": runs, "commands": {}}
    for name, seconds in samples.items():
        entry: dict[str, Any] = {"wall_ms": stats.summary(seconds, 1000),
                 "ratio_to_static": stats.ratio(statistics.median(seconds), baseline)}
        results["commands"][name] = entry
        log(f"kubectl, {name:28s} median {entry['wall_ms']['median']:6.1f} ms p99 "
            f"{entry['wall_ms']['p99']:6.1f} ms, x{entry['ratio_to_static']:.2f}")
    return results
