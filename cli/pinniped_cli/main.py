"""`pinniped`: argument parsing and dispatch to one module per subcommand.

Commands are imported by name after parsing so that a kubectl call, which
only needs `login oidc` and usually only its cache, loads nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pinniped_cli.errors import CLIError
from pinniped_cli.runtime import Runtime, default_runtime

DEBUG_VAR = "PINNIPED_DEBUG"


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


def build_parser() -> argparse.ArgumentParser:
    from pinniped_cli import cmd_get_kubeconfig, cmd_login_oidc, cmd_logout, cmd_whoami

    parser = argparse.ArgumentParser(
        prog="pinniped", formatter_class=_HelpFormatter,
        description="Log in to Kubernetes with your identity provider (OpenID Connect).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", help="log in (kubectl runs `login oidc` for you)")
    login_kinds = login.add_subparsers(dest="kind", required=True, metavar="KIND")
    oidc = login_kinds.add_parser(
        "oidc", help="log in with OpenID Connect and print an ExecCredential for kubectl",
        description=LOGIN_OIDC_DESCRIPTION)
    cmd_login_oidc.add_flags(oidc)
    oidc.set_defaults(handler="login_oidc")

    get = commands.add_parser("get", help="generate files (kubeconfig)")
    get_kinds = get.add_subparsers(dest="kind", required=True, metavar="KIND")
    kubeconfig = get_kinds.add_parser(
        "kubeconfig", help="log in once and write a kubeconfig that uses pinniped",
        description="Log in once to learn your identity, then write a kubeconfig whose exec "
                    "stanza runs `pinniped login oidc` and whose as/as-groups carry your "
                    "identity.")
    cmd_get_kubeconfig.add_flags(kubeconfig)
    kubeconfig.set_defaults(handler="get_kubeconfig")

    whoami = commands.add_parser("whoami", help="show who the cluster thinks you are",
                                 description="Ask the concierge who your cluster credential "
                                             "belongs to, and when it expires.")
    cmd_whoami.add_flags(whoami)
    whoami.set_defaults(handler="whoami")

    logout = commands.add_parser("logout", help="revoke your cluster session and forget it",
                                 description="Revoke the concierge session (the credential "
                                             "stops working within ~10 s) and clear the local "
                                             "caches for this kubeconfig's login.")
    cmd_logout.add_flags(logout)
    logout.set_defaults(handler="logout")
    return parser


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


def main(argv: Sequence[str] | None = None, runtime: Runtime | None = None) -> int:
    rt = runtime or default_runtime()
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    module = importlib.import_module(f"pinniped_cli.cmd_{args.handler}")
    try:
        code: int = module.run(args, rt)
    except CLIError as exc:
        rt.say(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        rt.say("interrupted")
        return 130
    except Exception as exc:
        # Messages of arbitrary exceptions might quote a secret: show only the type
        # unless the person asks for details.
        if rt.env.get(DEBUG_VAR):
            import traceback

            traceback.print_exc(file=rt.stderr)
        rt.say(f"internal error ({type(exc).__name__}). Run again with {DEBUG_VAR}=1 for "
               "details, and please report it.")
        return 1
    return code
