"""Regular (non-editable) installs of this checkout, in fresh virtualenvs.

What a user gets from `pip install pinniped-py` is a wheel in site-packages,
not the editable `.venv` the tests run in (whose `.pth` hooks also make every
start slower). Tests of packaging, and benchmarks, build one wheel of the
checkout and install it into throwaway venvs, with or without extras.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

from localenv import REPO_ROOT

#: pip resolves dependencies from the package index; a cold cache takes a while.
PIP_TIMEOUT_SECONDS = 600


#: What a wheel build never needs from the checkout (and must not write build/ into).
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "*.egg-info",
                                      "__pycache__", ".mypy_cache", ".ruff_cache")


def build_wheel(out_dir: Path) -> Path:
    """A wheel of the checkout as it is (uncommitted changes too) in `out_dir`, built the
    way pip builds one for a user, from a copy so that no build/ lands in the checkout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCES)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
          "-w", str(out_dir), str(source)])
    (wheel,) = out_dir.glob("pinniped_py-*.whl")
    return wheel


@dataclass(frozen=True)
class InstalledVenv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.root / "bin" / name

    def run(self, *argv: str | Path, env: dict[str, str] | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a command of this venv with a clean environment, away from the checkout.

        No PYTHONPATH from the tests, and the venv as the working directory: from
        the checkout, `python -c` would import its folders (and its egg-info)
        instead of what was installed.
        """
        base = {"PATH": f"{self.root / 'bin'}:/usr/bin:/bin", "HOME": str(self.root),
                "LANG": "C.UTF-8"}
        return subprocess.run([str(a) for a in argv], env=base | (env or {}), cwd=self.root,
                              capture_output=True, text=True, timeout=120, check=check)


def install(wheel: Path, root: Path, extras: str = "") -> InstalledVenv:
    """A fresh venv at `root` with `wheel` (and `extras`, e.g. "concierge") installed."""
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    target = InstalledVenv(root)
    requirement = f"{wheel}[{extras}]" if extras else str(wheel)
    _run([str(target.python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
          requirement])
    return target


def _run(argv: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True,
                            timeout=PIP_TIMEOUT_SECONDS, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
