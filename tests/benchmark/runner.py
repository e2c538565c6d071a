"""`bash hack/bench.sh [--quick] [--json PATH] [--plot PATH]`: every speed and scale figure
of docs/performance.md in one run.

1. builds a wheel of the checkout and installs it, non-editable, into a venv
   of its own (cached by the wheel's contents: `bench_venv`);
2. starts etcd + kube-apiserver, the IdP, a minting issuer and the installed
   concierge (`stack`), and measures, each pair taking turns in one run:
   the plugin's cached path (`plugin_hot_path`), kubectl through the
   generated kubeconfig (`kubectl_overhead`), the concierge for returning
   users (`concierge_returning`, with a py-spy profile: `concierge_profile`)
   and for new ones (`concierge_new_users`);
3. times token validation alone on one core (`token_validation`);
4. on a fresh cluster, the cost of N users' objects to every request
   (`scale`, with a PNG plot and the 20,000-people scenario: `scenario`);
5. prints the machine, every figure and its goal, and writes it all as JSON.

Opt-in (`--only ...,clients`): the floor of the concierge's ratio, the HTTP
layer alone and other Kubernetes API clients making a returning login's two
calls (`kube_clients`), from a venv of its own with the extra clients.

Everything it starts is stopped on the way out, by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from localenv import REPO_ROOT
from tests.benchmark import (
    concierge_new_users,
    concierge_profile,
    concierge_returning,
    kube_clients,
    kube_http,
    kubectl_overhead,
    machine,
    markdown,
    plugin_hot_path,
    report,
    scale,
    scenario,
    user_machine,
    user_objects,
)
from tests.benchmark.bench_venv import bench_venv
from tests.benchmark.progress import log
from tests.benchmark.stack import Stack, running_stack

PARTS = ("plugin", "kubectl", "returning", "profile", "new-users", "tokens", "scale")
#: Parts that run only when named in --only: they need packages the product does not ship.
OPT_IN_PARTS = ("clients",)
_STACK_PARTS = {"plugin", "kubectl", "returning", "profile", "new-users", "clients"}
DEFAULT_OUTPUT = REPO_ROOT / "build" / "bench"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hack/bench.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller N and fewer repetitions (a few minutes in all)")
    parser.add_argument("--json", type=Path, default=DEFAULT_OUTPUT / "results.json",
                        metavar="PATH", help="where to write every figure as JSON "
                                             "(default: %(default)s)")
    parser.add_argument("--plot", type=Path, default=None, metavar="PATH",
                        help="where to write the scale figure's PNG (default: next to the JSON)")
    parser.add_argument("--only", default=",".join(PARTS), metavar="PARTS",
                        help=f"comma-separated parts to run (default: all of {', '.join(PARTS)}; "
                             f"opt-in: {', '.join(OPT_IN_PARTS)}, which installs "
                             f"{', '.join(kube_clients.CLIENT_REQUIREMENTS)} into a venv of "
                             "its own)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directories (logs, audit logs) for a look after")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS) - set(OPT_IN_PARTS))
    if unknown:
        _parser().error(f"unknown parts {', '.join(unknown)}; choose from "
                        f"{', '.join(PARTS + OPT_IN_PARTS)}")
    plot = args.plot or args.json.with_name("scale.png")
    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "provisional_note": "rerun on a quiet machine before quoting",
    }
    venv, key = bench_venv()
    results["venv"] = {"path": str(venv.root), "wheel_key": key}
    quick = args.quick
    clients_python = None
    if "clients" in parts:
        clients_venv, clients_key = bench_venv(kube_clients.CLIENT_REQUIREMENTS,
                                               flavour="bench-clients-venvs")
        results["clients_venv"] = {"path": str(clients_venv.root), "key": clients_key}
        clients_python = clients_venv.python
    if _STACK_PARTS & set(parts):
        with running_stack(venv, keep=args.keep) as stack:
            results["machine"] = machine.describe(venv, stack.cluster)
            report.machine(results["machine"])
            _against_the_stack(stack, parts, quick, results)
            if clients_python is not None:
                results["clients"] = kube_clients.run(stack, clients_python, quick=quick)
                report.kube_clients(results["clients"])
    if "tokens" in parts:
        results["token_validation"] = _token_validation(venv, quick)
        report.token_validation(results["token_validation"])
    if "scale" in parts:
        results["scale"] = scale.run(venv, quick=quick, requests=100 if quick else 300,
                                     plot=plot, keep=args.keep)
        results["scenario"] = scenario.work_out(results["scale"]["steps"])
        report.scale(results["scale"], results["scenario"])
    results["load_average_1m_at_end"] = machine.load_average()
    results["seconds"] = round(time.monotonic() - started)
    results["goals"] = report.goals(results)
    report.goal_table(results["goals"], results["seconds"], results["mode"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(markdown.render(results))
    log(f"wrote {args.json} and {args.json.with_suffix('.md')}")
    return 0


def _against_the_stack(stack: Stack, parts: list[str], quick: bool,
                       results: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="pinniped-bench-users-") as tmp:
        scratch = Path(tmp)
        if "plugin" in parts or "kubectl" in parts:
            machines = [
                user_machine.set_up(stack, scratch, "XDG_RUNTIME_DIR", runtime_dir=True),
                user_machine.set_up(stack, scratch, "no XDG_RUNTIME_DIR", runtime_dir=False)]
            try:
                if "plugin" in parts:
                    results["plugin"] = plugin_hot_path.run(stack, machines, scratch,
                                                            runs=15 if quick else 40)
                    report.plugin(results["plugin"])
                if "kubectl" in parts:
                    reader = asyncio.run(_reader(stack))
                    results["kubectl"] = kubectl_overhead.run(
                        stack, machines, reader, scratch, runs=10 if quick else 30)
                    report.kubectl(results["kubectl"])
            finally:
                for one in machines:
                    user_machine.tear_down(one)
        if "returning" in parts or "profile" in parts:
            results["returning"] = concierge_returning.run(stack, quick=quick)
            report.returning(results["returning"])
        if "profile" in parts:
            results["profile"] = concierge_profile.run(stack, scratch,
                                                       seconds=5 if quick else 10)
            report.profile(results["profile"])
        if "new-users" in parts:
            results["new_users"] = concierge_new_users.run(stack,
                                                           users=200 if quick else 1000)
            report.new_users(results["new_users"])


async def _reader(stack: Stack) -> user_objects.Caller:
    async with kube_http.client(stack.cluster.server, stack.cluster.ca_file,
                                stack.cluster.admin_token) as http:
        return await user_objects.setup_app_namespace(http)


def _token_validation(venv: Any, quick: bool) -> dict[str, Any]:
    import subprocess

    log("token validation on one core (RS256 and ES256 taking turns)")
    script = Path(__file__).with_name("token_validation.py")
    result = subprocess.run([str(venv.python), "-I", str(script),
                             "--rounds", "3" if quick else "7"],
                            capture_output=True, text=True, timeout=300, check=False,
                            cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"token_validation.py failed: {result.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


if __name__ == "__main__":
    sys.exit(main())
