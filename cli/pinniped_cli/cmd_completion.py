"""`pinniped completion bash|zsh|fish`: print a shell completion script on stdout.

The script is generated from the same parser that parses the command line,
so every subcommand, flag and choice is there without a list kept by hand.
"""

from __future__ import annotations

import argparse

from pinniped_cli.runtime import Runtime

SHELLS = ("bash", "zsh", "fish")

DESCRIPTION = """\
Print a completion script for your shell on stdout. It completes subcommands, flags and
their choices; it is static (TAB never runs pinniped), so regenerate it after upgrading.

  bash:  source <(pinniped completion bash)      # in ~/.bashrc, or save it as
         ~/.local/share/bash-completion/completions/pinniped
  zsh:   source <(pinniped completion zsh)       # in ~/.zshrc, after compinit; or save
         it as _pinniped in a directory on $fpath
  fish:  pinniped completion fish | source       # or save it as
         ~/.config/fish/completions/pinniped.fish
"""


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("shell", choices=SHELLS, help="the shell to complete for")


def run(args: argparse.Namespace, rt: Runtime) -> int:
    from pinniped_cli.command_line import build_parser
    from pinniped_cli.completion import script

    rt.stdout.write(script(args.shell, build_parser()))
    rt.stdout.flush()
    return 0
