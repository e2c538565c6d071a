"""Which pinniped-py this is, for `pinniped --version` and `pinniped-concierge --version`.

Both commands ship in one distribution, so they report one number, the one
pip installed and the one to quote in a bug report. Run from a source tree
that was never installed there is no distribution metadata; the tree's own
pyproject.toml then answers, marked as such, since `--version` exists to say
what is running and should not fail at it. Stdlib only, imported only when asked.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "pinniped-py"
#: The source tree this module sits in when it is not installed: apis/pinniped_apis/ -> root.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def version(lookup: Callable[[str], str] = metadata.version,
            source_root: Path = SOURCE_ROOT) -> str:
    """The installed distribution's version, else the source tree's, else "unknown (...)"."""
    try:
        return lookup(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pass
    import tomllib

    try:
        project = tomllib.loads((source_root / "pyproject.toml").read_text("utf-8")).get("project")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        project = None
    number = project.get("version") if isinstance(project, dict) \
        and project.get("name") == DISTRIBUTION else None
    if isinstance(number, str):
        return f"{number} (source tree {source_root}, not installed)"
    return f"unknown (the {DISTRIBUTION} distribution is not installed)"
