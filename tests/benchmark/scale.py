"""Figure 6: what every request in the cluster pays for each user whose objects exist.

The RBAC authorizer walks every ClusterRoleBinding on every check (then the
namespace's RoleBindings), and impersonation adds one check per impersonated
user and group. So with N users' objects present (ServiceAccount,
ClusterRole naming the user and 3 groups, ClusterRoleBinding: what the
concierge makes), this times, at each N:

(a) an unrelated request: a plain ServiceAccount's `get configmap` in a
    namespace where a RoleBinding lets it read;
(b) a logged-in user's request: the same GET with a per-user token bound to a
    session Secret, impersonating the user and its 3 groups, as the generated
    kubeconfig makes kubectl send it.

N counts the other users; the logged-in user's own objects exist at every
step. Objects are created concurrently (bounded) on a cluster of their own,
and each step grows the previous one rather than starting over.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from localenv.install import InstalledVenv
from tests.benchmark import kube_http, procstat, stats, user_objects
from tests.benchmark.progress import log
from tests.benchmark.stack import cluster_only
from tests.benchmark.timed_http import interleaved

FULL_STEPS = (0, 1_000, 5_000, 10_000, 20_000)
QUICK_STEPS = (0, 500, 2_000)
CREATE_CONCURRENCY = 24
#: The logged-in user, outside the range of the grown ones.
ACTIVE_USER = 10_000_000
PLOT_SCRIPT = Path(__file__).with_name("scale_plot.py")


def run(venv: InstalledVenv, *, quick: bool, requests: int, plot: Path | None,
        keep: bool = False) -> dict[str, Any]:
    steps = QUICK_STEPS if quick else FULL_STEPS
    results: list[dict[str, Any]] = []
    with cluster_only(keep=keep) as (_ca, cluster):
        port = cluster.server.rsplit(":", 1)[1]
        apiserver_pid = procstat.find_pid("kube-apiserver", f"--secure-port={port}")
        context = kube_http.tls_context(cluster.ca_file)
        reader = asyncio.run(_admin(cluster.server, cluster.ca_file, cluster.admin_token,
                                    user_objects.setup_app_namespace))
        present = 0
        for target in steps:
            started = time.monotonic()
            _grow(cluster.server, cluster.ca_file, cluster.admin_token, present, target)
            grow_seconds = time.monotonic() - started
            created = target - present
            present = target
            # A fresh login at each step: its token is bound to a session Secret and
            # lasts 600 s, less than a whole full run.
            active = asyncio.run(_admin(cluster.server, cluster.ca_file, cluster.admin_token,
                                        lambda http: user_objects.log_in(http, ACTIVE_USER)))
            bindings = asyncio.run(_admin(cluster.server, cluster.ca_file, cluster.admin_token,
                                          _count_bindings))
            time.sleep(2)  # the apiserver's RBAC informers take the last writes in
            samples = interleaved(cluster.server, context,
                                  {"unrelated": reader, "impersonating": active},
                                  f"/api/v1/namespaces/{user_objects.APP_NAMESPACE}"
                                  "/configmaps/hello", requests)
            step = {"users": target, "clusterrolebindings": bindings,
                    "apiserver_rss_mb": procstat.rss_mb(apiserver_pid),
                    "objects_created": 3 * created,
                    "objects_per_second": round(3 * created / grow_seconds, 1)
                    if created else None,
                    "unrelated_ms": stats.summary(samples["unrelated"], 1000),
                    "impersonating_ms": stats.summary(samples["impersonating"], 1000)}
            results.append(step)
            log(f"scale N={target:>6}: unrelated p50 {step['unrelated_ms']['median']} ms "
                f"p99 {step['unrelated_ms']['p99']} ms; impersonating p50 "
                f"{step['impersonating_ms']['median']} ms p99 "
                f"{step['impersonating_ms']['p99']} ms; apiserver {step['apiserver_rss_mb']} MB")
    base = results[0]
    top = results[-1]
    per_1000 = {kind: round((top[f"{kind}_ms"]["median"] - base[f"{kind}_ms"]["median"])
                            / (top["users"] - base["users"]) * 1000, 3)
                for kind in ("unrelated", "impersonating")}
    data = {"requests_per_step": requests, "steps": results,
            "added_ms_per_1000_users_p50": per_1000}
    if plot is not None:
        _plot(venv, data, plot)
        data["plot"] = str(plot)
    return data


async def _admin(server: str, ca_file: Path, token: str, action: Any) -> Any:
    async with kube_http.client(server, ca_file, token) as http:
        return await action(http)


def _grow(server: str, ca_file: Path, token: str, start: int, stop: int) -> None:
    if stop <= start:
        return
    log(f"creating users {start}..{stop - 1} ({3 * (stop - start)} objects, "
        f"{CREATE_CONCURRENCY} at a time)")
    kube_http.bulk_create(server, ca_file, token,
                          (item for index in range(start, stop)
                           for item in user_objects.objects(user_objects.identity(index))),
                          CREATE_CONCURRENCY)


async def _count_bindings(http: Any) -> int:
    """ClusterRoleBindings in the cluster (the apiserver's own, ours, the users')."""
    response = await http.get(f"{kube_http.RBAC}/clusterrolebindings", params={"limit": 1})
    response.raise_for_status()
    body = response.json()
    return len(body["items"]) + int(body["metadata"].get("remainingItemCount") or 0)


def _plot(venv: InstalledVenv, data: dict[str, Any], path: Path) -> None:
    """Draw with the benchmark venv's matplotlib (the harness venv need not have it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
        json.dump(data, handle)
        handle.flush()
        subprocess.run([str(venv.python), "-I", str(PLOT_SCRIPT), handle.name, str(path)],
                       check=True, timeout=120, capture_output=True)
    log(f"wrote the plot {path}")
