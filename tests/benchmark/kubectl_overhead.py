"""Figure 2: `kubectl get --raw /version` through the generated kubeconfig, against a
static bearer-token kubeconfig.

The static side uses a ServiceAccount token, so both sides authenticate the
same way at the apiserver (a ServiceAccount JWT): the difference is what
Pinniped adds, the exec plugin's cached path and the impersonation headers
(the apiserver's extra authorization checks). Each generated kubeconfig takes
turns with the static one; no login may happen meanwhile.

Two more kubeconfigs take the same turns and show the floor of the ratio:
kubectl running an exec plugin at all. Both hand kubectl the static side's own
token in a fixed ExecCredential (so the apiserver does the same work as for
the static kubeconfig): one with `/bin/cat` (a small native program), one with
`python -c` on the interpreter the plugin runs on (its `site` start-up
included, as the plugin's console script gets it), which is the least any
Python plugin can cost, and one with a script shaped like the console script
pip writes for `pinniped` (it imports `re` and `sys` before anything of
ours), which is the least the generated kubeconfig's command can cost. The
ExecCredential file is 0600 in the 0700 scratch directory and the token never
appears on a command line.
"""

from __future__ import annotations

import base64
import json
import statistics
from pathlib import Path
from typing import Any

from localenv import pki
from localenv.cluster import write_kubeconfig
from tests.benchmark import concierge_client, stats
from tests.benchmark.child_process import measure
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack
from tests.benchmark.user_machine import UserMachine
from tests.benchmark.user_objects import Caller

WARMUP = 2
MAX_RATIO = 1.3
#: Names of the floor rows (not held to the goal: they show what the goal is up against).
FLOOR_CAT = "floor: exec /bin/cat"
FLOOR_PYTHON = "floor: exec python -c"
FLOOR_CONSOLE = "floor: exec pip-style script"
_PRINT_FILE = "import sys; sys.stdout.write(open(sys.argv[1]).read())"
#: What pip's console-script wrapper does before it calls the entry point, then _PRINT_FILE.
_CONSOLE_SCRIPT = "#!{python}\nimport re\nimport sys\n" + _PRINT_FILE + "\n"


def run(stack: Stack, machines: list[UserMachine], reader: Caller, scratch: Path, *,
        runs: int) -> dict[str, Any]:
    static = scratch / "static.kubeconfig"
    write_kubeconfig(static, server=stack.cluster.server, ca_file=stack.cluster.ca_file,
                     user="reader", token=reader.token)
    kubeconfigs = {"static token": (static, machines[0].env)}
    for machine in machines:
        kubeconfigs[f"generated ({machine.name})"] = (machine.kubeconfig, machine.env)
    credential = _fixed_exec_credential(scratch, reader.token)
    console = scratch / "console-script-floor"
    console.write_text(_CONSOLE_SCRIPT.format(python=stack.venv.python))
    console.chmod(0o700)
    floors = {FLOOR_CAT: ("cat", ["/bin/cat", str(credential)]),
              FLOOR_PYTHON: ("python", [str(stack.venv.python), "-c", _PRINT_FILE,
                                        str(credential)]),
              FLOOR_CONSOLE: ("console", [str(console), str(credential)])}
    for name, (file_name, command) in floors.items():
        path = scratch / f"floor-{file_name}.kubeconfig"
        _write_exec_kubeconfig(path, stack, command)
        kubeconfigs[name] = (path, machines[0].env)
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
    python_floor = statistics.median(samples[FLOOR_PYTHON])
    results["floor"] = {
        "python_c_ratio_to_static": results["commands"][FLOOR_PYTHON]["ratio_to_static"],
        "cat_ratio_to_static": results["commands"][FLOOR_CAT]["ratio_to_static"],
        "console_script_ratio_to_static":
            results["commands"][FLOOR_CONSOLE]["ratio_to_static"],
        # What the generated kubeconfig costs beyond the cheapest Python plugin (ms, p50).
        "generated_over_python_floor_ms": {
            name: round((statistics.median(seconds) - python_floor) * 1000, 2)
            for name, seconds in samples.items() if name.startswith("generated")}}
    return results


def _fixed_exec_credential(scratch: Path, token: str) -> Path:
    """An ExecCredential holding `token`, for the floor plugins to print (0600)."""
    path = scratch / "fixed-exec-credential.json"
    pki.write_private(path, json.dumps({"apiVersion": "client.authentication.k8s.io/v1",
                                        "kind": "ExecCredential",
                                        "status": {"token": token}}).encode())
    return path


def _write_exec_kubeconfig(path: Path, stack: Stack, command: list[str]) -> None:
    """A kubeconfig for the benchmark's cluster whose user runs `command` as its plugin."""
    ca_data = base64.b64encode(stack.cluster.ca_file.read_bytes()).decode()
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "floor",
           "clusters": [{"name": "bench", "cluster": {
               "server": stack.cluster.server, "certificate-authority-data": ca_data}}],
           "contexts": [{"name": "floor", "context": {"cluster": "bench", "user": "floor"}}],
           "users": [{"name": "floor", "user": {"exec": {
               "apiVersion": "client.authentication.k8s.io/v1", "command": command[0],
               "args": command[1:], "interactiveMode": "Never"}}}]}
    pki.write_private(path, json.dumps(doc).encode())
