"""Figure 1: the plugin's cached path, against `python -c pass` on the same interpreter.

kubectl runs the exec command of the generated kubeconfig before every
command; with a valid credential cached, that is all the time the plugin adds.
Timed: the exact command, arguments and environment of the kubeconfig's
`exec:` stanza, with the KUBERNETES_EXEC_INFO this kubectl sets, from fork to
exit, and the child's peak RSS. Both machines' plugins take turns with
`python -c pass` (A, B, C, A, B, C, ...). The concierge's audit log must show
no login while this runs, or the cached path was not what was measured.
"""

from __future__ import annotations

import json
import pstats
import re
import statistics
import subprocess
from pathlib import Path
from typing import Any

from tests.benchmark import concierge_client, stats
from tests.benchmark.child_process import Run, measure, rss_floor_mb
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack
from tests.benchmark.user_machine import UserMachine, exec_info_from_kubectl

WARMUP = 3
MAX_RATIO = 2.0
MAX_RSS_MB = 30.0


def run(stack: Stack, machines: list[UserMachine], scratch: Path, *,
        runs: int) -> dict[str, Any]:
    commands: dict[str, tuple[list[str], dict[str, str]]] = {}
    baseline_env = dict(machines[0].env)
    commands["python -c pass"] = ([str(stack.venv.python), "-c", "pass"], baseline_env)
    for machine in machines:
        stanza = machine.exec_stanza()
        env = {**machine.env, **{e["name"]: e["value"] for e in stanza.get("env") or []},
               "KUBERNETES_EXEC_INFO": exec_info_from_kubectl(machine, scratch)}
        commands[f"plugin ({machine.name})"] = ([stanza["command"], *stanza.get("args", [])],
                                                env)
    mark = concierge_client.audit_mark(stack)
    for argv, env in commands.values():
        for _ in range(WARMUP):  # page cache and .pyc files
            _checked(measure(argv, env), argv)
    samples: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, (argv, env) in commands.items():
            samples[name].append(_checked(measure(argv, env), argv))
    logins = len(concierge_client.logins_since(stack, mark))
    if logins:
        raise RuntimeError(f"the concierge saw {logins} logins while the cached path was timed")
    baseline = [r.seconds for r in samples["python -c pass"]]
    results: dict[str, Any] = {"runs": runs, "interpreter": str(stack.venv.python),
                               "rss_floor_mb": rss_floor_mb(), "commands": {}}
    for name, runs_of in samples.items():
        seconds = [r.seconds for r in runs_of]
        entry: dict[str, Any] = {"wall_ms": stats.summary(seconds, 1000),
                 "peak_rss_mb": stats.summary([r.peak_rss_mb for r in runs_of], digits=1),
                 "ratio_to_python_c_pass": stats.ratio(statistics.median(seconds),
                                                       statistics.median(baseline))}
        results["commands"][name] = entry
        log(f"{name:32s} median {entry['wall_ms']['median']:6.1f} ms p99 "
            f"{entry['wall_ms']['p99']:6.1f} ms, x{entry['ratio_to_python_c_pass']:.2f}; "
            f"peak RSS {entry['peak_rss_mb']['max']} MB")
    name, (argv, env) = next((n, c) for n, c in commands.items() if n.startswith("plugin"))
    modules = import_profile(stack, argv, env)
    results["imports"] = {"command": name, "total_ms": round(sum(m["cumulative_ms"]
                                                                for m in modules), 1),
                          "top": modules[:12]}
    results["cprofile"] = {"command": name, "top": run_profile(stack, argv, env, scratch)}
    return results


def run_profile(stack: Stack, argv: list[str], env: dict[str, str], scratch: Path,
                top: int = 12) -> list[dict[str, Any]]:
    """One cached-path run under cProfile: the functions with the most cumulative time,
    importlib's own frames left out (an import shows as its module's `<module>`)."""
    output = scratch / "plugin.prof"
    subprocess.run([str(stack.venv.python), "-m", "cProfile", "-o", str(output), *argv],
                   env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                   check=True)
    table: Any = pstats.Stats(str(output)).stats  # type: ignore[attr-defined]
    ranked = sorted(((key, entry) for key, entry in table.items()
                     if not key[0].startswith(("<frozen", "~"))),
                    key=lambda item: item[1][3], reverse=True)
    return [{"function": f"{name} ({Path(file).name}:{line})",
             "cumulative_ms": round(entry[3] * 1000, 1), "own_ms": round(entry[2] * 1000, 1)}
            for (file, line, name), entry in ranked[:top]]


def import_profile(stack: Stack, argv: list[str], env: dict[str, str]) -> list[dict[str, Any]]:
    """Where the cached path's start-up goes: `python -X importtime` of the same command,
    top-level modules by cumulative import time (the plugin is a console script, so its
    interpreter can run it as a file)."""
    result = subprocess.run([str(stack.venv.python), "-X", "importtime", *argv], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=60, check=False)
    modules = []
    for line in result.stderr.splitlines():
        match = _IMPORT_LINE.match(line)
        if match and not match.group("name").startswith(" "):  # top level: no indent
            modules.append({"module": match.group("name").strip(),
                            "cumulative_ms": round(int(match.group("cumulative")) / 1000, 1)})
    return sorted(modules, key=lambda m: m["cumulative_ms"], reverse=True)


_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+(?P<cumulative>\d+) \| (?P<name>.*)$")


def _checked(result: Run, argv: list[str]) -> Run:
    """A plugin run must have printed an ExecCredential with a token (not just exited 0)."""
    if argv[-1] != "pass":
        status = json.loads(result.stdout).get("status") or {}
        if not status.get("token"):
            raise RuntimeError("the plugin printed no token")
    return result
