"""Shell completion scripts for `pinniped`, generated from its argparse parser.

Static scripts: a TAB never starts Python (which would cost hundreds of
milliseconds per keystroke), so a script shows the commands of the pinniped
that generated it, and is regenerated after an upgrade.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from pinniped_cli.completion import bash, fish, zsh
from pinniped_cli.completion.tree import Command, command_tree

SHELLS: dict[str, Callable[[Command], str]] = {
    "bash": bash.script, "zsh": zsh.script, "fish": fish.script}


def script(shell: str, parser: argparse.ArgumentParser) -> str:
    """The completion script for `shell` (one of SHELLS) covering all of `parser`."""
    return SHELLS[shell](command_tree(parser))
