"""Mutation-test the concierge's security core with mutmut, and count what survives.

    .venv/bin/python hack/mutation.py [--module identity ...] [--max-children 2] [--keep DIR]

A surviving mutant is a change to a protection that no unit test notices.
mutmut 3 expects the code under `src/` and imports it by package name, while
this repository keeps three packages side by side (`cli/`, `concierge/`,
`apis/`) and puts them on pytest's `pythonpath`. So the run happens in a
scratch copy laid out the way mutmut wants: the three packages under `src/`,
the tests and `hack/` beside them, and pytest's `pythonpath` cut down to
`hack`. The checkout itself is never touched.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"pinniped_cli": "cli", "pinniped_concierge": "concierge", "pinniped_apis": "apis"}
#: The security core: identity mapping, JWT validation, user objects and sessions.
CORE = ("identity", "jwt_authenticator", "userobjects", "sessions")
COPIED = ("tests", "hack", "kubeconfig-templates", "deploy")


def scratch_copy(root: Path, mods: list[str]) -> None:
    """Lay the checkout out under `root` the way mutmut expects it."""
    for package, folder in PACKAGES.items():
        shutil.copytree(REPO / folder / package, root / "src" / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    for name in COPIED:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    pyproject = (REPO / "pyproject.toml").read_text()
    pyproject = re.sub(r"(?m)^pythonpath = \[[^\]]*\]", 'pythonpath = ["hack"]', pyproject)
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(f'"{item}"' for item in items) + "]"

    pyproject += ("\n[tool.mutmut]\n"
                  f"source_paths = {toml_list([f'src/pinniped_concierge/{m}.py' for m in mods])}\n"
                  f"pytest_add_cli_args_test_selection = {toml_list(unit_tests())}\n"
                  f"also_copy = {toml_list(list(COPIED))}\n")
    (root / "pyproject.toml").write_text(pyproject)


def unit_tests() -> list[str]:
    """The concierge's unit tests: the ones that exercise the core (the CLI's cannot)."""
    return sorted(str(path.relative_to(REPO))
                  for path in (REPO / "tests" / "unit").glob("test_concierge_*.py"))


def tally(results: str) -> dict[str, collections.Counter[str]]:
    """Per module, how many mutants ended how (killed, survived, no tests, timeout...)."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in results.splitlines():
        match = re.match(r"\s*pinniped_concierge\.(\w+)\.\S+: (.+)$", line)
        if match:
            counts[match.group(1)][match.group(2).strip()] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=CORE,
                        help="mutate only this module (repeatable; default: the whole core)")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    args = parser.parse_args()
    modules = args.module or list(CORE)
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        print(f"{mutmut} not found: pip install mutmut into this venv", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pinniped-mutation-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        scratch_copy(root, modules)
        run = subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children)],
                             cwd=root, capture_output=True, text=True, check=False)
        results = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=root,
                                 capture_output=True, text=True, check=False).stdout
        if run.returncode != 0 and not results.strip():
            print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
            return 1
        survivors = [line.strip().split(":")[0] for line in results.splitlines()
                     if line.strip().endswith(("survived", "no tests"))]
        diffs = {name: subprocess.run([str(mutmut), "show", name], cwd=root,
                                      capture_output=True, text=True, check=False).stdout
                 for name in survivors} if args.show else {}
    counts = tally(results)
    total: collections.Counter[str] = collections.Counter()
    for module in modules:
        total.update(counts[module])
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts[module].items()))
        print(f"{module}: {sum(counts[module].values())} mutants: {summary}")
    print(f"all: {sum(total.values())} mutants: "
          + ", ".join(f"{n} {status}" for status, n in sorted(total.items())))
    for line in results.splitlines():
        if line.strip().endswith(("survived", "no tests")):
            print(line.strip())
            print(diffs.get(line.strip().split(":")[0], ""), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
