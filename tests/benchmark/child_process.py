"""Run a command and measure it as kubectl experiences it: wall time from spawn to exit,
and the child's own peak resident memory (ru_maxrss from wait4, for that child only).

The spawning is done by `spawn_child.py`, a small launcher, because a child's
ru_maxrss includes the size of whoever forked it (see that file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).with_name("spawn_child.py")


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mb: float
    stdout: bytes


def measure(argv: Sequence[str], env: Mapping[str, str], cwd: str = "/") -> Run:
    """Run `argv` (its first element found on PATH if not absolute) to completion; it must
    exit 0."""
    program = argv[0] if "/" in argv[0] else shutil.which(argv[0], path=env.get("PATH"))
    if program is None:
        raise FileNotFoundError(argv[0])
    with tempfile.NamedTemporaryFile() as stdout:
        result = subprocess.run([sys.executable, "-I", "-S", str(LAUNCHER), stdout.name, "--",
                                 program, *argv[1:]], env=dict(env), cwd=cwd,
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
                                check=False)
        output = Path(stdout.name).read_bytes()
    try:
        report = json.loads(result.stdout)
    except ValueError:
        raise RuntimeError(f"the launcher failed: {result.stderr.decode(errors='replace')}"
                           ) from None
    if report["exit"] != 0:
        raise RuntimeError(f"{argv[0]} exited {report['exit']}: "
                           f"{result.stderr.decode(errors='replace')[-1500:]}")
    return Run(report["seconds"], round(report["maxrss_kb"] / 1024, 1), output)


def rss_floor_mb() -> float:
    """What the launcher itself weighs: no child can be reported as smaller than this."""
    return measure(["/bin/true"], {"PATH": "/usr/bin:/bin"}).peak_rss_mb
