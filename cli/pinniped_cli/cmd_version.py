"""`pinniped version` (and `pinniped --version`): which pinniped this is.

The number is the installed distribution's, so it is the one pip installed and
the one to quote in a bug report. Run from a source tree that was never
installed (PYTHONPATH=cli), there is no distribution metadata: then it is the
tree's pyproject.toml version, marked as such, since the command exists to
answer "what am I running" and should not fail at it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from pinniped_cli.runtime import Runtime

DISTRIBUTION = "pinniped-py"
#: The source tree this module sits in when it is not installed: cli/pinniped_cli/ -> root.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def add_flags(parser: argparse.ArgumentParser) -> None:
    """No flags: `pinniped version` prints one line."""


def installed_version(name: str) -> str:
    """The version in `name`'s installed metadata (PackageNotFoundError when there is none)."""
    from importlib import metadata

    return metadata.version(name)


def version(lookup: Callable[[str], str] = installed_version,
            source_root: Path = SOURCE_ROOT) -> str:
    """This pinniped's version: installed metadata, else the source tree's, else unknown."""
    from importlib import metadata

    try:
        return lookup(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        project = tomllib.loads((source_root / "pyproject.toml").read_text()).get("project")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        project = None
    number = project.get("version") if isinstance(project, dict) \
        and project.get("name") == DISTRIBUTION else None
    if isinstance(number, str):
        return f"{number} (source tree {source_root}, not installed)"
    return f"unknown (the {DISTRIBUTION} distribution is not installed)"


def version_line() -> str:
    return f"pinniped {version()}"


def run(args: argparse.Namespace, rt: Runtime) -> int:
    rt.stdout.write(version_line() + "\n")
    rt.stdout.flush()
    return 0
