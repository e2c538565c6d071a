"""Draw figure 6 (latency against the number of users) as a PNG.

    BENCH_VENV/bin/python -I scale_plot.py RESULTS.json OUT.png

Run by the benchmark with the benchmark venv's interpreter, where matplotlib
is installed; standalone (stdlib and matplotlib only) so that it needs
nothing from the checkout.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any


def main(argv: list[str]) -> int:
    # By name: matplotlib is in the benchmark venv only, not where mypy checks this file.
    importlib.import_module("matplotlib").use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    data = json.loads(Path(argv[0]).read_text())
    steps = data["steps"]
    users = [step["users"] for step in steps]
    figure, axes = plt.subplots(figsize=(8, 4.8), dpi=110)
    series = (("unrelated", "unrelated request (plain user, RoleBinding)", "tab:blue"),
              ("impersonating", "logged-in user (impersonating user + 3 groups)", "tab:red"))
    for key, label, colour in series:
        p50 = [step[f"{key}_ms"]["median"] for step in steps]
        p99 = [step[f"{key}_ms"]["p99"] for step in steps]
        axes.plot(users, p50, marker="o", color=colour, label=f"{label}, p50")
        axes.plot(users, p99, marker="x", linestyle="--", color=colour, alpha=0.6,
                  label=f"{label}, p99")
    axes.set_xlabel("users whose ServiceAccount, ClusterRole and ClusterRoleBinding exist")
    axes.set_ylabel(f"latency of GET configmap (ms), {data['requests_per_step']} keep-alive "
                    "requests")
    axes.set_title("kube-apiserver 1.20.2: per-user RBAC objects tax every request")
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(argv[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
