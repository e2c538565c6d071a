"""How long kubectl waits for `pinniped` on a cache hit, as a multiple of `python -c pass`.

kubectl runs the plugin on every command, so this is the cost people feel.
Both commands run alternately in one process, so machine noise hits both
alike; the report gives medians and the ratio.

    .venv/bin/python tests/bench_hot_path.py [--runs 40] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "hack")]

from localenv import SOURCE_PATH  # noqa: E402
from localenv.fixtures_cli import (  # noqa: E402
    HOT_PATH_LOGIN_ARGS,
    exec_info,
    pinniped_command,
    seed_credential,
)

LOGIN_ARGS = HOT_PATH_LOGIN_ARGS


def seed(home: Path) -> dict[str, str]:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
           "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KUBERNETES_EXEC_INFO": exec_info(),
           "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring"}
    seed_credential(env, "bench-token", ttl=dt.timedelta(hours=1))
    return env


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {result.stderr.decode(errors='replace')}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = seed(Path(tmp))
        module_env = {**env, "PYTHONPATH": SOURCE_PATH}
        commands = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "pinniped (cached)": ([*pinniped_command(), "login", "oidc", *LOGIN_ARGS], env),
            "python -m pinniped_cli (cached)": (
                [sys.executable, "-m", "pinniped_cli", "login", "oidc", *LOGIN_ARGS], module_env),
        }
        for argv, command_env in list(commands.values())[1:]:
            out = subprocess.run(argv, env=command_env, capture_output=True, text=True,
                                 check=True).stdout
            assert json.loads(out)["status"]["token"] == "bench-token", "cache not used"
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for argv, command_env in commands.values():  # warm the page cache and .pyc files
            timed(argv, command_env)
        for _ in range(args.runs):
            for name, (argv, command_env) in commands.items():
                samples[name].append(timed(argv, command_env))
    baseline = statistics.median(samples["python -c pass"])
    report = {name: {"median_ms": round(statistics.median(s) * 1000, 1),
                     "p90_ms": round(sorted(s)[int(len(s) * 0.9) - 1] * 1000, 1),
                     "ratio_to_python_c_pass": round(statistics.median(s) / baseline, 2)}
              for name, s in samples.items()}
    if args.json:
        print(json.dumps({"runs": args.runs, "results": report}, indent=2))
    else:
        print(f"{args.runs} runs each, interleaved")
        for name, numbers in report.items():
            print(f"  {name:24s} median {numbers['median_ms']:6.1f} ms   "
                  f"p90 {numbers['p90_ms']:6.1f} ms   "
                  f"x{numbers['ratio_to_python_c_pass']:.2f} of python -c pass")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
