"""The full command line: argparse parsers for every command, built only when needed.

kubectl's `login oidc` gets a parser of its own, skipping the other commands'
setup, and a cached credential needs none at all (`pinniped_cli.cached_path`).
"""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

LOGIN_OIDC_DESCRIPTION = (
    "Log in with OpenID Connect, trade the ID token for a cluster credential at the concierge "
    "and print it as an ExecCredential (kubectl's exec plugin protocol). Messages go to stderr.")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, sized without importing shutil (argparse builds one per flag)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        if width is None:
            try:
                width = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                width = int(os.environ.get("COLUMNS", "80") or 80)
            width -= 2
        super().__init__(prog, indent_increment, max_help_position, width)

    def add_argument(self, action: argparse.Action) -> None:
        """As argparse's, but measuring subcommands at the indent they are printed at.

        argparse measures them one level too far left, so a subcommand name
        longer than every flag (`completion`) had its help pushed onto a line
        of its own.
        """
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS:
            for sub in self._iter_indented_subactions(action):
                self._action_max_length = max(
                    self._action_max_length,
                    len(self._format_action_invocation(sub)) + self._current_indent)


class _RawDescriptionHelpFormatter(argparse.RawDescriptionHelpFormatter, _HelpFormatter):
    """For descriptions laid out by hand (the completion command's per-shell usage)."""


class _VersionAction(argparse.Action):
    """`--version`: like argparse's, but the version is looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from pinniped_cli.cmd_version import version_line

        sys.stdout.write(version_line() + "\n")  # stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from pinniped_cli import (
        cmd_completion,
        cmd_elevate,
        cmd_get_kubeconfig,
        cmd_login_oidc,
        cmd_logout,
        cmd_version,
        cmd_whoami,
    )

    parser = argparse.ArgumentParser(
        prog="pinniped", formatter_class=_HelpFormatter,
        description="Log in to Kubernetes with your identity provider (OpenID Connect).")
    parser.add_argument("--version", action=_VersionAction,
                        help="print pinniped's version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="log in (kubectl runs `login oidc` for you)")
    login_kinds = login.add_subparsers(dest="kind", required=True, metavar="KIND")
    get = commands.add_parser("get", help="generate files (kubeconfig)")
    get_kinds = get.add_subparsers(dest="kind", required=True, metavar="KIND")
    # Every command that runs something: (where, name, module, help, description).
    runnable = [
        (login_kinds, "oidc", cmd_login_oidc,
         "log in with OpenID Connect and print an ExecCredential for kubectl",
         LOGIN_OIDC_DESCRIPTION),
        (get_kinds, "kubeconfig", cmd_get_kubeconfig,
         "log in once and write a kubeconfig that uses pinniped",
         "Log in once to learn your identity, then write a kubeconfig whose exec stanza runs "
         "`pinniped login oidc` and whose as/as-groups carry your identity."),
        (commands, "whoami", cmd_whoami, "show who the cluster thinks you are",
         "Ask the concierge who your cluster credential belongs to, and when it expires."),
        (commands, "logout", cmd_logout, "revoke your cluster session and forget it",
         "Revoke the concierge session (the credential stops working within ~10 s) and clear "
         "the local caches for this kubeconfig's login."),
        (commands, "elevate", cmd_elevate, "ask for a group for a while, or approve a request",
         "Temporary elevated access: ask for a group an ElevationPolicy governs, with a reason; "
         "someone else approves; it ends by itself. `pinniped elevate ACTION --help` says "
         "more."),
        (commands, "version", cmd_version, "print pinniped's version",
         "Print pinniped's version (that of the installed pinniped-py distribution)."),
        (commands, "completion", cmd_completion, "print a shell completion script",
         cmd_completion.DESCRIPTION),
    ]
    for where, name, module, help_text, description in runnable:
        _add_command(where, name, module, help_text, description)
    return parser


def _add_command(where: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                 module: ModuleType, help_text: str, description: str) -> None:
    """Subcommand `name`, whose flags and `run` live in `module` (pinniped_cli.cmd_*).

    A description with line breaks was laid out by hand, and is printed as it is.
    """
    formatter = _RawDescriptionHelpFormatter if "\n" in description else _HelpFormatter
    command = where.add_parser(name, help=help_text, description=description,
                               formatter_class=formatter)
    module.add_flags(command)
    command.set_defaults(handler=module.__name__.removeprefix("pinniped_cli.cmd_"))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; kubectl's `login oidc` gets its parser alone, skipping the others' setup."""
    if argv[:2] == ["login", "oidc"]:
        from pinniped_cli import cmd_login_oidc

        parser = argparse.ArgumentParser(prog="pinniped login oidc",
                                         description=LOGIN_OIDC_DESCRIPTION,
                                         formatter_class=_HelpFormatter)
        cmd_login_oidc.add_flags(parser)
        parser.set_defaults(handler="login_oidc")
        return parser.parse_args(argv[2:])
    return build_parser().parse_args(argv)
