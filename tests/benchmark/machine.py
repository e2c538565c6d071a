"""What the figures were measured on: CPU, cores, load, and the versions of what ran."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from localenv.cluster import LocalCluster
from localenv.install import InstalledVenv


def describe(venv: InstalledVenv, cluster: LocalCluster) -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "kernel": platform.release(),
        "python": venv.run("python", "-c", "import sys; print(sys.version.split()[0])",
                           check=True).stdout.strip(),
        "kubectl": _kubectl_version(),
        "kube_apiserver": _apiserver_version(cluster),
    }


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def _kubectl_version() -> str:
    result = subprocess.run(["kubectl", "version", "--client", "-o", "json"],
                            capture_output=True, text=True, timeout=30, check=False)
    try:
        return str(json.loads(result.stdout)["clientVersion"]["gitVersion"])
    except (ValueError, KeyError):
        return "unknown"


def _apiserver_version(cluster: LocalCluster) -> str:
    import ssl

    context = ssl.create_default_context(cafile=str(cluster.ca_file))
    request = urllib.request.Request(f"{cluster.server}/version", headers={
        "Authorization": f"Bearer {cluster.admin_token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return str(json.loads(response.read())["gitVersion"])
