"""Mutants written by hand, for the protections mutmut cannot reach.

mutmut 3 leaves decorated functions alone, and the per-user locks live in
two of them (`UserLocks.hold` and `UserObjects.exclusive` are
`contextlib.asynccontextmanager`s): without these, a run would report no
survivor there only because it never tried. Each mutant below removes one
protection by a textual change of one module, in a copy of the packages;
the unit tests named with it must then fail. A mutant whose text no longer
matches the module is reported as stale, never as killed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

TESTS_OF_LOCKS = ("tests/unit/test_concierge_user_locks.py",
                  "tests/unit/test_concierge_userobjects.py",
                  "tests/unit/test_concierge_sessions.py",
                  "tests/unit/test_concierge_sessions_guards.py")
#: A mutant that deadlocks fails on this rather than hanging the run.
TEST_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class HandMutant:
    name: str
    module: str
    original: str
    mutated: str
    tests: tuple[str, ...] = TESTS_OF_LOCKS


MUTANTS = (
    HandMutant("hold: the holding task may not re-enter", "user_locks",
               "if entry is not None and task is not None and entry.owner is task:",
               "if False:"),
    HandMutant("hold: the lock is not taken", "user_locks",
               "async with entry.lock:", "async with contextlib.nullcontext():"),
    HandMutant("hold: the owner is not recorded", "user_locks",
               "entry.owner, entry.depth = task, 1", "entry.owner, entry.depth = None, 1"),
    HandMutant("hold: the owner outlives its release", "user_locks",
               "entry.owner, entry.depth = None, 0", "entry.depth = 0"),
    HandMutant("hold: waiters are not counted", "user_locks",
               "entry.users += 1", "entry.users += 0"),
    HandMutant("hold: entries are never dropped", "user_locks",
               "if entry.users == 0 and self._entries.get(key) is entry:", "if False:"),
    HandMutant("hold: no bound on the tasks per key", "user_locks",
               "if self._max_per_key is not None and entry.users >= self._max_per_key:",
               "if False:", (*TESTS_OF_LOCKS, "tests/unit/test_concierge_user_flood.py")),
    HandMutant("hold: one task more than the bound", "user_locks",
               "entry.users >= self._max_per_key:", "entry.users > self._max_per_key:",
               (*TESTS_OF_LOCKS, "tests/unit/test_concierge_user_flood.py")),
    HandMutant("exclusive: a fresh lock per call (no lock at all)", "userobjects",
               "async with self._locks.hold(naming.user_key(username, self._namespace)):",
               "async with contextlib.nullcontext():"),
    HandMutant("exclusive: one lock for every user", "userobjects",
               "async with self._locks.hold(naming.user_key(username, self._namespace)):",
               "async with self._locks.hold(self._namespace):"),
)


def run(root: Path, python: Path, packages: dict[str, Path], modules: list[str]
        ) -> list[tuple[HandMutant, str]]:
    """Each mutant of `modules`, judged in `root` (which holds tests/ and a pyproject whose
    pytest `pythonpath` does not name the packages): killed, survived or stale."""
    outcomes = []
    for mutant in MUTANTS:
        if mutant.module not in modules:
            continue
        src = root / "hand-mutant"
        shutil.rmtree(src, ignore_errors=True)
        for package, folder in packages.items():
            shutil.copytree(folder, src / package, ignore=shutil.ignore_patterns("__pycache__"))
        path = src / "pinniped_concierge" / f"{mutant.module}.py"
        text = path.read_text()
        if text.count(mutant.original) != 1:
            outcomes.append((mutant, "stale"))
            continue
        path.write_text(text.replace(mutant.original, mutant.mutated))
        done = subprocess.run(
            [str(python), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
             f"--timeout={TEST_TIMEOUT_SECONDS}", *mutant.tests],
            cwd=root, capture_output=True, text=True, check=False,
            env={**os.environ, "PYTHONPATH": str(src)})
        # 1: a test failed. Anything else but 0 (a collection error, say) is no verdict.
        outcomes.append((mutant, "killed" if done.returncode == 1 else
                         "survived" if done.returncode == 0 else
                         f"no verdict (pytest exit {done.returncode})"))
        shutil.rmtree(src)
    return outcomes
