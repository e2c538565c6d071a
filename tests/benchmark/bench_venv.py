"""The install that is measured: a wheel of the checkout, non-editable, in a venv of its own.

Building the venv (pip resolving the concierge's dependencies) takes about a
minute, so venvs are kept under the user's cache directory, keyed by a hash of
the wheel's contents (names and bytes of its files, not the zip's timestamps,
which change at every build): an unchanged checkout reuses its venv, any
change to the code gets a fresh one. Only the newest few are kept.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from localenv.cluster import cache_dir
from localenv.install import PIP_TIMEOUT_SECONDS, InstalledVenv, build_wheel, install
from tests.benchmark.progress import log

#: What only the benchmark needs on top of `pinniped-py[concierge]` (a `bench` extra).
BENCH_REQUIREMENTS = ("matplotlib>=3.8", "py-spy>=0.3.14")
KEEP_VENVS = 2
_COMPLETE = ".complete"


def wheel_digest(wheel: Path) -> str:
    """SHA-256 over the wheel's file names and contents, in name order."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()[:16]


def bench_venv(extra: tuple[str, ...] = (), flavour: str = "bench-venvs"
               ) -> tuple[InstalledVenv, str]:
    """The measured venv for the checkout as it is now (built unless cached), and its key.

    `extra` requirements go in on top of BENCH_REQUIREMENTS, in venvs kept under
    a directory of their own (`flavour`), so the measured product's venv never
    holds what only one opt-in measurement needs.
    """
    root = cache_dir() / flavour
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pinniped-wheel-") as tmp:
        log("building a wheel of the checkout")
        wheel = build_wheel(Path(tmp))
        key = wheel_digest(wheel)
        if extra:
            key = hashlib.sha256(f"{key} {' '.join(extra)}".encode()).hexdigest()[:16]
        target = root / key
        with open(root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build one venv, not two halves
            if (target / _COMPLETE).exists():
                log(f"reusing {target} (a venv of the same wheel contents)")
            else:
                log(f"installing {wheel.name}[concierge] and "
                    f"{', '.join(BENCH_REQUIREMENTS + extra)} into a fresh venv {target}")
                shutil.rmtree(target, ignore_errors=True)
                try:
                    venv = install(wheel, target, extras="concierge")
                    _pip(venv, *BENCH_REQUIREMENTS, *extra)
                except BaseException:
                    shutil.rmtree(target, ignore_errors=True)
                    raise
                (target / _COMPLETE).write_text(wheel.name + "\n")
            os.utime(target)
            _prune(root, keep=target)
    return InstalledVenv(target), key


def _pip(venv: InstalledVenv, *requirements: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(venv.python), "-m", "pip", "install", "-q",
                             "--disable-pip-version-check", *requirements],
                            env=env, capture_output=True, text=True,
                            timeout=PIP_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} failed:\n"
                           f"{result.stderr[-3000:]}")


def _prune(root: Path, keep: Path) -> None:
    """Keep the newest KEEP_VENVS venvs (each is a few hundred MB)."""
    others = sorted((p for p in root.iterdir()
                     if p.is_dir() and p != keep and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in others[KEEP_VENVS - 1:]:
        shutil.rmtree(stale, ignore_errors=True)
