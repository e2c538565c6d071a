"""`pinniped`: the cached path first, else argument parsing and dispatch to a command module.

kubectl runs `pinniped login oidc ...` before each of its commands. When the
credential it wants is cached, `pinniped_cli.cached_path` prints it, having
imported next to nothing: this module imports only `os` and `sys` for that
reason. Otherwise the command line is parsed
(`pinniped_cli.command_line`) and the command's module is imported by name,
so that a kubectl call loads no other command.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing on the cached path
if TYPE_CHECKING:
    from collections.abc import Sequence

    from pinniped_cli.runtime import Runtime

DEBUG_VAR = "PINNIPED_DEBUG"


def main(argv: Sequence[str] | None = None, runtime: Runtime | None = None) -> int:
    """The `pinniped` command; with `runtime` (tests), always the full command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if runtime is None and args[:2] == ["login", "oidc"]:
        from pinniped_cli.cached_path import serve

        if serve(args[2:], os.environ, sys.stdout):
            return 0
    return run(args, runtime)


def run(args: list[str], runtime: Runtime | None = None) -> int:
    """The full command: parse `args`, run the command, and report its failure on stderr."""
    import importlib

    from pinniped_cli.command_line import parse_args
    from pinniped_cli.errors import CLIError
    from pinniped_cli.runtime import default_runtime

    rt = runtime or default_runtime()
    parsed = parse_args(args)
    module = importlib.import_module(f"pinniped_cli.cmd_{parsed.handler}")
    try:
        code: int = module.run(parsed, rt)
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
