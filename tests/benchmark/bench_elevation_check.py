"""What the elevation check costs a kubectl call: the cached path with and without the hint.

Three commands take turns (A, B, C, A, B, C, ...) on this machine: `python -c
pass`, the plugin answering from a cached credential without the elevation
hint (no network), and the same with the hint, which asks a loopback TLS
server for the state first (`pinniped_cli.elevation_check`) and is answered
"still pending". Each is timed from fork to exit. The server counts what it
served, so a run in which the hinted plugin did not ask (or the other did)
fails rather than measuring the wrong thing. The measured interpreter and
plugin are those of a regular (non-editable) install of the checkout in a
fresh venv (`bench_venv`, as `hack/bench.sh` uses); this script only drives.

    PYTHONPATH=hack .venv/bin/python -m tests.benchmark.bench_elevation_check [--runs 40]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from localenv.fixtures_cli import StateServer, state_answer
from tests.benchmark.bench_venv import bench_venv

WARMUP = 3


def _timed(argv: list[str], env: dict[str, str], plugin: bool) -> float:
    """Seconds from fork to exit; a plugin run must have printed the ExecCredential."""
    started = time.perf_counter()
    result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=30, check=False)
    seconds = time.perf_counter() - started
    if result.returncode != 0 or (plugin and "ExecCredential" not in result.stdout):
        raise RuntimeError(f"{argv[:3]} failed: {result.stderr[-500:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=40)
    runs = parser.parse_args().runs
    venv, _ = bench_venv()
    from tests.unit.test_cli_elevation_check import _env, _login_args, seed

    with tempfile.TemporaryDirectory() as scratch, StateServer(Path(scratch) / "pki") as server:
        server.answer = state_answer(200, {"pending": ["elev-0123456789abcdef"]})
        args = _login_args(server)
        plugin = [str(venv.script("pinniped")), "login", "oidc", *args]
        envs = {}
        for name, elevated in (("without hint", None), ("with hint", ())):
            home = Path(scratch) / name.replace(" ", "-")
            home.mkdir()
            envs[name] = _env(home) | {"PATH": "/usr/bin:/bin"}
            seed(envs[name], args, elevated)
        commands = {"python -c pass": ([str(venv.python), "-c", "pass"], envs["without hint"]),
                    "plugin, without hint": (plugin, envs["without hint"]),
                    "plugin, with hint": (plugin, envs["with hint"])}
        for argv, env in commands.values():
            for _ in range(WARMUP):  # page cache and .pyc files
                _timed(argv, env, argv is plugin)
        served = len(server.requests)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(runs):
            for name, (argv, env) in commands.items():
                samples[name].append(_timed(argv, env, argv is plugin))
        asked = len(server.requests) - served
        if asked != runs:
            raise RuntimeError(f"the state was asked {asked} times in {runs} runs")
    report = {"runs": runs, "interpreter": str(venv.python), "ms": {
        name: {"median": round(statistics.median(s) * 1000, 1),
               "p90": round(sorted(s)[int(len(s) * 0.9) - 1] * 1000, 1),
               "min": round(min(s) * 1000, 1)} for name, s in samples.items()}}
    with_hint, without = (report["ms"][n]["median"] for n in ("plugin, with hint",
                                                                "plugin, without hint"))
    report["check_cost_ms_median"] = round(with_hint - without, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
