"""Mutation-test the concierge's security core with mutmut, and count what survives.

    .venv/bin/python hack/mutation.py [--module identity ...] [--max-children 2] [--keep DIR]
                                      [--show] [--deselect NODEID ...]
    .venv/bin/python hack/mutation.py --report DIR [--show]   # again, from a kept run

A surviving mutant is a change to a protection that no unit test notices.
mutmut 3 expects the code under `src/` and imports it by package name, while
this repository keeps three packages side by side (`cli/`, `concierge/`,
`apis/`) and puts them on pytest's `pythonpath`. So the run happens in a
scratch copy laid out the way mutmut wants: the three packages under `src/`,
the tests and `hack/` beside them, and pytest's `pythonpath` cut down to
`hack`. The checkout itself is never touched.

mutmut first runs the selected tests unmutated and gives up if any fails (a
mutant can only be judged against a suite that passes). On a tree where
someone's work is half done, `--deselect` leaves such a test out; the run then
says which were left out, since every test left out can only make the figures
look better than they are.

The report puts first the survivors that need a person's judgment; those that
change nothing but an audit-log detail or a log line (`mutation_triage`) come
after, counted apart. mutmut skips decorated functions, where the per-user
locks live, so a few mutants written by hand (`mutation_by_hand`) are run
against the unit tests too.
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

import mutation_by_hand
import mutation_triage

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"pinniped_cli": "cli", "pinniped_concierge": "concierge", "pinniped_apis": "apis"}
#: The security core: identity mapping, JWT validation, user objects and sessions, and the
#: modules split out of them (the groups a login may widen to, the per-user locks, the
#: session cap's ledger, the rule for sharing prefixes, revoked users).
CORE = ("identity", "jwt_authenticator", "userobjects", "sessions", "group_history",
        "user_locks", "session_ledger", "prefixes", "revocations")
COPIED = ("tests", "hack", "kubeconfig-templates", "deploy")


def scratch_copy(root: Path, mods: list[str], deselect: list[str]) -> None:
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
                  "pytest_add_cli_args_test_selection = "
                  f"{toml_list(unit_tests() + [f'--deselect={t}' for t in deselect])}\n"
                  f"also_copy = {toml_list(list(COPIED))}\n")
    (root / "pyproject.toml").write_text(pyproject)


def unit_tests() -> list[str]:
    """The concierge's unit tests: the ones that exercise the core (the CLI's cannot)."""
    return sorted(str(path.relative_to(REPO))
                  for path in (REPO / "tests" / "unit").glob("test_concierge_*.py"))


def module_of(mutant: str) -> str:
    """`identity` of `pinniped_concierge.identity.x__checked_name__mutmut_3`."""
    return mutant.split(".")[1]


def tally(results: str) -> dict[str, collections.Counter[str]]:
    """Per module, how many mutants ended how (killed, survived, no tests, timeout...)."""
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in results.splitlines():
        match = re.match(r"\s*pinniped_concierge\.(\w+)\.\S+: (.+)$", line)
        if match:
            counts[match.group(1)][match.group(2).strip()] += 1
    return counts


def run(root: Path, mutmut: Path, modules: list[str], args: argparse.Namespace) -> bool:
    """Lay out the scratch copy in `root` and let mutmut judge every mutant there."""
    scratch_copy(root, modules, args.deselect)
    done = subprocess.run([str(mutmut), "run", "--max-children", str(args.max_children)],
                          cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:  # e.g. a test failing unmutated: no mutant was judged
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
        print("mutmut failed; if a test fails even unmutated, fix it or leave it out "
              "with --deselect NODEID", file=sys.stderr)
        return False
    return True


def report(root: Path, mutmut: Path, show: bool) -> None:
    """Per module, the figures; then each survivor, those that need judgment first."""
    results = subprocess.run([str(mutmut), "results", "--all", "true"], cwd=root,
                             capture_output=True, text=True, check=False).stdout
    counts = tally(results)
    modules = [m for m in CORE if m in counts]
    survivors = [line.strip().rsplit(": ", 1)[0] for line in results.splitlines()
                 if line.strip().endswith(("survived", "no tests"))]
    sources = {m: (root / "mutants" / "src" / "pinniped_concierge" / f"{m}.py").read_text()
               for m in modules}
    defs = {m: mutation_triage.functions(text) for m, text in sources.items()}
    kinds = {name: mutation_triage.triage(defs[module_of(name)], name) for name in survivors}
    total: collections.Counter[str] = collections.Counter()
    for module in [*modules, None]:
        mine = counts[module] if module else total
        summary = ", ".join(f"{n} {status}" for status, n in sorted(mine.items()))
        cosmetic = sum(1 for name, kind in kinds.items()
                       if kind and module in (None, module_of(name)))
        print(f"{module or 'all'}: {sum(mine.values())} mutants: {summary} ({cosmetic} of the "
              "survivors change only an audit-log detail or a log line)")
        if module:
            total.update(mine)
    skipped = re.findall(r"--deselect=([^\"]+)", (root / "pyproject.toml").read_text())
    for test in skipped:
        print(f"left out (figures exclude it): {test}")
    for title, wanted in (("survivors to judge", False),
                          ("survivors that change only an audit-log detail or a log line", True)):
        print(f"\n{title}:")
        for name in survivors:
            if (kinds[name] is not None) == wanted:
                print(f"{name} ({kinds[name]})" if wanted else name)
                if show:
                    print(mutation_triage.diff(sources[module_of(name)], defs[module_of(name)],
                                               name), end="")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", choices=CORE,
                        help="mutate only this module (repeatable; default: the whole core)")
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="run in this new directory and keep it")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="run nothing: report again on a run kept with --keep DIR")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--deselect", action="append", default=[], metavar="NODEID",
                        help="leave this test out (repeatable), e.g. one that fails unmutated")
    args = parser.parse_args()
    mutmut = Path(sys.executable).with_name("mutmut")
    if not mutmut.exists():
        print(f"{mutmut} not found: pip install mutmut into this venv", file=sys.stderr)
        return 2
    if args.report:
        report(args.report, mutmut, args.show)
        return 0
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        print(f"{args.keep} is not empty: give --keep a new directory", file=sys.stderr)
        return 2
    modules = args.module or list(CORE)
    with tempfile.TemporaryDirectory(prefix="pinniped-mutation-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if not run(root, mutmut, modules, args):
            return 1
        report(root, mutmut, args.show)
        report_by_hand(root, modules)
    return 0


def report_by_hand(root: Path, modules: list[str]) -> None:
    """The hand-written mutants of what mutmut skips (`mutation_by_hand`), and their fate."""
    packages = {package: REPO / folder / package for package, folder in PACKAGES.items()}
    outcomes = mutation_by_hand.run(root, Path(sys.executable), packages, modules)
    if not outcomes:
        return
    counts = collections.Counter(outcome for _, outcome in outcomes)
    print(f"\nby hand (decorated functions, which mutmut skips): {len(outcomes)} mutants: "
          + ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())))
    for mutant, outcome in outcomes:
        if outcome != "killed":
            print(f"{mutant.module}: {mutant.name}: {outcome}")


if __name__ == "__main__":
    sys.exit(main())
