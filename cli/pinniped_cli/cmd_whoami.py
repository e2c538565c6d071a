"""`pinniped whoami`: who the cluster thinks you are, and until when.

It asks the concierge (not the local cache) with the cluster credential, so
the answer is the cluster's view. The login details come from the kubeconfig's
pinniped exec stanza, exactly as kubectl would run it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json

from pinniped_cli.kubeconfig import add_kubeconfig_flags
from pinniped_cli.runtime import Runtime


def add_flags(parser: argparse.ArgumentParser) -> None:
    add_kubeconfig_flags(parser)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="output format (default: %(default)s)")


def run(args: argparse.Namespace, rt: Runtime) -> int:
    from pinniped_cli.cluster_credential import get_credential
    from pinniped_cli.concierge_client import ConciergeClient
    from pinniped_cli.kubeconfig import resolve_login

    target = resolve_login(args.kubeconfig, args.kubeconfig_context, rt.env)
    credential = get_credential(target.options, target.cluster, rt.stdin_is_tty, rt)
    options = target.options
    with rt.new_http(options.concierge_ca_bundle.pem("--concierge-ca-bundle")) as http:
        client = ConciergeClient(http, options.concierge_endpoint,
                                 options.concierge_authenticator)
        identity, expiration = client.whoami(credential.token)
    expiration = expiration or credential.expiration
    if args.output == "json":
        from pinniped_apis.wire import whoami_response

        rt.stdout.write(json.dumps(whoami_response(identity, expiration), indent=2) + "\n")
        return 0
    remaining = expiration - rt.now()
    minutes = max(0, int(remaining / dt.timedelta(minutes=1)))
    rt.stdout.write(
        "Current cluster info:\n\n"
        f"Name: {target.context}\n"
        f"URL: {target.cluster.server}\n\n"
        "Current user info:\n\n"
        f"Username: {identity.username}\n"
        f"Groups: {', '.join(identity.groups) if identity.groups else '(none)'}\n"
        f"Credential expires: {expiration.strftime('%Y-%m-%dT%H:%M:%SZ')} "
        f"(in about {minutes} min; renewed automatically)\n")
    return 0
