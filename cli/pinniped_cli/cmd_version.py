"""`pinniped version` (and `pinniped --version`): which pinniped this is.

The lookup is `pinniped_apis.version`, shared with `pinniped-concierge --version`.
"""

from __future__ import annotations

import argparse

from pinniped_cli.runtime import Runtime


def add_flags(parser: argparse.ArgumentParser) -> None:
    """No flags: `pinniped version` prints one line."""


def version_line() -> str:
    from pinniped_apis.version import version

    return f"pinniped {version()}"


def run(args: argparse.Namespace, rt: Runtime) -> int:
    rt.stdout.write(version_line() + "\n")
    rt.stdout.flush()
    return 0
