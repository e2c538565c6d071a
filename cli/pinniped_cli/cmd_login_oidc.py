"""`pinniped login oidc`: the kubectl exec plugin.

Prints one ExecCredential on stdout and nothing else there; people read
stderr. When a person runs it by hand at a terminal, the token is not shown:
they get a summary instead (kubectl never runs us with a terminal on stdout).
"""

from __future__ import annotations

import argparse

from pinniped_apis.rfc3339 import format_time
from pinniped_cli import execcredential
from pinniped_cli.cluster_credential import get_credential
from pinniped_cli.login_options import add_login_flags, options_from_args
from pinniped_cli.runtime import Runtime


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_login_flags(parser)


def run(args: argparse.Namespace, rt: Runtime) -> int:
    options = options_from_args(args, rt.env)
    info = execcredential.read_exec_info(rt.env.get(execcredential.ENV_VAR), rt.stdin_is_tty)
    credential = get_credential(options, info.cluster, info.interactive, rt)
    if not info.from_kubectl and rt.stdout_is_tty:
        rt.say(f"logged in as {credential.username} in groups "
               f"{list(credential.groups)}; the cluster credential is cached until "
               f"{format_time(credential.expiration)} (not printed: run kubectl to use it).")
        return 0
    rt.stdout.write(execcredential.render(info, credential.token,
                                           format_time(credential.expiration)))
    rt.stdout.flush()
    return 0
